"""The blocking client: ``Compute``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, Iterator, List, Optional, Union

from ._http import SyncHttp, Settings, seg, stream_event
from .pty import Terminal
from .types import Account, AccountListed, AccountOptions, KeyCreated, KeyOptions, NetworkPolicy, BoxInfo, CreateOptions, ExecEvent, ExecOptions, HookOptions, HookSignature, ExecResult, Golden, Hook, PoolStats, Snapshot, Task, exec_event, from_wire, to_wire


class Files:
    """``box.files``: raw bytes in, raw bytes out (parent folders are created)."""

    def __init__(self, box: "Box") -> None:
        self._box = box

    def write(self, path: str, data: Union[bytes, str], mode: Optional[int] = None) -> None:
        """Writes a file (``mode`` like ``0o755``). Raises BoxdApiError BOX_NOT_FOUND, INVALID_REQUEST, FILE_TOO_LARGE."""
        q = f"?path={seg(path)}" + (f"&mode={mode:o}" if mode is not None else "")
        self._box._http.request("PUT", self._box._path(f"/files{q}"), content=data.encode() if isinstance(data, str) else bytes(data))

    def read(self, path: str) -> bytes:
        """A file's bytes. Raises BoxdApiError FILE_NOT_FOUND, BOX_NOT_FOUND, INVALID_REQUEST."""
        return self._box._http.request("GET", self._box._path(f"/files?path={seg(path)}"))

    def read_text(self, path: str) -> str:
        return self.read(path).decode("utf-8")


class Box:
    """A box handle; ``info`` is the state as of the last call that returned it."""

    def __init__(self, http: SyncHttp, info: BoxInfo) -> None:
        self._http = http
        self.info = info
        self.files = Files(self)

    def __repr__(self) -> str:
        return f"Box(name={self.name!r}, state={self.state!r})"

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def state(self) -> str:
        return self.info.state

    @property
    def url(self) -> Optional[str]:
        """The preview URL of the box's first port (None without ports)."""
        return self.info.url

    def _path(self, rest: str = "") -> str:
        return f"/v1/boxes/{seg(self.info.name)}{rest}"

    def _set(self, data: Dict[str, Any]) -> "Box":
        self.info = from_wire(BoxInfo, data)
        return self

    def refresh(self) -> "Box":
        return self._set(self._http.json("GET", self._path()))

    def exec(self, cmd: List[str], *, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None, stdin: Optional[str] = None, timeout_ms: Optional[int] = None, detach: Optional[bool] = None) -> ExecResult:
        """Runs argv to completion (a suspended box is resumed first). A non-zero exit is a result,
        not an error. Raises BoxdApiError BOX_NOT_FOUND, INVALID_REQUEST, BOX_STATE, TIMEOUT."""
        body = {"cmd": list(cmd), **to_wire(asdict(ExecOptions(cwd=cwd, env=env, stdin=stdin, timeout_ms=timeout_ms, detach=detach)))}
        return from_wire(ExecResult, self._http.json("POST", self._path("/exec"), body))

    def stream(self, cmd: List[str], *, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None, stdin: Optional[str] = None, timeout_ms: Optional[int] = None, detach: Optional[bool] = None) -> Iterator[ExecEvent]:
        """Runs argv and yields ExecOutput chunks as they come, then one ExecExit."""
        body = {"cmd": list(cmd), **to_wire(asdict(ExecOptions(cwd=cwd, env=env, stdin=stdin, timeout_ms=timeout_ms, detach=detach)))}
        with self._http.lines("POST", self._path("/exec"), body, {"Accept": "application/x-ndjson"}) as lines:
            for line in lines:
                m = stream_event(line)
                if m is not None:
                    yield exec_event(m)

    def pty(self, cols: int = 80, rows: int = 24, cmd: Optional[List[str]] = None) -> Terminal:
        """An interactive terminal running ``cmd`` (default a login bash, or sh) in the box (a
        suspended box is resumed first). Raises BoxdApiError BOX_NOT_FOUND (404), INVALID_REQUEST (400),
        UNAUTHORIZED (401), NETWORK_ERROR, NO_WEBSOCKETS; see Terminal for the rest."""
        return Terminal(self._http.s, self.info.name, cols, rows, cmd)

    def suspend(self) -> "Box":
        """Freezes the box (processes and memory kept). Raises BOX_NOT_FOUND, BOX_STATE."""
        return self._set(self._http.json("POST", self._path("/suspend")))

    def resume(self) -> "Box":
        return self._set(self._http.json("POST", self._path("/resume")))

    def fork(self, name: Optional[str] = None) -> "Box":
        """A child box from this box's current filesystem (processes are not copied).
        Raises BOX_EXISTS, LIMIT_EXCEEDED, BOX_NOT_FOUND."""
        return Box(self._http, from_wire(BoxInfo, self._http.json("POST", self._path("/fork"), to_wire({"name": name}))))

    def snapshot(self, name: str) -> Snapshot:
        """Stores the filesystem as a named snapshot boxes can be created from. Raises SNAPSHOT_EXISTS."""
        return from_wire(Snapshot, self._http.json("POST", self._path("/snapshot"), {"snapshot": name})["snapshot"])

    def destroy(self) -> None:
        """Removes the box and its filesystem. Raises BOX_NOT_FOUND."""
        self._http.request("DELETE", self._path())
        self.info.state = "destroyed"


