"""The asyncio client: ``AsyncCompute``, the same shape as ``Compute`` with ``await``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, AsyncIterator, Dict, List, Optional, Union

from ._http import AsyncHttp, Settings, seg, stream_event
from .pty import AsyncTerminal
from .types import Account, AccountListed, AccountOptions, KeyCreated, KeyOptions, NetworkPolicy, BoxInfo, CreateOptions, ExecEvent, ExecOptions, HookOptions, HookSignature, ExecResult, Golden, Hook, PoolStats, Snapshot, Task, exec_event, from_wire, to_wire


class AsyncFiles:
    def __init__(self, box: "AsyncBox") -> None:
        self._box = box

    async def write(self, path: str, data: Union[bytes, str], mode: Optional[int] = None) -> None:
        q = f"?path={seg(path)}" + (f"&mode={mode:o}" if mode is not None else "")
        await self._box._http.request("PUT", self._box._path(f"/files{q}"), content=data.encode() if isinstance(data, str) else bytes(data))

    async def read(self, path: str) -> bytes:
        return await self._box._http.request("GET", self._box._path(f"/files?path={seg(path)}"))

    async def read_text(self, path: str) -> str:
        return (await self.read(path)).decode("utf-8")


class AsyncBox:
    """A box handle; ``info`` is the state as of the last call that returned it."""

    def __init__(self, http: AsyncHttp, info: BoxInfo) -> None:
        self._http = http
        self.info = info
        self.files = AsyncFiles(self)

    def __repr__(self) -> str:
        return f"AsyncBox(name={self.name!r}, state={self.state!r})"

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def state(self) -> str:
        return self.info.state

    @property
    def url(self) -> Optional[str]:
        return self.info.url

    def _path(self, rest: str = "") -> str:
        return f"/v1/boxes/{seg(self.info.name)}{rest}"

    def _set(self, data: Dict[str, Any]) -> "AsyncBox":
        self.info = from_wire(BoxInfo, data)
        return self

    async def refresh(self) -> "AsyncBox":
        return self._set(await self._http.json("GET", self._path()))

    async def exec(self, cmd: List[str], *, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None, stdin: Optional[str] = None, timeout_ms: Optional[int] = None, detach: Optional[bool] = None) -> ExecResult:
        body = {"cmd": list(cmd), **to_wire(asdict(ExecOptions(cwd=cwd, env=env, stdin=stdin, timeout_ms=timeout_ms, detach=detach)))}
        return from_wire(ExecResult, await self._http.json("POST", self._path("/exec"), body))

    async def stream(self, cmd: List[str], *, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None, stdin: Optional[str] = None, timeout_ms: Optional[int] = None, detach: Optional[bool] = None) -> AsyncIterator[ExecEvent]:
        body = {"cmd": list(cmd), **to_wire(asdict(ExecOptions(cwd=cwd, env=env, stdin=stdin, timeout_ms=timeout_ms, detach=detach)))}
        async for line in self._http.lines("POST", self._path("/exec"), body, {"Accept": "application/x-ndjson"}):
            m = stream_event(line)
            if m is not None:
                yield exec_event(m)

    async def pty(self, cols: int = 80, rows: int = 24, cmd: Optional[List[str]] = None) -> AsyncTerminal:
        """An interactive terminal running ``cmd`` (default a login bash, or sh) in the box:
        ``async with await box.pty() as term``. Raises BoxdApiError BOX_NOT_FOUND (404),
        INVALID_REQUEST (400), UNAUTHORIZED (401), NETWORK_ERROR, NO_WEBSOCKETS."""
        return await AsyncTerminal.open(self._http.s, self.info.name, cols, rows, cmd)

    async def suspend(self) -> "AsyncBox":
        return self._set(await self._http.json("POST", self._path("/suspend")))

    async def resume(self) -> "AsyncBox":
        return self._set(await self._http.json("POST", self._path("/resume")))

    async def fork(self, name: Optional[str] = None) -> "AsyncBox":
        return AsyncBox(self._http, from_wire(BoxInfo, await self._http.json("POST", self._path("/fork"), to_wire({"name": name}))))

    async def snapshot(self, name: str) -> Snapshot:
        return from_wire(Snapshot, (await self._http.json("POST", self._path("/snapshot"), {"snapshot": name}))["snapshot"])

    async def destroy(self) -> None:
        await self._http.request("DELETE", self._path())
        self.info.state = "destroyed"


class _AsyncBoxes:
    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def create(self, name: Optional[str] = None, *, golden: Optional[str] = None, image: Optional[str] = None, snapshot: Optional[str] = None, ports: Optional[List[int]] = None, env: Optional[Dict[str, str]] = None, idle_timeout_ms: Optional[int] = None, public: Optional[bool] = None, disk_mb: Optional[int] = None, network: Optional[NetworkPolicy] = None, agent: Optional[bool] = None) -> AsyncBox:
        body = to_wire(asdict(CreateOptions(name=name, golden=golden, image=image, snapshot=snapshot, ports=ports, env=env, idle_timeout_ms=idle_timeout_ms, public=public, disk_mb=disk_mb, network=network, agent=agent)))
        return AsyncBox(self._http, from_wire(BoxInfo, await self._http.json("POST", "/v1/boxes", body)))

    async def get(self, name: str) -> AsyncBox:
        return AsyncBox(self._http, from_wire(BoxInfo, await self._http.json("GET", f"/v1/boxes/{seg(name)}")))

    async def list(self) -> List[AsyncBox]:
        return [AsyncBox(self._http, from_wire(BoxInfo, b)) for b in (await self._http.json("GET", "/v1/boxes"))["boxes"]]


class _AsyncSnapshots:
    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def list(self) -> List[Snapshot]:
        return [from_wire(Snapshot, s) for s in (await self._http.json("GET", "/v1/snapshots"))["snapshots"]]

    async def delete(self, name: str) -> None:
        await self._http.request("DELETE", f"/v1/snapshots/{seg(name)}")


class _AsyncHooks:
    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def create(self, name: str, steps: List[Union[str, List[str], Dict[str, Any]]], *, golden: Optional[str] = None, secret: Optional[str] = None, keep_ms: Optional[int] = None, signature: Optional[HookSignature] = None) -> Hook:
        wire_steps = [s if isinstance(s, dict) else {"cmd": s} for s in steps]
        body = to_wire(asdict(HookOptions(name=name, steps=wire_steps, golden=golden, secret=secret, keep_ms=keep_ms, signature=signature)))
        return Hook.from_wire(await self._http.json("POST", "/v1/hooks", body))

    async def list(self) -> List[Hook]:
        return [Hook.from_wire(h) for h in (await self._http.json("GET", "/v1/hooks"))["hooks"]]

    async def delete(self, id: str) -> None:
        await self._http.request("DELETE", f"/v1/hooks/{seg(id)}")


class _AsyncTasks:
    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def get(self, id: str) -> Task:
        return Task.from_wire(await self._http.json("GET", f"/v1/tasks/{seg(id)}"))

    async def list(self) -> List[Task]:
        return [Task.from_wire(t) for t in (await self._http.json("GET", "/v1/tasks"))["tasks"]]


class _AsyncAccounts:
    """Accounts (admin key only)."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def create(self, name: str, *, max_boxes: Optional[int] = None, max_execs: Optional[int] = None, max_snapshots: Optional[int] = None, max_hooks: Optional[int] = None) -> Account:
        """Raises FORBIDDEN (not an admin key), INVALID_REQUEST."""
        body = to_wire(asdict(AccountOptions(name=name, max_boxes=max_boxes, max_execs=max_execs, max_snapshots=max_snapshots, max_hooks=max_hooks)))
        return from_wire(Account, await self._http.json("POST", "/v1/accounts", body))

    async def list(self) -> List[AccountListed]:
        return [AccountListed.from_wire(x) for x in (await self._http.json("GET", "/v1/accounts"))["accounts"]]


