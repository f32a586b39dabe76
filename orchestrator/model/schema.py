"""JSON Schemas (draft 2020-12) of runbooks and inventories, built from the field tables of
:mod:`orchestrator.model.reference`, so that editors with a YAML language server complete and
check the files as drx's own loaders would (``drx schema runbook``; see docs/reference.md)."""

from __future__ import annotations

from typing import Any

from orchestrator import kinds
from orchestrator.model.reference import (
    CONNECTION_DOC,
    HEALTH_DOC,
    HOST_DOC,
    INVENTORY_DOC,
    PROBE_DOC,
    READINESS_DOC,
    RPO_PROBE_DOC,
    RUNBOOK_DOC,
    SITE_DOC,
    FieldDoc,
    Type,
    step_docs,
)
from orchestrator.model.runbook import (
    STEP_ID,
    SUDO_USER,
    UNDO_FIELDS,
    FailbackMode,
    Mode,
    OnFailure,
    RunbookOnFailure,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: durations: 500ms, 30s, 5m, 1h, 1h30m, or a plain number of seconds
DURATION_PATTERN = r"^\s*((\d+(\.\d+)?(ms|s|m|h|d))+|\d+(\.\d+)?)\s*$"
#: poll intervals under 50ms (the loaders refuse them): 0, 10ms, 0.04s, 0m, ...
TOO_SHORT_INTERVAL = r"^\s*(0*[0-4]?\d(\.\d+)?ms|0*(\.0[0-4]\d*|\.0*)?s?|0*\.?0*(m|h|d))\s*$"
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([Bb]|[KkMmGgTt][Bb])\s*$"

_STRING: dict[str, Any] = {"type": "string"}
_NUMBER_OR_STRING: dict[str, Any] = {"type": ["string", "number"]}
_DURATION: dict[str, Any] = {
    "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}]
}
_STRINGS: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
}
_ENV: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number"]},
}


def _value_schema(doc: FieldDoc) -> dict[str, Any]:
    simple: dict[Type, dict[str, Any]] = {
        Type.STRING: _STRING,
        Type.TEXT: _NUMBER_OR_STRING,
        Type.TEMPLATE: _NUMBER_OR_STRING,
        Type.EXPRESSION: _NUMBER_OR_STRING,
        Type.DURATION: _DURATION,
        Type.STEP_DURATION: {
            "anyOf": [*_DURATION["anyOf"], {"type": "string", "pattern": r"\{[{%]"}]
        },
        Type.DURATION_OR_SIZE: {
            "anyOf": [*_DURATION["anyOf"], {"type": "string", "pattern": SIZE_PATTERN}]
        },
        Type.SIZE: {"type": "string", "pattern": SIZE_PATTERN},
        Type.SELECTORS: _STRINGS,
        Type.STRINGS: _STRINGS,
        Type.INTEGER: {"type": "integer", "minimum": 0},
        Type.PORT: {"type": "integer", "minimum": 1, "maximum": 65535},
        Type.BOOLEAN: {"type": "boolean"},
        Type.SUDO: {"anyOf": [{"type": "boolean"}, {"type": "string", "pattern": SUDO_USER}]},
        Type.ENV: _ENV,
        Type.MAPPING: {"type": "object"},
        Type.KIND: {"enum": kinds.names()},
        Type.ON_FAILURE: {"enum": [o.value for o in OnFailure]},
        Type.RUNBOOK_ON_FAILURE: {"enum": [o.value for o in RunbookOnFailure]},
        Type.ONLY: {"enum": [m.value for m in Mode]},
        Type.PROBE_LIST: {"type": "array", "items": {"$ref": "#/$defs/probe"}},
        Type.FAILBACK: {"enum": [m.value for m in FailbackMode]},
        Type.CAPTURE: _STRING,
        Type.UNDO: {
            "anyOf": [{"type": ["string", "number"]}, {"$ref": "#/$defs/undo"}],
        },
        Type.TRANSPORT: {"enum": ["ssh", "local"]},
        Type.HOST_KEY_POLICY: {"enum": ["strict", "accept-new", "ignore"]},
        Type.HEALTH_LIST: {"type": "array", "items": {"$ref": "#/$defs/health"}},
        Type.READINESS_LIST: {"type": "array", "items": {"$ref": "#/$defs/readiness"}},
        Type.RPO_PROBE: {"$ref": "#/$defs/rpo_probe"},
        Type.STEP_LIST: {"type": "array", "items": {"$ref": "#/$defs/step"}},
        Type.DEFAULTS: {"$ref": "#/$defs/connection"},
        Type.SITES: {
            "type": "object",
            "minProperties": 2,
            "propertyNames": {"not": {"enum": ["source", "target", "active", "control"]}},
            "additionalProperties": {"$ref": "#/$defs/site"},
        },
        Type.HOSTS: {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"not": {"const": "control"}},
            "additionalProperties": {"$ref": "#/$defs/host"},
        },
    }
    schema = dict(simple[doc.type])
    schema["description"] = f"{doc.meaning} Default: {doc.default}."
    if doc.name == "id":
        schema = {"type": "string", "pattern": STEP_ID.pattern, "description": doc.meaning}
    # the bounds the loaders enforce beyond the type (docs/reference.md)
    if doc.name == "serial":
        schema["minimum"] = 1
    if doc.name == "interval":
        schema["anyOf"] = [
            {"type": "number", "minimum": 0.05},
            {"type": "string", "pattern": DURATION_PATTERN, "not": {"pattern": TOO_SHORT_INTERVAL}},
        ]
    return schema


