"""Step kinds as a table: each kind (``command``, ``check``, ``manual``, ``wait``, ``runbook``)
is one module holding its parse rules, execution, preview and report facts (see ``base.Kind``);
the loader, planner, executor and reports look kinds up here. Adding a kind is one module and
a :func:`register` call."""

from __future__ import annotations

from orchestrator.kinds import check, command, manual, runbook, wait
from orchestrator.kinds.base import Kind, StepRunner

__all__ = [
    "KINDS",
    "Kind",
    "StepRunner",
    "kind_of",
    "names",
    "own_fields",
    "register",
    "unregister",
]

#: every known kind by name, in the order the reference lists them
KINDS: dict[str, Kind] = {}

#: what a name no registered kind has reads as (a summary written by a drx that knew it)
_UNKNOWN = Kind()
#: every registered kind's ``own_fields``, in registry order (the loader reads it per step)
_OWN_FIELDS: list[str] = []


def _collect() -> None:
    _OWN_FIELDS[:] = dict.fromkeys(f for k in KINDS.values() for f in k.own_fields)


def register(kind: Kind) -> Kind:
    """Make ``kind`` known to the loader, planner, executor and reports."""
    if not kind.name:
        raise ValueError("a step kind needs a name")
    KINDS[kind.name] = kind
    _collect()
    return kind


def unregister(name: str) -> None:
    """Forget a kind (for a kind registered for a while, as tests do)."""
    KINDS.pop(name, None)
    _collect()


def kind_of(name: str) -> Kind:
    """The kind called ``name`` (a plain kind with no special rules if none is)."""
    return KINDS.get(name, _UNKNOWN)


def own_fields() -> list[str]:
    """The step fields some kind owns (a kind's own fields are known to the loader)."""
    return _OWN_FIELDS


def names(*, listed_only: bool = False) -> list[str]:
    """The registered kinds' names (``listed_only``: those offered for a mistyped kind)."""
    return [k.name for k in KINDS.values() if k.listed or not listed_only]


for _module in (command, check, manual, wait, runbook):
    register(_module.KIND)
