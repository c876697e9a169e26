"""``python3 -m boxd`` as an agent inside a box would run it."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

SDK = Path(__file__).resolve().parent.parent


def boxd(*args: str, stdlib_only: bool = False) -> subprocess.CompletedProcess:
    # -S skips site-packages (where httpx lives): the CLI must work on the standard library alone.
    flags: List[str] = ["-S"] if stdlib_only else []
    env = {**os.environ, "PYTHONPATH": str(SDK)}
    return subprocess.run([sys.executable, *flags, "-m", "boxd", *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_create_exec_fork_list_destroy(names) -> None:
    """On the standard library alone (the SDK's own tests cover the httpx path)."""
    stdlib_only = True
    probe = subprocess.run([sys.executable, "-S", "-c", "import httpx"], capture_output=True)
    assert probe.returncode != 0, "-S was meant to hide httpx"
    name, child = names("cli"), names("cli-child")
    r = boxd("--json", "create", name, "--golden", "tiny", "--env", "X=42", stdlib_only=stdlib_only)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == name

    r = boxd("exec", name, "--", "sh", "-c", 'echo "x=$X"; echo err >&2; exit 3', stdlib_only=stdlib_only)
    assert (r.returncode, r.stdout, r.stderr) == (3, "x=42\n", "err\n")

    r = boxd("fork", name, child, stdlib_only=stdlib_only)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\t")[0] == child

    r = boxd("--json", "list", stdlib_only=stdlib_only)
    listed = {b["name"]: b for b in json.loads(r.stdout)}
    assert listed[child]["parent"] == name

    r = boxd("--json", "exec", child, "--", "sh", "-c", "echo $X", stdlib_only=stdlib_only)
    assert r.returncode == 0 and json.loads(r.stdout)["stdout"] == "42\n"

    r = boxd("destroy", name, child, stdlib_only=stdlib_only)
    assert r.returncode == 0, r.stderr
    r = boxd("get", name, stdlib_only=stdlib_only)
    assert r.returncode == 1
    assert "BOX_NOT_FOUND (404)" in r.stderr


def test_cli_usage_errors() -> None:
    assert boxd("exec", "some-box").returncode == 2
    assert boxd("frobnicate").returncode == 2
