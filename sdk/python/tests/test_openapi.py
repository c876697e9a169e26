"""The SDK's dataclasses have the fields of the API's schemas in ``GET /v1/openapi.json``."""

import dataclasses
from typing import Any, Dict, List, Optional, Set, Tuple

import httpx
import pytest

from boxd import types as t

Schema = Dict[str, Any]


@pytest.fixture(scope="module")
def doc(base_url: str) -> Schema:
    r = httpx.get(f"{base_url}/v1/openapi.json")  # public: no key
    assert r.status_code == 200
    return r.json()


def resolve(doc: Schema, s: Schema) -> Schema:
    if "$ref" in s:
        return resolve(doc, doc["components"]["schemas"][s["$ref"].split("/")[-1]])
    if "anyOf" in s:  # a nullable object
        return resolve(doc, next(x for x in s["anyOf"] if x.get("type") != "null"))
    return s


def at(doc: Schema, component: str, *props: str) -> Schema:
    s: Schema = {"$ref": f"#/components/schemas/{component}"}
    for p in props:
        s = resolve(doc, s)["items"] if p == "[]" else resolve(doc, s)["properties"][p]
    s = resolve(doc, s)
    assert s.get("type") == "object", s
    return s


def dc_shape(cls: Any, skip: Tuple[str, ...] = ()) -> Tuple[List[str], List[str]]:
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    return sorted(f.name for f in fields), sorted(required)


def schema_shape(s: Schema, skip: Tuple[str, ...] = ()) -> Tuple[List[str], List[str]]:
    props = [t.snake(p) for p in s.get("properties", {}) if p not in skip]
    return sorted(props), sorted(t.snake(p) for p in s.get("required", []) if p not in skip)


PAIRS = [
    (t.BoxInfo, ("CreatedBox",), ()),
    (t.ExecResult, ("ExecResult",), ()),
    (t.ExecOutput, ("ExecOutput",), ()),
    (t.ExecExit, ("ExecExit",), ()),
    (t.Snapshot, ("Snapshot",), ()),
    (t.Hook, ("Hook",), ()),
    (t.HookStep, ("Hook", "steps", "[]"), ()),
    (t.Task, ("Task",), ()),
    (t.TaskStep, ("Task", "steps", "[]"), ()),
    (t.TaskBox, ("Task", "box"), ()),
    (t.Golden, ("Golden",), ()),
    (t.PoolStats, ("PoolStats",), ()),
    (t.Account, ("Account",), ()),
    (t.AccountListed, ("AccountListed",), ()),
    (t.AccountLimits, ("AccountLimits",), ()),
    (t.KeyCreated, ("KeyCreated",), ()),
]


@pytest.mark.parametrize("cls,where,skip", PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_answer_dataclass_matches_schema(doc: Schema, cls: Any, where: Tuple[str, ...], skip: Tuple[str, ...]) -> None:
    fields, required = dc_shape(cls)
    props, req = schema_shape(at(doc, *where))
    assert fields == props, f"{cls.__name__} fields vs {'.'.join(where)} properties"
    # A field without a default is one the API always sends; nullable ones may still be None.
    assert required == req, f"{cls.__name__} required fields vs {'.'.join(where)} required"


@pytest.mark.parametrize("cls,component,skip", [(t.CreateOptions, "CreateBoxBody", ()), (t.ExecOptions, "ExecBody", ("cmd",)), (t.HookOptions, "HookBody", ()), (t.AccountOptions, "AccountBody", ()), (t.KeyOptions, "KeyBody", ())])
def test_request_options_match_schema(doc: Schema, cls: Any, component: str, skip: Tuple[str, ...]) -> None:
    fields, _ = dc_shape(cls)
    props, _ = schema_shape(at(doc, component), skip)
    assert fields == props, f"{cls.__name__} vs {component}"


def test_every_wire_dataclass_is_checked() -> None:
    checked: Set[Any] = {p[0] for p in PAIRS} | {t.CreateOptions, t.ExecOptions, t.HookOptions, t.AccountOptions, t.KeyOptions}
    declared = {v for v in vars(t).values() if dataclasses.is_dataclass(v)}
    assert declared - checked == set()
