"""boxd: boxes you exec in, suspend, fork and preview.

    from boxd import Compute
    c = Compute()                       # BOXD_API_KEY and BOXD_URL from the environment
    box = c.box.create(name="task-1")
    box.exec(["bash", "-lc", "npm test"])
    box.suspend(); box.resume(); box.destroy()

``AsyncCompute`` has the same shape with ``await``. Failed calls raise ``BoxdApiError``.
"""

from .aio import AsyncBox, AsyncCompute
from .errors import BoxdApiError
from .pty import AsyncTerminal, Terminal
from .sync import Box, Compute
from .types import Account, AccountLimits, AccountListed, KeyCreated, NetworkPolicy, BoxInfo, ExecEvent, ExecExit, ExecOutput, ExecResult, Golden, Hook, HookStep, PoolStats, Snapshot, Task, TaskBox, TaskStep

__all__ = [
    "Account", "AccountLimits", "AccountListed", "KeyCreated", "NetworkPolicy",
    "AsyncBox", "AsyncCompute", "AsyncTerminal", "Terminal", "Box", "BoxInfo", "BoxdApiError", "Compute", "ExecEvent", "ExecExit", "ExecOutput",
    "ExecResult", "Golden", "Hook", "HookStep", "PoolStats", "Snapshot", "Task", "TaskBox", "TaskStep",
]
__version__ = "0.1.0"
