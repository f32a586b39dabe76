"""A site plan's children in every report: each child's status, RTO and RPO against its own
targets (text, Markdown, HTML), a testsuite per child (JUnit) and a span per child (OTLP).
The children come from summary.json's ``children``; a step belongs to the innermost child whose
id prefixes it (``db/promote``, ``undo-db/promote``). Semantics: docs/reference.md, "Site
plans"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.report.units import secs
from orchestrator.vocab import StepStatus

if TYPE_CHECKING:
    from orchestrator.report.facts import Verdict
    from orchestrator.report.otlp import SpanData


@dataclass(frozen=True)
class ChildFacts:
    """One child of a site plan run, as every report shows it."""

    id: str
    runbook: str
    status: str
    rto: Verdict
    rpo: Verdict | None
    steps: tuple[str, ...]

    @property
    def text(self) -> str:
        rpo = f"; RPO {self.rpo.text}" if self.rpo is not None else ""
        return f"{self.id} ({self.runbook}): {self.status}; RTO {self.rto.text}{rpo}"


def child_ids(children: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(c.get("id")) for c in children if c.get("id")]


def step_child(ids: Sequence[str], step_id: str) -> str | None:
    """The innermost child a step belongs to (None: the site plan's own step)."""
    bare = step_id.removeprefix("undo-")
    found = [cid for cid in ids if bare.startswith(f"{cid}/")]
    return max(found, key=len) if found else None


def child_facts(
    children: Sequence[Mapping[str, Any]], step_ids: Sequence[str]
) -> tuple[ChildFacts, ...]:
    from orchestrator.report.facts import target_verdict

    ids = child_ids(children)
    out = []
    for c in children:
        cid = str(c.get("id") or "")
        if not cid:
            continue
        raw = c.get("rto")
        rto: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        unmeasured = (
            "the child did not finish" if c.get("status") != StepStatus.SUCCEEDED else "no steps"
        )
        rto_v = target_verdict(
            _num(rto.get("measured_s")), _num(rto.get("target_s")), unmeasured=unmeasured
        )
        rpo = c.get("rpo")
        rpo_v = None
        if isinstance(rpo, Mapping):
            in_bytes = "measured_bytes" in rpo or "target_bytes" in rpo
            unit = "bytes" if in_bytes else "s"
            show = (lambda v: f"{v:g} B" if v is not None else "—") if in_bytes else secs
            rpo_v = target_verdict(
                _num(rpo.get(f"measured_{unit}")),
                _num(rpo.get(f"target_{unit}")),
                unmeasured=f"{rpo.get('step')} gave no value",
                show=show,
            )
        mine = tuple(s for s in step_ids if step_child(ids, s) == cid)
        out.append(
            ChildFacts(
                cid,
                str(c.get("runbook") or ""),
                str(c.get("status") or "unknown"),
                rto_v,
                rpo_v,
                mine,
            )
        )
    return tuple(out)


def site_health(
    children: Sequence[Mapping[str, Any]], steps: Sequence[Any], no_own_health: bool
) -> str | None:
    """The health sentence of a site plan without health of its own: its children's health
    checks are steps, each held (or not) where the run moved that child."""
    if not children or not no_own_health:
        return None
    checks = [s for s in steps if "/health:" in s.id]
    if not checks:
        return None
    held = [s for s in checks if s.status == StepStatus.SUCCEEDED]
    names = ", ".join(s.id for s in checks)
    return (
        f"{len(held)} of {len(checks)} child health checks held ({names}); the site's RTO "
        "ends when the last step ends."
    )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def child_spans(children: Sequence[Mapping[str, Any]], spans: list[SpanData]) -> list[SpanData]:
    """A span per child (its steps' spans beneath it, nested children's beneath theirs), from
    its first step's start to its last step's end."""
    from orchestrator.report.otlp import SpanData

    ids = child_ids(children)
    if not ids:
        return spans
    by_child: dict[str, list[SpanData]] = {}
    for span in spans:
        if span.key.startswith("step/"):
            cid = step_child(ids, span.key.removeprefix("step/"))
            if cid is not None:
                by_child.setdefault(cid, []).append(span)
    made: dict[str, SpanData] = {}
    meta = {str(c.get("id")): c for c in children}
    for cid in sorted(ids, key=lambda i: i.count("/"), reverse=True):  # innermost first
        members = by_child.get(cid, []) + [made[k] for k in made if meta[k].get("parent") == cid]
        if not members:
            continue
        parent = meta[cid].get("parent")
        span = SpanData(
            f"child/{cid}",
            f"{cid} ({meta[cid].get('runbook')})",
            min(s.start_ns for s in members),
            max(s.end_ns for s in members),
            f"child/{parent}" if parent else "run",
            {
                "drx.child": cid,
                "drx.child.runbook": str(meta[cid].get("runbook") or ""),
                "drx.child.status": str(meta[cid].get("status") or ""),
            },
        )
        if meta[cid].get("status") == StepStatus.FAILED:
            span.error = "failed"
        for member in by_child.get(cid, []):
            member.parent = span.key
        made[cid] = span
    return [*spans, *made.values()]


@dataclass(frozen=True)
class LaneGroup:
    """The lanes of one child in the HTML timeline: a bracket at the left, labelled."""

    label: str
    status: str
    y: float
    h: float


def gantt_groups(children: Sequence[ChildFacts], lanes: Sequence[Any]) -> list[LaneGroup]:
    """Consecutive timeline lanes of one (top-level) child, grouped under its name."""
    ids = [c.id for c in children]
    top = {c.id: c for c in children if "/" not in c.id}
    groups: list[LaneGroup] = []
    current: str | None = None
    for lane in lanes:
        cid = step_child(ids, lane.step) if lane.step else None
        cid = cid.split("/", 1)[0] if cid is not None else None
        if cid is None or cid not in top:
            current = None
            continue
        if cid == current and groups:
            last = groups[-1]
            groups[-1] = LaneGroup(last.label, last.status, last.y, lane.y + lane.h - last.y)
        else:
            child = top[cid]
            groups.append(LaneGroup(f"{cid} ({child.runbook})", child.status, lane.y, lane.h))
        current = cid
    return groups
