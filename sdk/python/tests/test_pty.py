"""box.pty(): an interactive terminal over the API's WebSocket, blocking and asyncio."""

import asyncio
import re
from typing import AsyncIterator, Iterator

import pytest

from boxd import AsyncCompute, AsyncTerminal, BoxdApiError, Compute, Terminal

# Echoes the first line, then prints the terminal size for every empty line, and exits 7 on "end".
SCRIPT = 'read x; echo got:$x; while read y; do [ "$y" = end ] && exit 7; stty size; done'
SIZE = re.compile(rb"(\d+) (\d+)\r?\n")


def read_until(chunks: Iterator[bytes], needle: bytes, buf: bytes = b"") -> bytes:
    for chunk in chunks:
        buf += chunk
        if needle in buf:
            return buf
    raise AssertionError(f"terminal ended before {needle!r}: {buf!r}")


async def aread_until(chunks: AsyncIterator[bytes], needle: bytes, buf: bytes = b"") -> bytes:
    async for chunk in chunks:
        buf += chunk
        if needle in buf:
            return buf
    raise AssertionError(f"terminal ended before {needle!r}: {buf!r}")


def read_sizes(chunks: Iterator[bytes], buf: bytes, n: int) -> bytes:
    for chunk in chunks:
        buf += chunk
        if len(SIZE.findall(buf)) >= n:
            return buf
    raise AssertionError(f"terminal ended before {n} sizes: {buf!r}")


async def aread_sizes(chunks: AsyncIterator[bytes], buf: bytes, n: int) -> bytes:
    async for chunk in chunks:
        buf += chunk
        if len(SIZE.findall(buf)) >= n:
            return buf
    raise AssertionError(f"terminal ended before {n} sizes: {buf!r}")


def test_sync_pty(names) -> None:
    with Compute() as c:
        box = c.box.create(name=names("pypty"), golden="tiny")
        with box.pty(cols=80, rows=24, cmd=["sh", "-c", SCRIPT]) as term:
            assert isinstance(term, Terminal)
            term.write("hello\n")
            read_until(term, b"got:hello")
            term.write(b"\n")
            assert SIZE.search(read_until(term, b"24 80")).groups() == (b"24", b"80")
            term.resize(100, 30)
            # The resize and the keystrokes travel separately to the box: ask until the new size shows.
            buf, asked = b"", 0
            for _ in range(50):
                term.write("\n")
                asked += 1
                buf = read_sizes(term, buf, asked)
                if b"30 100" in buf:
                    break
            assert b"30 100" in buf, buf
            term.write("end\n")
            assert term.wait() == 7
        with pytest.raises(BoxdApiError) as e:
            box.pty(cols=0)
        assert (e.value.code, e.value.status) == ("INVALID_REQUEST", 400)
        # A suspended box is resumed; a second terminal, closed before its command ends.
        box.suspend()
        term2 = box.pty(cmd=["sh", "-c", "echo ready; sleep 600"])
        read_until(term2, b"ready")
        term2.close()
        term2.close()
        with pytest.raises(BoxdApiError) as e:
            term2.write("x")
        assert e.value.code == "NETWORK_ERROR"
        box.destroy()
        with pytest.raises(BoxdApiError) as e:
            box.pty()
        assert (e.value.code, e.value.status) == ("BOX_NOT_FOUND", 404)


def test_async_pty(names) -> None:
    name = names("apypty")

    async def scenario() -> None:
        async with AsyncCompute() as c:
            box = await c.box.create(name=name, golden="tiny")
            async with await box.pty(cols=80, rows=24, cmd=["sh", "-c", SCRIPT]) as term:
                assert isinstance(term, AsyncTerminal)
                await term.write(b"hello\n")
                await aread_until(term, b"got:hello")
                await term.resize(100, 30)
                buf, asked = b"", 0
                for _ in range(50):
                    await term.write("\n")
                    asked += 1
                    buf = await aread_sizes(term, buf, asked)
                    if b"30 100" in buf:
                        break
                assert b"30 100" in buf, buf
                await term.write("end\n")
                assert await term.wait() == 7
                assert await term.wait() == 7  # the result stays
            await box.destroy()
            with pytest.raises(BoxdApiError) as e:
                await box.pty()
            assert (e.value.code, e.value.status) == ("BOX_NOT_FOUND", 404)

    asyncio.run(scenario())