class _AsyncKeys:
    """API keys (admin key only); a key is shown once, when created."""

    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def create(self, account: str, role: Optional[str] = None) -> KeyCreated:
        """Raises ACCOUNT_NOT_FOUND, FORBIDDEN."""
        return from_wire(KeyCreated, await self._http.json("POST", f"/v1/accounts/{seg(account)}/keys", to_wire(asdict(KeyOptions(role=role)))))  # type: ignore[arg-type]

    async def delete(self, id: str) -> None:
        """Raises KEY_NOT_FOUND, FORBIDDEN."""
        await self._http.request("DELETE", f"/v1/keys/{seg(id)}")


class AsyncCompute:
    """``async with AsyncCompute() as c: box = await c.box.create(name=…)``."""

    def __init__(self, api_key: Optional[str] = None, base_url: Optional[str] = None, *, timeout: Optional[float] = None) -> None:
        self._http = AsyncHttp(Settings(api_key, base_url, timeout))
        self.box = _AsyncBoxes(self._http)
        self.snapshots = _AsyncSnapshots(self._http)
        self.hooks = _AsyncHooks(self._http)
        self.tasks = _AsyncTasks(self._http)
        self.accounts = _AsyncAccounts(self._http)
        self.keys = _AsyncKeys(self._http)

    @property
    def base_url(self) -> str:
        return self._http.s.base_url

    async def goldens(self) -> List[Golden]:
        return [from_wire(Golden, g) for g in (await self._http.json("GET", "/v1/goldens"))["goldens"]]

    async def pool(self) -> List[PoolStats]:
        return [from_wire(PoolStats, p) for p in (await self._http.json("GET", "/v1/pool"))["pools"]]

    async def aclose(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> "AsyncCompute":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
