import hashlib
import hmac
import json

import httpx
import pytest

from boxd import BoxdApiError, Compute, ExecExit, ExecOutput, ExecResult, Hook, Snapshot, Task
from conftest import wait_for


def test_box_lifecycle(compute: Compute, names) -> None:
    name = names("py")
    box = compute.box.create(name=name, golden="tiny", env={"GREETING": "hello"})
    assert (box.name, box.state, box.info.golden) == (name, "running", "tiny")

    r = box.exec(["sh", "-c", 'echo "$GREETING $0"; echo oops >&2; exit 3', "arg0"])
    assert isinstance(r, ExecResult)
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out, r.truncated) == (3, "hello arg0\n", "oops\n", False, False)
    assert r.duration_ms >= 0
    assert box.exec(["cat"], stdin="from stdin").stdout == "from stdin"
    assert box.exec(["pwd"], cwd="/tmp").stdout == "/tmp\n"

    assert box.suspend().state == "suspended"
    assert compute.box.get(name).state == "suspended"
    assert box.resume().state == "running"

    events = list(box.stream(["sh", "-c", "echo 1; echo 2 >&2; echo 3; exit 4"]))
    assert isinstance(events[-1], ExecExit) and events[-1].exit_code == 4
    outs = [e for e in events if isinstance(e, ExecOutput)]
    assert "".join(e.data for e in outs if e.stream == "stdout") == "1\n3\n"
    assert "".join(e.data for e in outs if e.stream == "stderr") == "2\n"

    data = bytes(range(256)) * 3
    box.files.write("/workspace/deep/bin.dat", data)
    assert box.files.read("/workspace/deep/bin.dat") == data
    box.files.write("/workspace/run.sh", "#!/bin/sh\necho ran\n", mode=0o755)
    assert box.exec(["/workspace/run.sh"]).stdout == "ran\n"
    assert box.files.read_text("/workspace/run.sh").startswith("#!/bin/sh")
    with pytest.raises(BoxdApiError) as e:
        box.files.read("/workspace/missing.txt")
    assert (e.value.code, e.value.status) == ("FILE_NOT_FOUND", 404)

    child = box.fork(name=names("py-child"))
    assert child.info.parent == name
    assert child.files.read("/workspace/deep/bin.dat") == data
    child.files.write("/workspace/only-child", "x")
    assert box.exec(["test", "-e", "/workspace/only-child"]).exit_code == 1
    assert {b.name for b in compute.box.list()} >= {name, child.name}

    snap_name = f"snap-{name}"
    snap = box.snapshot(snap_name)
    assert isinstance(snap, Snapshot) and (snap.name, snap.box) == (snap_name, name)
    assert snap_name in [s.name for s in compute.snapshots.list()]
    compute.snapshots.delete(snap_name)
    assert snap_name not in [s.name for s in compute.snapshots.list()]

    child.destroy()
    box.destroy()
    assert box.state == "destroyed"
    with pytest.raises(BoxdApiError) as e:
        compute.box.get(name)
    assert (e.value.code, e.value.status) == ("BOX_NOT_FOUND", 404)


def test_errors_carry_code_and_status(compute: Compute, names, base_url: str) -> None:
    with pytest.raises(BoxdApiError) as e:
        compute.box.create(name="Not A DNS Label")
    assert (e.value.code, e.value.status) == ("INVALID_REQUEST", 400)
    name = names("dup")
    compute.box.create(name=name, golden="tiny")
    with pytest.raises(BoxdApiError) as e:
        compute.box.create(name=name, golden="tiny")
    assert (e.value.code, e.value.status) == ("BOX_EXISTS", 409)
    with pytest.raises(BoxdApiError) as e:
        compute.box.create(name=names("nog"), golden="no-such-golden")
    assert (e.value.code, e.value.status) == ("GOLDEN_NOT_FOUND", 400)

    with Compute(api_key="wrong-key", base_url=base_url) as bad, pytest.raises(BoxdApiError) as e:
        bad.box.list()
    assert (e.value.code, e.value.status) == ("UNAUTHORIZED", 401)
    # Port 9 (discard) on loopback: nothing listens there.
    with Compute(api_key="k", base_url="http://127.0.0.1:9") as down, pytest.raises(BoxdApiError) as e:
        down.box.list()
    assert (e.value.code, e.value.status) == ("NETWORK_ERROR", 0)
    assert "127.0.0.1:9" in e.value.message


