"""A site plan's children in its summary: each child's status, its own RTO (from the start of its
first step to its health first holding) against its own target, and its own RPO. Built from the
journal alone, like the rest of the summary. Semantics: docs/reference.md, "Site plans"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from orchestrator.vocab import Direction, StepStatus


class _Timed(Protocol):
    t0: float | None
    t1: float | None

    @property
    def record(self) -> Any: ...


def _r(x: float) -> float:
    return round(x, 3)


def child_records(start: Mapping[str, Any], steps: Mapping[str, _Timed]) -> list[dict[str, Any]]:
    """The ``children`` of a site plan's summary (empty for a plain runbook)."""
    # a mirrored failback's reprotect phase (a child's among them) runs before the RTO starts
    phase = (
        set(start.get("reprotect_steps") or ())
        if start.get("direction") != Direction.REPROTECT
        else set()
    )
    return [_child(c, steps, phase) for c in start.get("children") or []]


def _child(meta: Mapping[str, Any], steps: Mapping[str, _Timed], phase: set[str]) -> dict[str, Any]:
    prefix = f"{meta['id']}/"
    mine = {sid: st for sid, st in steps.items() if sid.removeprefix("undo-").startswith(prefix)}
    health = {sid: st for sid, st in mine.items() if _is_health(sid, prefix)}
    statuses = [st.record.status for st in mine.values()]
    status: str
    if any(s == StepStatus.FAILED for s in statuses):
        status = StepStatus.FAILED
    elif not statuses or all(s in (StepStatus.NOT_RUN, StepStatus.SKIPPED) for s in statuses):
        status = StepStatus.NOT_RUN
    elif all(s in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for s in statuses):
        status = StepStatus.SUCCEEDED
    else:
        status = "incomplete"
    named = steps.get(meta.get("rto_start") or "")
    started = [st.t0 for sid, st in mine.items() if st.t0 is not None and sid not in phase]
    t_start = named.t0 if named is not None and named.t0 is not None else min(started, default=None)
    t_end: float | None = None
    if status == StepStatus.SUCCEEDED:
        ends = [st.t1 for st in (health or mine).values() if st.t1 is not None]
        t_end = max(ends, default=None)
    measured = _r(t_end - t_start) if t_end is not None and t_start is not None else None
    target = meta.get("rto_target_s")
    rto = {
        "measured_s": measured,
        "target_s": target,
        "met": measured <= target if measured is not None and target is not None else None,
        "start_step": meta.get("rto_start"),
        "predicted_s": meta.get("predicted_rto_s"),
    }
    return {
        "id": meta["id"],
        "runbook": meta.get("runbook"),
        "file": meta.get("file"),
        "runbook_sha256": meta.get("runbook_sha256"),
        "status": status,
        "rto": rto,
        "rpo": _rpo(meta, steps),
    }


def _is_health(sid: str, prefix: str) -> bool:
    rest = sid.removeprefix("undo-").removeprefix(prefix)
    return rest.startswith("health:")


def _rpo(meta: Mapping[str, Any], steps: Mapping[str, _Timed]) -> dict[str, Any] | None:
    name = meta.get("rpo_step")
    if not name:
        return None
    st = steps.get(name)
    value = st.record.value if st is not None else None
    measured = (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    )
    target = meta.get("rpo_target")
    unit = "bytes" if meta.get("rpo_is_bytes") else "s"
    return {
        f"measured_{unit}": measured,
        f"target_{unit}": target,
        "met": measured <= target if measured is not None and target is not None else None,
        "step": name,
    }


Row = tuple[str, str, str, str, str, str, str, str, str]


def child_rows(children: list[dict[str, Any]]) -> list[Row]:
    """``drx runs`` rows under a site plan's run: each child's status, RTO, target and RPO."""
    from orchestrator.model.units import format_duration

    rows: list[Row] = []
    for c in children:
        rto = c.get("rto") or {}
        text = format_duration(rto.get("measured_s"))
        if rto.get("met") is not None:
            text += " ✔" if rto["met"] else " ✘"
        rpo = c.get("rpo") or {}
        measured = rpo.get("measured_s", rpo.get("measured_bytes"))
        rpo_text = (
            "—"
            if not rpo
            else format_duration(measured)
            if "measured_s" in rpo
            else (f"{int(measured)}B" if measured is not None else "—")
        )
        depth = str(c.get("id", "")).count("/")
        rows.append(
            (
                f"{'  ' * depth}  └ {c.get('id')}",
                str(c.get("runbook") or ""),
                "",
                "",
                str(c.get("status") or ""),
                text,
                format_duration(rto.get("target_s")),
                rpo_text,
                "",
            )
        )
    return rows
