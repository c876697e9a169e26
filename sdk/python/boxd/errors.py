"""The one error the SDK raises."""

from __future__ import annotations

import json
from typing import Optional


class BoxdApiError(Exception):
    """An error answered by the API (``code`` like ``BOX_NOT_FOUND``, HTTP ``status``), or a
    transport failure (``code`` ``NETWORK_ERROR``, ``status`` 0)."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(f"{code} ({status}): {message}")
        self.code = code
        self.status = status
        self.message = message


def error_from_response(status: int, body: bytes, reason: Optional[str] = None) -> BoxdApiError:
    """Reads the API's ``{"error": {"code", "message"}}``; anything else becomes ``HTTP_ERROR``."""
    text = body.decode("utf-8", "replace")
    try:
        err = json.loads(text).get("error")
        if isinstance(err, dict) and "code" in err:
            return BoxdApiError(str(err["code"]), status, str(err.get("message", "")))
    except (ValueError, AttributeError):
        pass
    return BoxdApiError("HTTP_ERROR", status, text or (reason or ""))
