"""HTTP plumbing shared by Compute and AsyncCompute: one request shape, one error mapping.

The sync client uses httpx when it is installed and falls back to the standard library's urllib
otherwise, so ``python3 -m boxd`` works wherever python3 is (a box's golden, say). The async
client needs httpx.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Any, AsyncIterator, Dict, Iterator, Optional, Tuple
from urllib.parse import quote

from .errors import BoxdApiError, error_from_response

try:  # pragma: no cover - exercised by whichever is installed
    import httpx
except ImportError:  # pragma: no cover
    httpx = None  # type: ignore[assignment]

DEFAULT_URL = "http://localhost:8080"
#: Seconds to wait for an answer; an exec may run for minutes (its own timeout is 10 min by default).
DEFAULT_TIMEOUT = 900.0


def seg(value: str) -> str:
    """One URL path segment."""
    return quote(value, safe="")


class Settings:
    def __init__(self, api_key: Optional[str], base_url: Optional[str], timeout: Optional[float]) -> None:
        key = api_key or os.environ.get("BOXD_API_KEY")
        if not key:
            raise BoxdApiError("NO_API_KEY", 0, "pass api_key or set BOXD_API_KEY")
        self.api_key = key
        self.base_url = (base_url or os.environ.get("BOXD_URL") or DEFAULT_URL).rstrip("/")
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout

    def prepare(self, method: str, path: str, json_body: Any, content: Optional[bytes], headers: Optional[Dict[str, str]]) -> Tuple[str, Dict[str, str], Optional[bytes]]:
        h = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        body = content
        if json_body is not None:
            h["Content-Type"] = "application/json"
            body = json.dumps(json_body).encode()
        elif content is not None:
            h["Content-Type"] = "application/octet-stream"
        h.update(headers or {})
        return self.base_url + path, h, body

    def network_error(self, method: str, path: str, e: Exception) -> BoxdApiError:
        return BoxdApiError("NETWORK_ERROR", 0, f"{method} {self.base_url}{path}: {e}")


def parse_json(status: int, body: bytes) -> Any:
    return None if status == 204 or not body else json.loads(body)


class SyncHttp:
    """Blocking requests through httpx, or urllib when httpx is missing (``use_httpx=False`` forces it)."""

    def __init__(self, settings: Settings, use_httpx: Optional[bool] = None) -> None:
        self.s = settings
        self.httpx = httpx is not None if use_httpx is None else use_httpx
        if self.httpx and httpx is None:
            raise BoxdApiError("NO_HTTPX", 0, "httpx is not installed")
        self._client = httpx.Client(timeout=httpx.Timeout(settings.timeout, connect=30.0)) if self.httpx else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def request(self, method: str, path: str, *, json_body: Any = None, content: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None) -> bytes:
        url, h, body = self.s.prepare(method, path, json_body, content, headers)
        if self._client is not None:
            try:
                r = self._client.request(method, url, headers=h, content=body)
            except httpx.HTTPError as e:
                raise self.s.network_error(method, path, e) from e
            if r.status_code >= 400:
                raise error_from_response(r.status_code, r.content, r.reason_phrase)
            return r.content if r.status_code != 204 else b""
        req = urllib.request.Request(url, data=body, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.s.timeout) as r:
                return r.read() if r.status != 204 else b""
        except urllib.error.HTTPError as e:
            raise error_from_response(e.code, e.read(), e.reason) from None
        except (urllib.error.URLError, OSError) as e:
            raise self.s.network_error(method, path, e) from e

    def json(self, method: str, path: str, body: Any = None) -> Any:
        return parse_json(200, self.request(method, path, json_body=body))

    @contextmanager
    def lines(self, method: str, path: str, body: Any, headers: Dict[str, str]) -> Iterator[Iterator[bytes]]:
        """The answer's body, line by line, as it arrives."""
        url, h, data = self.s.prepare(method, path, body, None, headers)
        if self._client is not None:
            try:
                with self._client.stream(method, url, headers=h, content=data) as r:
                    if r.status_code >= 400:
                        raise error_from_response(r.status_code, r.read(), r.reason_phrase)
                    yield (line.encode() for line in r.iter_lines())
            except httpx.HTTPError as e:
                raise self.s.network_error(method, path, e) from e
            return
        req = urllib.request.Request(url, data=data, headers=h, method=method)
        try:
            r = urllib.request.urlopen(req, timeout=self.s.timeout)
        except urllib.error.HTTPError as e:
            raise error_from_response(e.code, e.read(), e.reason) from None
        except (urllib.error.URLError, OSError) as e:
            raise self.s.network_error(method, path, e) from e
        with r:
            yield iter(r.readline, b"")


class AsyncHttp:
    """Non-blocking requests through ``httpx.AsyncClient``."""

    def __init__(self, settings: Settings) -> None:
        if httpx is None:
            raise BoxdApiError("NO_HTTPX", 0, "AsyncCompute needs httpx (Debian: python3-httpx)")
        self.s = settings
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(settings.timeout, connect=30.0))

    async def close(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, *, json_body: Any = None, content: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None) -> bytes:
        url, h, body = self.s.prepare(method, path, json_body, content, headers)
        try:
            r = await self._client.request(method, url, headers=h, content=body)
        except httpx.HTTPError as e:
            raise self.s.network_error(method, path, e) from e
        if r.status_code >= 400:
            raise error_from_response(r.status_code, r.content, r.reason_phrase)
        return r.content if r.status_code != 204 else b""

    async def json(self, method: str, path: str, body: Any = None) -> Any:
        return parse_json(200, await self.request(method, path, json_body=body))

    async def lines(self, method: str, path: str, body: Any, headers: Dict[str, str]) -> AsyncIterator[bytes]:
        url, h, data = self.s.prepare(method, path, body, None, headers)
        try:
            async with self._client.stream(method, url, headers=h, content=data) as r:
                if r.status_code >= 400:
                    raise error_from_response(r.status_code, await r.aread(), r.reason_phrase)
                async for line in r.aiter_lines():
                    yield line.encode()
        except httpx.HTTPError as e:
            raise self.s.network_error(method, path, e) from e


def stream_event(line: bytes) -> Optional[Dict[str, Any]]:
    """One NDJSON line of a streamed exec; an ``error`` line becomes a BoxdApiError."""
    line = line.strip()
    if not line:
        return None
    m = json.loads(line)
    if "error" in m:
        raise BoxdApiError(str(m["error"].get("code")), 200, str(m["error"].get("message", "")))
    return m