def _object(docs: tuple[FieldDoc, ...], *, required: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {d.name: _value_schema(d) for d in docs},
        "additionalProperties": False,
    }
    names = [d.name for d in docs if d.required]
    if required and names:
        schema["required"] = names
    return schema


def _needs_hosts_and_run(with_hosts: bool) -> dict[str, Any]:
    """What each kind requires (orchestrator/kinds/): command and check steps need ``run``
    (and ``hosts``, except in an undo), wait needs ``duration``."""
    by_fields: dict[tuple[str, ...], list[str]] = {}
    for kind in kinds.KINDS.values():
        needed = tuple(k for k in kind.required if with_hosts or k != "hosts")
        if needed:
            by_fields.setdefault(needed, []).append(kind.name)
    clauses: list[dict[str, Any]] = []
    for needed, names in by_fields.items():
        if "command" in names:  # the default kind: also a step that names none
            named = {"properties": {"kind": {"enum": names}}}
            when: dict[str, Any] = {"anyOf": [{"not": {"required": ["kind"]}}, named]}
        elif len(names) == 1:
            when = {"properties": {"kind": {"const": names[0]}}, "required": ["kind"]}
        else:
            when = {"properties": {"kind": {"enum": names}}, "required": ["kind"]}
        clauses.append({"if": when, "then": {"required": list(needed)}})
    return {"allOf": clauses}


def runbook_schema() -> dict[str, Any]:
    """The JSON Schema of a runbook file."""
    docs = step_docs()
    step = _object(docs) | _needs_hosts_and_run(True)
    own = {d.name for k in kinds.KINDS.values() for d in k.field_docs}
    undo_docs = tuple(d for d in docs if d.name in UNDO_FIELDS or d.name in own)
    undo = _object(undo_docs) | _needs_hosts_and_run(False)
    return {
        "$schema": DRAFT,
        "$id": "https://drx.invalid/schema/runbook.json",
        "title": "drx runbook",
        "description": "Steps with dependencies that move a service between sites; see "
        "docs/reference.md.",
        **_object(RUNBOOK_DOC),
        "$defs": {
            "step": step,
            "undo": undo,
            "health": _object(HEALTH_DOC),
            "readiness": _object(READINESS_DOC),
            "rpo_probe": _object(RPO_PROBE_DOC),
            "probe": _object(PROBE_DOC),
        },
    }


def inventory_schema() -> dict[str, Any]:
    """The JSON Schema of an inventory file."""
    connection = _object(CONNECTION_DOC)
    return {
        "$schema": DRAFT,
        "$id": "https://drx.invalid/schema/inventory.json",
        "title": "drx inventory",
        "description": "Sites, their hosts and how to reach them; see docs/reference.md.",
        **_object(INVENTORY_DOC),
        "$defs": {
            "connection": connection,
            "site": _object((*SITE_DOC, *CONNECTION_DOC)),
            "host": _object((*HOST_DOC, *CONNECTION_DOC)),
        },
    }


SCHEMAS = {"runbook": runbook_schema, "inventory": inventory_schema}
