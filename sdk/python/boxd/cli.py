"""``python3 -m boxd`` (or ``boxd`` when installed): the boxd CLI on the Python SDK.

Reads BOXD_URL and BOXD_API_KEY. Needs only the standard library (httpx is used when present),
so it runs inside boxes too. Exit codes: ``exec`` exits with the command's code; an API error
prints ``boxd: CODE (status): message`` and exits 1; bad usage exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

from .errors import BoxdApiError
from .sync import Compute
from .types import ExecExit, ExecOutput


def _env(pairs: List[str]) -> Optional[Dict[str, str]]:
    out: Dict[str, str] = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep:
            raise SystemExit(f"boxd: --env takes NAME=VALUE, got {p!r}")
        out[k] = v
    return out or None


def _print_box(info: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(dataclasses.asdict(info)))
    else:
        print(f"{info.name}\t{info.state}\t{info.url or '-'}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="boxd", description="boxd: boxes you exec in, suspend, fork and preview.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    c = sub.add_parser("create", help="create a box")
    c.add_argument("name", nargs="?")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--golden")
    src.add_argument("--image")
    src.add_argument("--snapshot")
    c.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    c.add_argument("--port", action="append", type=int, dest="ports", metavar="PORT")
    c.add_argument("--private", action="store_true", help="preview needs a token")

    for name, help_ in (("get", "show a box"), ("suspend", "freeze a box"), ("resume", "thaw a box"), ("url", "print a box's preview URL")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("name")

    sub.add_parser("list", aliases=["ls"], help="list boxes")

    e = sub.add_parser("exec", help="run a command in a box: boxd exec NAME -- CMD ARGS…")
    e.add_argument("name")
    e.add_argument("--cwd")
    e.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    e.add_argument("argv", nargs=argparse.REMAINDER)

    f = sub.add_parser("fork", help="fork a box: boxd fork PARENT [CHILD]")
    f.add_argument("parent")
    f.add_argument("child", nargs="?")

    s = sub.add_parser("snapshot", help="snapshot a box: boxd snapshot NAME SNAPSHOT")
    s.add_argument("name")
    s.add_argument("snapshot")

    d = sub.add_parser("destroy", aliases=["rm"], help="destroy boxes")
    d.add_argument("names", nargs="+")
    return p


def run(argv: Sequence[str], c: Optional[Compute] = None) -> int:
    args = _parser().parse_args(list(argv))
    c = c or Compute()
    as_json: bool = args.json
    cmd = args.cmd
    if cmd == "create":
        box = c.box.create(args.name, golden=args.golden, image=args.image, snapshot=args.snapshot, env=_env(args.env), ports=args.ports, public=False if args.private else None)
        _print_box(box.info, as_json)
    elif cmd in ("get", "suspend", "resume", "url"):
        box = c.box.get(args.name)
        if cmd == "suspend":
            box.suspend()
        elif cmd == "resume":
            box.resume()
        if cmd == "url":
            print(json.dumps({"url": box.url}) if as_json else (box.url or ""))
        else:
            _print_box(box.info, as_json)
    elif cmd in ("list", "ls"):
        boxes = c.box.list()
        if as_json:
            print(json.dumps([dataclasses.asdict(b.info) for b in boxes]))
        for b in boxes if not as_json else []:
            _print_box(b.info, False)
    elif cmd == "exec":
        argv_ = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv_:
            print("boxd: exec needs a command: boxd exec NAME -- CMD ARGS…", file=sys.stderr)
            return 2
        box = c.box.get(args.name)
        if as_json:
            r = box.exec(argv_, cwd=args.cwd, env=_env(args.env))
            print(json.dumps(dataclasses.asdict(r)))
            return r.exit_code
        code = 1
        for ev in box.stream(argv_, cwd=args.cwd, env=_env(args.env)):
            if isinstance(ev, ExecOutput):
                out = sys.stdout if ev.stream == "stdout" else sys.stderr
                out.write(ev.data)
                out.flush()
            elif isinstance(ev, ExecExit):
                code = ev.exit_code
        return code
    elif cmd == "fork":
        child = c.box.get(args.parent).fork(args.child)
        _print_box(child.info, as_json)
    elif cmd == "snapshot":
        snap = c.box.get(args.name).snapshot(args.snapshot)
        print(json.dumps(dataclasses.asdict(snap)) if as_json else snap.name)
    elif cmd in ("destroy", "rm"):
        for n in args.names:
            c.box.get(n).destroy()
            if not as_json:
                print(n)
        if as_json:
            print(json.dumps({"destroyed": args.names}))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except BoxdApiError as e:
        print(f"boxd: {e.code} ({e.status}): {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
