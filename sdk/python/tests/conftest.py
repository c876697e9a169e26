"""Fixtures for tests against a running boxd (BOXD_URL, BOXD_API_KEY), e.g. from
test/python-sdk.test.ts, which starts a real stack and runs ``python3 -m pytest sdk/python/tests``."""

from __future__ import annotations

import os
import secrets
import time
from typing import Callable, Iterator, List, TypeVar

import pytest

from boxd import BoxdApiError, Compute

T = TypeVar("T")

if not os.environ.get("BOXD_URL") or not os.environ.get("BOXD_API_KEY"):
    pytest.exit("set BOXD_URL and BOXD_API_KEY to a running boxd (npm test does)", returncode=2)


@pytest.fixture(scope="session")
def base_url() -> str:
    return os.environ["BOXD_URL"].rstrip("/")


@pytest.fixture
def names() -> Iterator[Callable[[str], str]]:
    """Fresh box names; whatever still exists at the end of the test is destroyed."""
    made: List[str] = []

    def new(stem: str) -> str:
        made.append(f"{stem}-{secrets.token_hex(3)}")
        return made[-1]

    yield new
    with Compute() as c:
        for n in made:
            try:
                c.box.get(n).destroy()
            except BoxdApiError:
                pass


@pytest.fixture(params=["httpx", "urllib"])
def compute(request: pytest.FixtureRequest) -> Iterator[Compute]:
    """The sync client over each transport."""
    with Compute(use_httpx=request.param == "httpx") as c:
        yield c


def wait_for(fn: Callable[[], T], timeout: float = 60.0, every: float = 0.2) -> T:
    until = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > until:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)
