"""The API's wire shapes as dataclasses (snake_case fields for the API's camelCase names).

Each class's fields are checked against the OpenAPI document (``GET /v1/openapi.json``) in
``tests/test_openapi.py``, so a field added to the API without a field here fails a test.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Type, TypeVar, Union

T = TypeVar("T")

BoxState = Literal["creating", "running", "suspended", "destroyed", "error", "lost"]
TaskState = Literal["queued", "running", "succeeded", "failed"]
# Which X-Boxd-Signature forms a hook accepts: "any" ("t=…,v1=…" or "sha256=…") or only "timestamped".
HookSignature = Literal["any", "timestamped"]
#: Egress policy of a box: "open", "none", or {"allow": ["10.0.0.0/8:443", …]}.
NetworkPolicy = Union[str, Dict[str, List[str]]]


def snake(name: str) -> str:
    """``idleTimeoutMs`` -> ``idle_timeout_ms`` (``from`` -> ``from_``: not a Python keyword)."""
    s = re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
    return s + "_" if keyword.iskeyword(s) else s


def camel(name: str) -> str:
    """``idle_timeout_ms`` -> ``idleTimeoutMs``."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def from_wire(cls: Type[T], data: Dict[str, Any]) -> T:
    """Builds ``cls`` from an API object; unknown keys (a newer server) are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{snake(k): v for k, v in data.items() if snake(k) in names})


def to_wire(values: Dict[str, Any]) -> Dict[str, Any]:
    """Keyword arguments -> API body: camelCase keys, ``None`` left out."""
    return {camel(k): v for k, v in values.items() if v is not None}


@dataclass
class BoxInfo:
    """A box as the API answers it. ``preview_token`` comes only with the create (or fork) of a
    private box; ``pooled`` is true when the box came from a warm pool."""

    name: str
    state: BoxState
    url: Optional[str]
    urls: Dict[str, str]
    ports: List[int]
    public: bool
    idle_timeout_ms: int
    network: NetworkPolicy
    created_at: str
    last_activity_at: str
    disk_mb: Optional[int] = None
    golden: Optional[str] = None
    image: Optional[str] = None
    snapshot: Optional[str] = None
    parent: Optional[str] = None
    error: Optional[str] = None
    preview_token: Optional[str] = None
    pooled: Optional[bool] = None
    #: How the box was made when not a plain create: "pool", "fork-pool" or "fork-commit".
    origin: Optional[str] = None


@dataclass
class ExecResult:
    """A finished exec. Output kept is capped at 4 MiB per stream (``truncated``)."""

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: int
    timed_out: bool
    truncated: bool


@dataclass
class ExecOutput:
    """A chunk of a streamed exec's output."""

    stream: Literal["stdout", "stderr"]
    data: str


@dataclass
class ExecExit:
    """The last event of a streamed exec."""

    exit_code: int
    duration_ms: int
    timed_out: bool


ExecEvent = Union[ExecOutput, ExecExit]


def exec_event(data: Dict[str, Any]) -> ExecEvent:
    if "exitCode" in data:
        return from_wire(ExecExit, data)
    return from_wire(ExecOutput, data)


@dataclass
class Snapshot:
    name: str
    box: str
    ports: List[int]
    created_at: str
    golden: Optional[str] = None


@dataclass
class HookStep:
    """argv, or a string run with ``sh -c``."""

    cmd: Union[str, List[str]]


@dataclass
class Hook:
    """A webhook. ``secret`` is only in the answer to its create."""

    id: str
    url: str
    name: str
    golden: str
    steps: List[HookStep]
    keep_ms: int
    signature: HookSignature
    created_at: str
    secret: Optional[str] = None

    @classmethod
    def from_wire(cls, data: Dict[str, Any]) -> "Hook":
        h = from_wire(cls, data)
        h.steps = [HookStep(cmd=s["cmd"]) for s in data.get("steps", [])]
        return h


@dataclass
class TaskStep:
    cmd: List[str]
    exit_code: Optional[int]
    stdout: str
    stderr: str
    duration_ms: int
    started_at: str


@dataclass
class TaskBox:
    name: str
    kept: bool
    url: Optional[str]
    until: Optional[str] = None


