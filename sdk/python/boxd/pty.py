"""``box.pty()``: an interactive terminal in a box over the API's WebSocket
(``GET /v1/boxes/:name/pty?cols=&rows=&cmd=``).

Needs the ``websockets`` package (Debian: python3-websockets, 10.4 or later); it is imported only
when a terminal is opened, so the rest of the SDK and ``python3 -m boxd`` work without it.
``AsyncTerminal`` drives the socket on the caller's event loop; ``Terminal`` (the blocking one) runs
an ``AsyncTerminal`` on a private event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, AsyncIterator, Iterator, List, Optional, Union
from urllib.parse import urlencode

from ._http import Settings, seg
from .errors import BoxdApiError

#: Largest output frame accepted (the server sends small chunks).
MAX_FRAME = 16 * 1024 * 1024


def pty_url(settings: Settings, box: str, cols: int, rows: int, cmd: Optional[List[str]]) -> str:
    base = settings.base_url
    ws_base = "wss://" + base[len("https://"):] if base.startswith("https://") else "ws://" + base.split("://", 1)[-1]
    query = urlencode([("cols", str(cols)), ("rows", str(rows))] + [("cmd", c) for c in (cmd or [])])
    return f"{ws_base}/v1/boxes/{seg(box)}/pty?{query}"


class AsyncTerminal:
    """A running terminal: ``async for chunk in term`` yields output bytes (stdout and stderr merged,
    as on any TTY) until the command ends; ``await term.wait()`` is its exit code. Use it as
    ``async with await box.pty() as term:`` (leaving the block hangs up)."""

    def __init__(self, ws: Any, url: str) -> None:
        self._ws = ws
        self._url = url
        self._exit: Optional[int] = None
        self._error: Optional[BoxdApiError] = None
        self._done = False

    @classmethod
    async def open(cls, settings: Settings, box: str, cols: int = 80, rows: int = 24, cmd: Optional[List[str]] = None) -> "AsyncTerminal":
        """Raises BoxdApiError: the server's code (X-Boxd-Error) on a refusal before the upgrade
        (BOX_NOT_FOUND 404, UNAUTHORIZED 401, INVALID_REQUEST 400…), NETWORK_ERROR (status 0) when
        the gateway cannot be reached, NO_WEBSOCKETS when the websockets package is missing."""
        try:
            # The asyncio client of websockets 10.4 (Debian 12), kept as websockets.legacy in later releases.
            import websockets.exceptions as wse
            from websockets.legacy.client import connect
        except ImportError:
            raise BoxdApiError("NO_WEBSOCKETS", 0, "box.pty() needs the websockets package (Debian: python3-websockets)") from None
        url = pty_url(settings, box, cols, rows, cmd)
        try:
            ws = await connect(
                url,
                extra_headers={"Authorization": f"Bearer {settings.api_key}"},
                compression=None,
                max_size=MAX_FRAME,
                # The server pings; a client ping would time out while the caller is not reading.
                ping_interval=None,
                open_timeout=min(settings.timeout, 300.0),
            )
        except wse.InvalidStatusCode as e:
            code = e.headers.get("X-Boxd-Error") or "HTTP_ERROR"
            raise BoxdApiError(code, e.status_code, f"terminal refused: HTTP {e.status_code}") from None
        except (OSError, asyncio.TimeoutError, wse.WebSocketException) as e:
            raise BoxdApiError("NETWORK_ERROR", 0, f"could not open a terminal at {url.split('?')[0]}: {e}") from e
        return cls(ws, url)

    async def _next(self) -> Optional[bytes]:
        """The next output chunk, or None once the terminal ended (exit or error recorded)."""
        import websockets.exceptions as wse

        while not self._done:
            try:
                msg = await self._ws.recv()
            except wse.ConnectionClosed as e:
                self._done = True
                if self._exit is None and self._error is None:
                    self._error = BoxdApiError("NETWORK_ERROR", 0, f"terminal closed without an exit code ({e.code})")
                break
            if isinstance(msg, (bytes, bytearray, memoryview)):
                return bytes(msg)
            try:
                m = json.loads(msg)
            except ValueError:
                continue
            if m.get("type") == "exit":
                self._exit = int(m.get("exitCode", -1))
            elif m.get("type") == "error":
                self._error = BoxdApiError(str(m.get("code", "INTERNAL")), 0, str(m.get("message", "terminal failed")))
        return None

    def _result(self) -> int:
        if self._exit is not None:
            return self._exit
        assert self._error is not None
        raise self._error

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._next()
            if chunk is None:
                break
            yield chunk
        self._result()  # raises when the terminal failed

    async def write(self, data: Union[bytes, str]) -> None:
        """Sends keystrokes / stdin (a str is sent as UTF-8). Raises BoxdApiError NETWORK_ERROR once the terminal is closed."""
        await self._send(data.encode() if isinstance(data, str) else bytes(data))

    async def resize(self, cols: int, rows: int) -> None:
        """Changes the terminal size (the command gets SIGWINCH). Raises BoxdApiError NETWORK_ERROR once closed."""
        await self._send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    async def _send(self, frame: Union[bytes, str]) -> None:
        import websockets.exceptions as wse

        try:
            await self._ws.send(frame)
        except wse.ConnectionClosed as e:
            raise BoxdApiError("NETWORK_ERROR", 0, f"terminal is closed ({e.code})") from None

    async def wait(self) -> int:
        """The command's exit code once it ended; output not yet read is discarded. Raises BoxdApiError
        with the server's code when the terminal failed (``{"type":"error"}``), NETWORK_ERROR when
        the connection ended without an exit code (e.g. after ``close()``)."""
        while await self._next() is not None:
            pass
        return self._result()

    async def close(self) -> None:
        """Hangs up: the command gets SIGHUP (then SIGKILL)."""
        await self._ws.close(1000)

    async def __aenter__(self) -> "AsyncTerminal":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Terminal:
    """The blocking terminal: ``for chunk in term`` yields output bytes until the command ends,
    ``term.wait()`` is its exit code. Use it as ``with box.pty() as term:`` (leaving hangs up)."""

    def __init__(self, settings: Settings, box: str, cols: int = 80, rows: int = 24, cmd: Optional[List[str]] = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"boxd-pty-{box}", daemon=True)
        self._thread.start()
        try:
            self._term: AsyncTerminal = self._run(AsyncTerminal.open(settings, box, cols, rows, cmd))
        except BaseException:
            self._stop()
            raise
        self._chunks = self._term.__aiter__()

    def _run(self, coro: Any) -> Any:
        if self._loop.is_closed():
            coro.close()
            raise BoxdApiError("NETWORK_ERROR", 0, "terminal is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        if not self._loop.is_closed():
            self._loop.close()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return self._run(self._chunks.__anext__())  # type: ignore[no-any-return]
        except StopAsyncIteration:
            raise StopIteration from None

    def write(self, data: Union[bytes, str]) -> None:
        """Sends keystrokes / stdin (a str is sent as UTF-8). Raises BoxdApiError NETWORK_ERROR once closed."""
        self._run(self._term.write(data))

    def resize(self, cols: int, rows: int) -> None:
        """Changes the terminal size. Raises BoxdApiError NETWORK_ERROR once closed."""
        self._run(self._term.resize(cols, rows))

    def wait(self) -> int:
        """The exit code once the command ended (unread output is discarded). Raises BoxdApiError
        with the server's code when the terminal failed, NETWORK_ERROR when it ended without an exit code."""
        return self._run(self._term.wait())  # type: ignore[no-any-return]

    def close(self) -> None:
        """Hangs up (SIGHUP, then SIGKILL) and stops the terminal's thread; safe to call twice."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._term.close())
        finally:
            self._stop()

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
