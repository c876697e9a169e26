import asyncio

import pytest

from boxd import AsyncCompute, BoxdApiError, ExecExit, ExecOutput


def test_async_lifecycle(names) -> None:
    name, child_name = names("apy"), names("apy-child")

    async def scenario() -> None:
        async with AsyncCompute() as c:
            box = await c.box.create(name=name, golden="tiny")
            assert box.state == "running"
            # Two execs in flight at once on one client.
            a, b = await asyncio.gather(box.exec(["sh", "-c", "sleep 0.3; echo a"]), box.exec(["echo", "b"]))
            assert (a.stdout, b.stdout) == ("a\n", "b\n")
            events = [e async for e in box.stream(["sh", "-c", "for i in 1 2 3; do echo $i; done; exit 2"])]
            assert "".join(e.data for e in events if isinstance(e, ExecOutput)) == "1\n2\n3\n"
            assert isinstance(events[-1], ExecExit) and events[-1].exit_code == 2
            await box.files.write("/workspace/a.txt", b"async bytes")
            assert await box.files.read_text("/workspace/a.txt") == "async bytes"
            assert (await box.suspend()).state == "suspended"
            assert (await box.exec(["echo", "woke"])).stdout == "woke\n"
            assert (await box.refresh()).state == "running"
            await box.suspend()
            assert (await box.resume()).state == "running"
            child = await box.fork(name=child_name)
            assert child.info.parent == name
            assert (await child.exec(["cat", "/workspace/a.txt"])).stdout == "async bytes"
            assert {x.name for x in await c.box.list()} >= {name, child_name}
            await child.destroy()
            await box.destroy()
            with pytest.raises(BoxdApiError) as e:
                await c.box.get(name)
            assert (e.value.code, e.value.status) == ("BOX_NOT_FOUND", 404)
            with pytest.raises(BoxdApiError) as e:
                async for _ in box.stream(["true"]):
                    pass
            assert e.value.code == "BOX_NOT_FOUND"
            assert any(g.name == "tiny" for g in await c.goldens())

    asyncio.run(scenario())