@dataclass
class Task:
    id: str
    hook: str
    state: TaskState
    steps: List[TaskStep]
    box: Optional[TaskBox]
    attempts: int
    triggered_at: str
    error: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None

    @classmethod
    def from_wire(cls, data: Dict[str, Any]) -> "Task":
        t = from_wire(cls, data)
        t.steps = [from_wire(TaskStep, s) for s in data.get("steps", [])]
        t.box = from_wire(TaskBox, data["box"]) if data.get("box") else None
        return t


@dataclass
class Golden:
    name: str
    tag: str
    description: str
    ports: List[int]
    pool_size: int
    cpus: float
    memory_mb: int
    idle_timeout_ms: int
    built: bool
    #: "operator" (golden-images/) or "account" (promoted by the account).
    owner: str
    #: What an account golden was promoted from: {"box": …} or {"snapshot": …}.
    from_: Optional[Dict[str, str]] = None
    created_at: Optional[str] = None


@dataclass
class PoolStats:
    golden: str
    target: int
    ready: int
    hits: int
    misses: int
    hit_rate: Optional[float]
    #: "account" for the pools of the account's own goldens.
    owner: Optional[str] = None


@dataclass
class CreateOptions:
    """The body of ``POST /v1/boxes`` (all optional; at most one of golden, image, snapshot)."""

    name: Optional[str] = None
    golden: Optional[str] = None
    image: Optional[str] = None
    snapshot: Optional[str] = None
    ports: Optional[List[int]] = None
    env: Optional[Dict[str, str]] = None
    idle_timeout_ms: Optional[int] = None
    public: Optional[bool] = None
    disk_mb: Optional[int] = None
    network: Optional[NetworkPolicy] = None
    #: BOXD_URL, a box-scoped BOXD_API_KEY and BOXD_BOX in the box's env, ``boxd`` on its PATH.
    agent: Optional[bool] = None


@dataclass
class ExecOptions:
    """The body of ``POST /v1/boxes/:name/exec`` besides ``cmd``."""

    cwd: Optional[str] = None
    env: Optional[Dict[str, str]] = None
    stdin: Optional[str] = None
    timeout_ms: Optional[int] = None
    #: Keep the command running when the client disconnects from the stream.
    detach: Optional[bool] = None


@dataclass
class HookOptions:
    """The body of ``POST /v1/hooks``."""

    name: str
    steps: List[Dict[str, Any]] = field(default_factory=list)
    golden: Optional[str] = None
    secret: Optional[str] = None
    keep_ms: Optional[int] = None
    signature: Optional[HookSignature] = None


@dataclass
class AccountLimits:
    max_boxes: int
    max_snapshots: int
    max_hooks: int
    #: None: the operator's BOXD_MAX_EXECS applies.
    max_execs: Optional[int] = None


@dataclass
class Account:
    """An account as created (the limits it was given; the rest take defaults)."""

    id: str
    name: str
    created_at: str
    max_boxes: Optional[int] = None
    max_execs: Optional[int] = None
    max_snapshots: Optional[int] = None
    max_hooks: Optional[int] = None


@dataclass
class AccountListed:
    """An account as listed: its effective ``limits`` and how many ``keys`` it has."""

    id: str
    name: str
    created_at: str
    limits: AccountLimits
    keys: int
    max_boxes: Optional[int] = None
    max_execs: Optional[int] = None
    max_snapshots: Optional[int] = None
    max_hooks: Optional[int] = None

    @classmethod
    def from_wire(cls, data: Dict[str, Any]) -> "AccountListed":
        a = from_wire(cls, data)
        a.limits = from_wire(AccountLimits, data["limits"])
        return a


@dataclass
class KeyCreated:
    """A new API key: ``key`` is shown only here (stored hashed)."""

    id: str
    account: str
    role: Literal["admin", "member"]
    key: str


@dataclass
class AccountOptions:
    """The body of ``POST /v1/accounts``."""

    name: str
    max_boxes: Optional[int] = None
    max_execs: Optional[int] = None
    max_snapshots: Optional[int] = None
    max_hooks: Optional[int] = None


@dataclass
class KeyOptions:
    """The body of ``POST /v1/accounts/:id/keys``."""

    role: Optional[Literal["admin", "member"]] = None