def test_api_key_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXD_API_KEY")
    with pytest.raises(BoxdApiError) as e:
        Compute()
    assert e.value.code == "NO_API_KEY"


def test_hooks_and_tasks(compute: Compute, base_url: str) -> None:
    hook = compute.hooks.create("py-ci", ["cat \"$BOXD_PAYLOAD\"", ["sh", "-c", "echo two"]], golden="tiny")
    assert isinstance(hook, Hook) and hook.secret and hook.id.startswith("hk_")
    assert [s.cmd for s in hook.steps] == ["cat \"$BOXD_PAYLOAD\"", ["sh", "-c", "echo two"]]
    assert hook.id in [h.id for h in compute.hooks.list()]
    assert all(h.secret is None for h in compute.hooks.list()), "the secret is shown once"

    payload = json.dumps({"ref": "refs/heads/main"}).encode()
    sig = "sha256=" + hmac.new(hook.secret.encode(), payload, hashlib.sha256).hexdigest()
    r = httpx.post(f"{base_url}/hooks/{hook.id}", content=payload, headers={"X-Boxd-Signature": sig, "X-Boxd-Delivery": f"d-{hook.id}"})
    assert r.status_code == 202
    task_id = r.json()["task"]["id"]
    done = wait_for(lambda: (lambda t: t if t.state in ("succeeded", "failed") else None)(compute.tasks.get(task_id)), 90)
    assert isinstance(done, Task)
    assert done.state == "succeeded", done.error
    assert [s.stdout for s in done.steps] == [payload.decode(), "two\n"]
    assert [s.exit_code for s in done.steps] == [0, 0]
    assert task_id in [t.id for t in compute.tasks.list()]
    with pytest.raises(BoxdApiError) as e:
        compute.tasks.get("tk-nope")
    assert e.value.code == "TASK_NOT_FOUND"

    compute.hooks.delete(hook.id)
    assert hook.id not in [h.id for h in compute.hooks.list()]


def test_goldens_and_pool(compute: Compute) -> None:
    goldens = {g.name: g for g in compute.goldens()}
    assert goldens["tiny"].built and goldens["default"].built
    assert 3000 in goldens["default"].ports
    pools = compute.pool()
    assert {p.golden for p in pools} >= {"tiny", "default"}


def test_accounts_and_keys(compute: Compute, base_url: str, names) -> None:
    team = names("team")
    acct = compute.accounts.create(team, max_boxes=2)
    assert (acct.name, acct.max_boxes) == (team, 2)
    listed = {a.id: a for a in compute.accounts.list()}[acct.id]
    assert (listed.limits.max_boxes, listed.keys) == (2, 0)
    key = compute.keys.create(acct.id)
    assert key.role == "member" and key.key
    with Compute(api_key=key.key, base_url=base_url) as member:
        assert member.box.list() == []  # its own account: nothing of the admin's
        with pytest.raises(BoxdApiError) as e:
            member.accounts.list()
        assert (e.value.code, e.value.status) == ("FORBIDDEN", 403)
        compute.keys.delete(key.id)
        with pytest.raises(BoxdApiError) as e:
            member.box.list()
        assert e.value.code == "UNAUTHORIZED"
    with pytest.raises(BoxdApiError) as e:
        compute.keys.create("no-such-account")
    assert e.value.code == "ACCOUNT_NOT_FOUND"