class _Boxes:
    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def create(self, name: Optional[str] = None, *, golden: Optional[str] = None, image: Optional[str] = None, snapshot: Optional[str] = None, ports: Optional[List[int]] = None, env: Optional[Dict[str, str]] = None, idle_timeout_ms: Optional[int] = None, public: Optional[bool] = None, disk_mb: Optional[int] = None, network: Optional[NetworkPolicy] = None, agent: Optional[bool] = None) -> Box:
        """Creates a running box. Raises BOX_EXISTS, LIMIT_EXCEEDED, GOLDEN_NOT_FOUND, IMAGE_NOT_FOUND,
        SNAPSHOT_NOT_FOUND, INVALID_REQUEST."""
        body = to_wire(asdict(CreateOptions(name=name, golden=golden, image=image, snapshot=snapshot, ports=ports, env=env, idle_timeout_ms=idle_timeout_ms, public=public, disk_mb=disk_mb, network=network, agent=agent)))
        return Box(self._http, from_wire(BoxInfo, self._http.json("POST", "/v1/boxes", body)))

    def get(self, name: str) -> Box:
        """Raises BOX_NOT_FOUND."""
        return Box(self._http, from_wire(BoxInfo, self._http.json("GET", f"/v1/boxes/{seg(name)}")))

    def list(self) -> List[Box]:
        return [Box(self._http, from_wire(BoxInfo, b)) for b in self._http.json("GET", "/v1/boxes")["boxes"]]


class _Snapshots:
    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def list(self) -> List[Snapshot]:
        return [from_wire(Snapshot, s) for s in self._http.json("GET", "/v1/snapshots")["snapshots"]]

    def delete(self, name: str) -> None:
        """Raises SNAPSHOT_NOT_FOUND."""
        self._http.request("DELETE", f"/v1/snapshots/{seg(name)}")


class _Hooks:
    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def create(self, name: str, steps: List[Union[str, List[str], Dict[str, Any]]], *, golden: Optional[str] = None, secret: Optional[str] = None, keep_ms: Optional[int] = None, signature: Optional[HookSignature] = None) -> Hook:
        """A webhook running ``steps`` (strings run with ``sh -c``, or argv lists) on every signed
        trigger. The answer's ``secret`` is shown once; ``signature="timestamped"`` refuses
        ``sha256=…`` signatures (only ``t=…,v1=…``). Raises GOLDEN_NOT_FOUND, INVALID_REQUEST."""
        wire_steps = [s if isinstance(s, dict) else {"cmd": s} for s in steps]
        body = to_wire(asdict(HookOptions(name=name, steps=wire_steps, golden=golden, secret=secret, keep_ms=keep_ms, signature=signature)))
        return Hook.from_wire(self._http.json("POST", "/v1/hooks", body))

    def list(self) -> List[Hook]:
        return [Hook.from_wire(h) for h in self._http.json("GET", "/v1/hooks")["hooks"]]

    def delete(self, id: str) -> None:
        """Raises HOOK_NOT_FOUND."""
        self._http.request("DELETE", f"/v1/hooks/{seg(id)}")


class _Tasks:
    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def get(self, id: str) -> Task:
        """Raises TASK_NOT_FOUND."""
        return Task.from_wire(self._http.json("GET", f"/v1/tasks/{seg(id)}"))

    def list(self) -> List[Task]:
        return [Task.from_wire(t) for t in self._http.json("GET", "/v1/tasks")["tasks"]]


class _Accounts:
    """Accounts (admin key only)."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def create(self, name: str, *, max_boxes: Optional[int] = None, max_execs: Optional[int] = None, max_snapshots: Optional[int] = None, max_hooks: Optional[int] = None) -> Account:
        """Raises FORBIDDEN (not an admin key), INVALID_REQUEST."""
        body = to_wire(asdict(AccountOptions(name=name, max_boxes=max_boxes, max_execs=max_execs, max_snapshots=max_snapshots, max_hooks=max_hooks)))
        return from_wire(Account, self._http.json("POST", "/v1/accounts", body))

    def list(self) -> List[AccountListed]:
        return [AccountListed.from_wire(x) for x in (self._http.json("GET", "/v1/accounts"))["accounts"]]


class _Keys:
    """API keys (admin key only); a key is shown once, when created."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def create(self, account: str, role: Optional[str] = None) -> KeyCreated:
        """Raises ACCOUNT_NOT_FOUND, FORBIDDEN."""
        return from_wire(KeyCreated, self._http.json("POST", f"/v1/accounts/{seg(account)}/keys", to_wire(asdict(KeyOptions(role=role)))))  # type: ignore[arg-type]

    def delete(self, id: str) -> None:
        """Raises KEY_NOT_FOUND, FORBIDDEN."""
        self._http.request("DELETE", f"/v1/keys/{seg(id)}")


class Compute:
    """The entry point: ``Compute(api_key=…, base_url=…)``; both default to env BOXD_API_KEY and
    BOXD_URL (then http://localhost:8080). Every failed call raises BoxdApiError."""

    def __init__(self, api_key: Optional[str] = None, base_url: Optional[str] = None, *, timeout: Optional[float] = None, use_httpx: Optional[bool] = None) -> None:
        self._http = SyncHttp(Settings(api_key, base_url, timeout), use_httpx)
        self.box = _Boxes(self._http)
        self.snapshots = _Snapshots(self._http)
        self.hooks = _Hooks(self._http)
        self.tasks = _Tasks(self._http)
        self.accounts = _Accounts(self._http)
        self.keys = _Keys(self._http)

    @property
    def base_url(self) -> str:
        return self._http.s.base_url

    def goldens(self) -> List[Golden]:
        return [from_wire(Golden, g) for g in self._http.json("GET", "/v1/goldens")["goldens"]]

    def pool(self) -> List[PoolStats]:
        return [from_wire(PoolStats, p) for p in self._http.json("GET", "/v1/pool")["pools"]]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Compute":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
