"""The README's Python example, extracted from the README itself so the two cannot drift."""

import os
import re
import subprocess
import sys
from pathlib import Path

from boxd import Compute

ROOT = Path(__file__).resolve().parents[3]


def test_readme_python_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python SDK", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the README's Python SDK section has a python block"
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    with Compute() as c:
        before = {b.name for b in c.box.list()}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "sdk" / "python")}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "git version" not in r.stdout  # exec output is returned, not printed
    assert "1\n" in r.stdout and "ExecExit(exit_code=0" in r.stdout
    assert re.search(r"http://try-[0-9a-z]+\.", r.stdout), r.stdout
    with Compute() as c:
        assert {b.name for b in c.box.list()} == before, "the example cleans up its boxes"
