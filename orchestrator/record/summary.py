"""The summary of a run, typed: what ``summary.json`` holds (docs/reference.md, "summary.json"),
built from the run's journal events alone — so a run whose controller died (no summary of its
own) is read back the same way, as ``crashed``.

``RunSummary.to_dict()`` is the document's exact layout; ``RunSummary.from_dict()`` reads one back,
tolerantly (files written by other versions, or by hand). Nothing outside this module reads
summary documents as dictionaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.bulk import paused_gc
from orchestrator.record.children import child_records
from orchestrator.record.events import Event
from orchestrator.record.progress import Progress

#: check polls kept per host attempt in the summary (the journal has them all)
POLLS_IN_SUMMARY = 200


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


# -- the records ------------------------------------------------------------------------------


@dataclass
class PollRecord:
    """One poll of a check on one host."""

    start_offset_s: float | None
    duration_s: float | None
    ok: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {"duration_s": self.duration_s, "ok": self.ok, "start_offset_s": self.start_offset_s}


@dataclass
class AttemptRecord:
    """One attempt of a step on one host."""

    n: int
    started_at: str | None
    finished_at: str | None = None
    start_offset_s: float | None = None
    duration_s: float | None = None
    rc: int | None = None
    error: str | None = None
    polls: list[PollRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "start_offset_s": self.start_offset_s,
            "duration_s": self.duration_s,
            "rc": self.rc,
            "error": self.error,
            "polls": [p.to_dict() for p in self.polls],
        }


@dataclass
class HostRecord:
    """What one step did on one host."""

    host: str
    status: str = "unknown"
    rc: int | None = None
    duration_s: float | None = None
    output_tail: str = ""
    error: str | None = None
    value: Any = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    command: str | None = None  # as rendered for this host (its last attempt), secrets masked
    #: the outcome came from the host's spool: the command outlived the controller that ran it
    reattached: bool = False
    #: bytes of output its last attempt printed past ``output_limit``, not kept in the log
    output_cut: int | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "host": self.host,
            "rc": self.rc,
            "duration_s": self.duration_s,
            "output_tail": self.output_tail,
            "error": self.error,
            "status": self.status,
            "attempts": [a.to_dict() for a in self.attempts],
            "value": self.value,
        }
        if self.command is not None:
            doc["command"] = self.command
        if self.reattached:
            doc["reattached"] = True
        if self.output_cut:
            doc["output_cut"] = self.output_cut
        return doc


@dataclass
class StepRecord:
    """What one step of the run did."""

    id: str
    name: str
    kind: str = "command"
    status: str = "not_run"
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    start_offset_s: float | None = None
    attempts: int = 0
    needs: list[str] = field(default_factory=list)
    undo_of: str | None = None
    wave: int | None = None
    error: str | None = None
    carried_from: str | None = None
    outcome_unknown: bool = False
    manual_wait_s: float | None = None
    approved_by: str | None = None  # user@host of the approver
    approved_via: str | None = None  # "--yes" or "terminal"
    approval_comment: str | None = None
    prompt: str | None = None
    declined_by: str | None = None  # user@host of the operator who declined the gate
    declined_via: str | None = None  # how: "terminal", ...
    decline_comment: str | None = None
    value: Any = None
    message: str | None = None
    hosts: list[HostRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "start_offset_s": self.start_offset_s,
            "attempts": self.attempts,
            "needs": self.needs,
            "undo_of": self.undo_of,
            "wave": self.wave,
            "error": self.error,
            "carried_from": self.carried_from,
            "outcome_unknown": self.outcome_unknown,
            "manual_wait_s": self.manual_wait_s,
            "approved_by": self.approved_by,
            "value": self.value,
            "message": self.message,
            "hosts": [h.to_dict() for h in self.hosts],
        }
        if self.prompt is not None:
            doc["prompt"] = self.prompt
        if self.approved_via is not None:
            doc["approved_via"] = self.approved_via
            doc["approval_comment"] = self.approval_comment
        if self.declined_by is not None:
            doc["declined_by"] = self.declined_by
            doc["declined_via"] = self.declined_via
            doc["decline_comment"] = self.decline_comment
        return doc


@dataclass
class RtoRecord:
    """The measured RTO against its target (and, for a resumed run, end to end)."""

    measured_s: float | None = None
    target_s: float | None = None
    met: bool | None = None
    start_step: str | None = None
    predicted_s: float | None = None
    end_to_end_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "measured_s": self.measured_s,
            "target_s": self.target_s,
            "met": self.met,
            "start_step": self.start_step,
            "predicted_s": self.predicted_s,
        }
        if self.end_to_end_s is not None:
            doc["end_to_end_s"] = self.end_to_end_s
        return doc

    def headline(self, parent_run: str | None = None) -> str | None:
        """The RTO in one phrase, the figure the business saw first: for a resumed run the RTO
        end to end (from the original run's start), then this run's own part; None when no RTO
        was measured."""
        from orchestrator.model.units import format_duration

        if self.measured_s is None:
            return None
        if self.end_to_end_s is not None:
            since = f" from the start of {parent_run}" if parent_run else ""
            text = f"measured RTO {format_duration(self.end_to_end_s)} end to end{since}"
        else:
            text = f"measured RTO {format_duration(self.measured_s)}"
        if self.target_s is not None:
            text += f" (target {format_duration(self.target_s)}: "
            text += "met)" if self.met else "MISSED)"
        if self.end_to_end_s is not None:
            text += f"; the resumed part {format_duration(self.measured_s)}"
        return text


@dataclass
class ReprotectRecord:
    """The reprotect phase of a mirrored failback (or a reprotect run): its steps and how long
    they took, from the first start to the last end — time outside the failback's RTO. A phase
    carried from an earlier ``drx reprotect`` names that run and took no time here."""

    steps: list[str] = field(default_factory=list)
    duration_s: float | None = None
    carried_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "duration_s": self.duration_s,
            "carried_from": self.carried_from,
        }


@dataclass
class RpoGuardRecord:
    """What the RPO guard (runbook ``rpo_guard: true``) did: not tripped; tripped and refused
    (``blocked``: the steps that never started); or tripped and accepted by the operator with
    --accept-data-loss (``accepted_loss``: the data given up, in the RPO's unit)."""

    tripped: bool = False
    accepted: bool = False
    blocked: list[str] = field(default_factory=list)
    accepted_loss: float | None = None
    message: str | None = None

    def to_dict(self, unit: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "tripped": self.tripped,
            "accepted": self.accepted,
            "blocked": list(self.blocked),
            "message": self.message,
        }
        if self.accepted:
            doc[f"accepted_loss_{unit}"] = self.accepted_loss
        return doc


@dataclass
class RpoRecord:
    """The measured RPO: seconds, or bytes when the runbook's ``rpo_target`` is a size."""

    measured: float | None = None
    target: float | None = None
    met: bool | None = None
    step: str | None = None
    in_bytes: bool = False
    guard: RpoGuardRecord | None = None  # None: the runbook sets no rpo_guard

    def to_dict(self) -> dict[str, Any]:
        unit = "bytes" if self.in_bytes else "s"
        doc: dict[str, Any] = {
            f"measured_{unit}": self.measured,
            f"target_{unit}": self.target,
            "met": self.met,
            "step": self.step,
        }
        if self.guard is not None:
            doc["guard"] = self.guard.to_dict(unit)
        return doc


@dataclass
class HealthRecord:
    """Health at the site the run moved to."""

    held_at: str | None = None
    polls: int = 0
    held_offset_s: float | None = None
    duration_s: float | None = None
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "held_at": self.held_at,
            "polls": self.polls,
            "held_offset_s": self.held_offset_s,
            "duration_s": self.duration_s,
            "timed_out": self.timed_out,
        }


@dataclass
class ProbeRecord:
    """A probe over the run: its polls, down windows (offsets from the run's start) and
    whether a window outlasted ``max_down``."""

    name: str
    polls: int = 0
    failed_polls: int = 0
    down_s: float = 0.0
    longest_down_s: float = 0.0
    windows: list[list[float | None]] = field(default_factory=list)
    breached: bool = False
    max_down_s: float | None = None
    interval_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "polls": self.polls,
            "failed_polls": self.failed_polls,
            "down_s": self.down_s,
            "longest_down_s": self.longest_down_s,
            "windows": [list(w) for w in self.windows],
            "breached": self.breached,
            "max_down_s": self.max_down_s,
            "interval_s": self.interval_s,
        }


@dataclass
class RunSummary:
    """A run: who, what, how it ended, its RTO and RPO, and every step."""

    run_id: str
    runbook: str
    direction: str
    source: str
    target: str
    status: str
    started_at: str | None = None
    finished_at: str | None = None
    parent_run: str | None = None
    #: the run this one continues (``drx resume``), and the failover a failback reverses
    resumes: str | None = None
    reverses: str | None = None
    emergency: bool = False
    rto: RtoRecord = field(default_factory=RtoRecord)
    rpo: RpoRecord | None = None
    manual_wait_s: float | None = None
    critical_path: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    health: HealthRecord | None = None
    exit_code: int | None = None
    yes: bool = False
    runbook_file: str | None = None
    inventory_file: str | None = None
    runbook_sha256: str | None = None  # of the files as they were when the run started
    inventory_sha256: str | None = None
    runbook_description: str | None = None  # the runbook's one-line description
    rto_started_at: str | None = None
    moves_to: str | None = None
    message: str | None = None
    #: a failback's mode: ``undo`` (source/target are the failover's) or ``mirror`` (the
    #: runbook's steps from the failover's target back to its source); None for other runs
    failback_mode: str | None = None
    reprotect: ReprotectRecord | None = None
    #: runs that reversed / continued this one (filled in when runs are listed together)
    failed_back_by: list[str] = field(default_factory=list)
    resumed_by: list[str] = field(default_factory=list)
    #: every host of the inventory when the run started: name, site, address, port and the
    #: host key it presented (null when not connected)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    #: a run still running, read back: elapsed so far and its projected RTO
    progress: Progress | None = None
    mode: str = "real"  # "drill": a leg (or rollback) of drx drill
    drill_id: str | None = None  # the drill's failover leg, on both legs
    rollback: bool = False  # a failback that rolled back a failed or cancelled failover
    rolled_back_by: str | None = None  # of a failover: the rollback that reversed it
    probes: list[ProbeRecord] = field(default_factory=list)
    #: a site plan's children: id, runbook, status, rto, rpo (record/children.py)
    children: list[dict[str, Any]] = field(default_factory=list)

    @property
    def site(self) -> str:
        """The site this run moves the service to."""
        if self.moves_to:
            return self.moves_to
        return self.target if self.direction == "failover" else self.source

    @property
    def step_by_id(self) -> dict[str, StepRecord]:
        return {s.id: s for s in self.steps}

    @paused_gc()
    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "run_id": self.run_id,
            "runbook": self.runbook,
            "direction": self.direction,
            "source": self.source,
            "target": self.target,
            "parent_run": self.parent_run,
            "resumes": self.resumes,
            "reverses": self.reverses,
            "status": self.status,
            "emergency": self.emergency,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "rto": self.rto.to_dict(),
            "rpo": self.rpo.to_dict() if self.rpo else None,
            "manual_wait_s": self.manual_wait_s,
            "critical_path": self.critical_path,
            "steps": [s.to_dict() for s in self.steps],
            "health": self.health.to_dict() if self.health else None,
            "exit_code": self.exit_code,
            "yes": self.yes,
            "runbook_file": self.runbook_file,
            "inventory_file": self.inventory_file,
            "runbook_sha256": self.runbook_sha256,
            "inventory_sha256": self.inventory_sha256,
            "runbook_description": self.runbook_description,
            "rto_started_at": self.rto_started_at,
            "moves_to": self.moves_to,
            "failback_mode": self.failback_mode,
            "reprotect": self.reprotect.to_dict() if self.reprotect else None,
        }
        if self.message:
            doc["message"] = self.message
        doc["mode"] = self.mode
        doc["drill_id"] = self.drill_id
        doc["rollback"] = self.rollback
        doc["rolled_back_by"] = self.rolled_back_by
        doc["probes"] = [p.to_dict() for p in self.probes]
        if self.failed_back_by:
            doc["failed_back_by"] = self.failed_back_by
        if self.resumed_by:
            doc["resumed_by_runs"] = self.resumed_by
        doc["hosts"] = self.hosts
        if self.progress is not None:
            doc["progress"] = self.progress.to_dict()
        if self.children:
            doc["children"] = self.children
        return doc

    @classmethod
    @paused_gc()
    def from_dict(cls, doc: Mapping[str, Any]) -> RunSummary:
        """Read a summary document back; missing or mistyped fields take their defaults."""
        return _read_run(doc)


# -- reading a document back ------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _strs(value: Any) -> list[str]:
    return [v for v in _list(value) if isinstance(v, str)]


def _read_attempt(d: Mapping[str, Any]) -> AttemptRecord:
    return AttemptRecord(
        n=_int(d.get("n")) or 0,
        started_at=_str(d.get("started_at")),
        finished_at=_str(d.get("finished_at")),
        start_offset_s=_num(d.get("start_offset_s")),
        duration_s=_num(d.get("duration_s")),
        rc=_int(d.get("rc")),
        error=_str(d.get("error")),
        polls=[
            PollRecord(_num(p.get("start_offset_s")), _num(p.get("duration_s")), p.get("ok"))
            for p in map(_map, _list(d.get("polls")))
        ],
    )


def _read_host(d: Mapping[str, Any]) -> HostRecord:
    return HostRecord(
        host=str(d.get("host", "")),
        status=_str(d.get("status")) or "unknown",
        rc=_int(d.get("rc")),
        duration_s=_num(d.get("duration_s")),
        output_tail=str(d.get("output_tail") or ""),
        error=_str(d.get("error")),
        value=d.get("value"),
        attempts=[_read_attempt(_map(a)) for a in _list(d.get("attempts"))],
        command=_str(d.get("command")),
        reattached=d.get("reattached") is True,
        output_cut=_int(d.get("output_cut")),
    )


def _read_step(d: Mapping[str, Any]) -> StepRecord:
    sid = str(d.get("id", ""))
    return StepRecord(
        id=sid,
        name=_str(d.get("name")) or sid,
        kind=_str(d.get("kind")) or "command",
        status=_str(d.get("status")) or "not_run",
        started_at=_str(d.get("started_at")),
        finished_at=_str(d.get("finished_at")),
        duration_s=_num(d.get("duration_s")),
        start_offset_s=_num(d.get("start_offset_s")),
        attempts=_int(d.get("attempts")) or 0,
        needs=_strs(d.get("needs")),
        undo_of=_str(d.get("undo_of")),
        wave=_int(d.get("wave")),
        error=_str(d.get("error")),
        carried_from=_str(d.get("carried_from")),
        outcome_unknown=d.get("outcome_unknown") is True,
        manual_wait_s=_num(d.get("manual_wait_s")),
        approved_by=_str(d.get("approved_by")),
        approved_via=_str(d.get("approved_via")),
        approval_comment=_str(d.get("approval_comment")),
        prompt=_str(d.get("prompt")),
        declined_by=_str(d.get("declined_by")),
        declined_via=_str(d.get("declined_via")),
        decline_comment=_str(d.get("decline_comment")),
        value=d.get("value"),
        message=_str(d.get("message")),
        hosts=[_read_host(_map(h)) for h in _list(d.get("hosts"))],
    )


def _read_guard(doc: Any, unit: str) -> RpoGuardRecord | None:
    if not isinstance(doc, Mapping):
        return None
    return RpoGuardRecord(
        tripped=doc.get("tripped") is True,
        accepted=doc.get("accepted") is True,
        blocked=[str(s) for s in _list(doc.get("blocked"))],
        accepted_loss=_num(doc.get(f"accepted_loss_{unit}")),
        message=_str(doc.get("message")),
    )


def _read_run(d: Mapping[str, Any]) -> RunSummary:
    rto = _map(d.get("rto"))
    rpo_doc = d.get("rpo")
    rpo = None
    if isinstance(rpo_doc, Mapping):
        in_bytes = "measured_bytes" in rpo_doc or "target_bytes" in rpo_doc
        unit = "bytes" if in_bytes else "s"
        rpo = RpoRecord(
            measured=_num(rpo_doc.get(f"measured_{unit}")),
            target=_num(rpo_doc.get(f"target_{unit}")),
            met=rpo_doc.get("met") if isinstance(rpo_doc.get("met"), bool) else None,
            step=_str(rpo_doc.get("step")),
            in_bytes=in_bytes,
            guard=_read_guard(rpo_doc.get("guard"), unit),
        )
    health_doc = d.get("health")
    health = None
    if isinstance(health_doc, Mapping):
        health = HealthRecord(
            held_at=_str(health_doc.get("held_at")),
            polls=_int(health_doc.get("polls")) or 0,
            held_offset_s=_num(health_doc.get("held_offset_s")),
            duration_s=_num(health_doc.get("duration_s")),
            timed_out=health_doc.get("timed_out") is True,
        )
    return RunSummary(
        run_id=str(d.get("run_id", "")),
        runbook=str(d.get("runbook", "")),
        direction=str(d.get("direction", "")),
        source=str(d.get("source", "")),
        target=str(d.get("target", "")),
        status=_str(d.get("status")) or "crashed",
        started_at=_str(d.get("started_at")),
        finished_at=_str(d.get("finished_at")),
        parent_run=_str(d.get("parent_run")),
        resumes=_str(d.get("resumes")),
        reverses=_str(d.get("reverses")),
        emergency=d.get("emergency") is True,
        rto=RtoRecord(
            measured_s=_num(rto.get("measured_s")),
            target_s=_num(rto.get("target_s")),
            met=rto.get("met") if isinstance(rto.get("met"), bool) else None,
            start_step=_str(rto.get("start_step")),
            predicted_s=_num(rto.get("predicted_s")),
            end_to_end_s=_num(rto.get("end_to_end_s")),
        ),
        rpo=rpo,
        manual_wait_s=_num(d.get("manual_wait_s")),
        critical_path=_strs(d.get("critical_path")),
        steps=[_read_step(_map(s)) for s in _list(d.get("steps"))],
        health=health,
        exit_code=_int(d.get("exit_code")),
        yes=d.get("yes") is True,
        runbook_file=_str(d.get("runbook_file")),
        inventory_file=_str(d.get("inventory_file")),
        runbook_sha256=_str(d.get("runbook_sha256")),
        inventory_sha256=_str(d.get("inventory_sha256")),
        hosts=[dict(_map(h)) for h in _list(d.get("hosts")) if isinstance(h, Mapping)],
        runbook_description=_str(d.get("runbook_description")),
        rto_started_at=_str(d.get("rto_started_at")),
        children=[dict(c) for c in _list(d.get("children")) if isinstance(c, Mapping)],
        moves_to=_str(d.get("moves_to")),
        message=_str(d.get("message")),
        progress=Progress.from_dict(_map(d["progress"])) if d.get("progress") else None,
        mode=_str(d.get("mode")) or "real",
        drill_id=_str(d.get("drill_id")),
        rollback=d.get("rollback") is True,
        rolled_back_by=_str(d.get("rolled_back_by")),
        probes=[_read_probe(_map(p)) for p in _list(d.get("probes"))],
        failback_mode=_str(d.get("failback_mode")),
        reprotect=_read_reprotect(d.get("reprotect")),
    )


def _read_probe(d: Mapping[str, Any]) -> ProbeRecord:
    return ProbeRecord(
        name=str(d.get("name", "")),
        polls=_int(d.get("polls")) or 0,
        failed_polls=_int(d.get("failed_polls")) or 0,
        down_s=_num(d.get("down_s")) or 0.0,
        longest_down_s=_num(d.get("longest_down_s")) or 0.0,
        windows=[[_num(x) for x in _list(w)] for w in _list(d.get("windows"))],
        breached=d.get("breached") is True,
        max_down_s=_num(d.get("max_down_s")),
        interval_s=_num(d.get("interval_s")),
    )


# -- building from the journal ----------------------------------------------------------------


@dataclass
class _StepTimes:
    """Monotonic offsets of one step, kept beside its record while the journal is read."""

    record: StepRecord
    t0: float | None = None
    t1: float | None = None
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    attempt_t0: dict[int, float] = field(default_factory=dict)  # id(attempt) -> offset
    poll_t: dict[int, float] = field(default_factory=dict)  # id(poll) -> offset


class _Builder:
    """Reads a journal's events in order, one handler per event kind."""

    def __init__(self, start: Mapping[str, Any]) -> None:
        self.start = start
        self.steps: dict[str, _StepTimes] = {}
        for m in start.get("steps", []):
            record = StepRecord(
                id=m["id"],
                name=m.get("name", m["id"]),
                kind=m.get("kind", "command"),
                needs=list(m.get("needs", [])),
                undo_of=m.get("undo_of"),
                wave=m.get("wave"),
            )
            self.steps[m["id"]] = _StepTimes(record)
        self.host_order = {h: i for i, h in enumerate(start.get("host_order", []))}
        self.health_polls = 0
        self.health_held: Mapping[str, Any] | None = None
        self.health_timed_out = False
        self.health_started_t: float | None = None
        self.steps_done_t: float | None = None
        self.finished: Mapping[str, Any] | None = None
        self.manual_wait = 0.0
        self.guard: Mapping[str, Any] | None = None  # the rpo_guard event, if it tripped
        self.probe_polls: dict[str, list[Mapping[str, Any]]] = {}
        self.probe_breached: set[str] = set()
        self.handlers: dict[str, Callable[[Mapping[str, Any], _StepTimes | None], None]] = {
            Event.STEP_STARTED: self._step_started,
            Event.STEP_FINISHED: self._step_finished,
            Event.STEP_CARRIED: self._step_carried,
            Event.HOST_STARTED: self._host_started,
            Event.POLL: self._poll,
            Event.HOST_FINISHED: self._host_finished,
            Event.GATE_WAITING: self._gate_waiting,
            Event.GATE_ANSWERED: self._gate_answered,
            Event.STEPS_DONE: self._steps_done,
            Event.HEALTH_POLLING: self._health_polling,
            Event.HEALTH_HELD: self._health_held,
            Event.HEALTH_TIMEOUT: self._health_timeout,
            Event.RUN_FINISHED: self._run_finished,
            Event.RPO_GUARD: self._rpo_guard,
            Event.PROBE_POLL: self._probe_poll,
            Event.PROBE_BREACHED: self._probe_breached,
        }

    def read(self, e: Mapping[str, Any]) -> None:
        handler = self.handlers.get(e["event"])
        if handler is not None:
            sid = e.get("step")
            handler(e, self.steps.get(sid) if sid else None)

    def _rpo_guard(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        self.guard = e

    def _probe_poll(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        self.probe_polls.setdefault(str(e.get("probe")), []).append(e)

    def _probe_breached(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        self.probe_breached.add(str(e.get("probe")))

    # -- steps and hosts
    def _step_started(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        if st is not None:
            st.t0, st.record.started_at, st.record.status = e["t"], e["ts"], "unknown"

    def _step_finished(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        if st is None:
            return
        rec = st.record
        st.t1, rec.finished_at, rec.status = e["t"], e["ts"], e["status"]
        rec.error = e.get("error") if e.get("error") is not None else rec.error
        rec.value = e.get("value") if e.get("value") is not None else rec.value
        rec.message = e.get("message") if e.get("message") is not None else rec.message
        rec.attempts = max(rec.attempts, e.get("attempts") or 0)
        rec.outcome_unknown = bool(e.get("outcome_unknown"))

    def _step_carried(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        if st is None:
            return
        rec = st.record
        rec.status, rec.carried_from, rec.value = "succeeded", e.get("from_run"), e.get("value")
        rec.attempts = e.get("attempts", 0)
        approval = e.get("approval") or {}  # a gate keeps its original approval on resume
        rec.approved_by = approval.get("by")
        rec.approved_via = approval.get("via")
        rec.approval_comment = approval.get("comment")
        for h in e.get("hosts", []):
            st.hosts[h["host"]] = HostRecord(
                host=h["host"],
                status="succeeded",
                rc=h.get("rc"),
                duration_s=h.get("duration_s"),
                output_tail=h.get("output_tail", ""),
            )

    def _host_started(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        if st is None:
            return
        host = st.hosts.setdefault(e["host"], HostRecord(host=e["host"]))
        host.status = "unknown"
        attempt = AttemptRecord(n=e.get("attempt", len(host.attempts) + 1), started_at=e["ts"])
        host.attempts.append(attempt)
        st.attempt_t0[id(attempt)] = e["t"]

    def _poll(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        sid = e.get("step")
        if sid and sid.startswith("health:"):
            self.health_polls += 1
            return
        if st is None:
            return
        host = st.hosts.get(e["host"])
        if host and host.attempts and len(host.attempts[-1].polls) < POLLS_IN_SUMMARY:
            poll = PollRecord(None, e.get("duration_s"), e.get("ok"))
            host.attempts[-1].polls.append(poll)
            st.poll_t[id(poll)] = e["t"]

    def _host_finished(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        host = st.hosts.get(e["host"]) if st is not None else None
        if host is None or not host.attempts:
            return
        attempt = host.attempts[-1]
        attempt.finished_at, attempt.duration_s = e["ts"], e.get("duration_s")
        attempt.rc, attempt.error = e.get("rc"), e.get("error")
        host.rc, host.error, host.status = e.get("rc"), e.get("error"), e.get("status") or "unknown"
        host.output_tail = e.get("output_tail", "")
        host.command = e.get("command") or host.command
        host.output_cut = e.get("output_cut")
        host.duration_s = _r(sum(a.duration_s for a in host.attempts if a.duration_s is not None))
        host.value = e.get("value")
        host.reattached = e.get("reattached") is True

    # -- gates
    def _gate_waiting(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        if st is not None:
            st.record.prompt = e.get("prompt")

    def _gate_answered(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        if st is None:
            return
        waited = float(e.get("waited_s") or 0.0)
        self.manual_wait += waited
        st.record.manual_wait_s = _r(waited)
        approved = bool(e.get("approved"))
        st.record.approved_by = e.get("by") if approved else None
        st.record.approved_via = e.get("via") if approved else None
        st.record.approval_comment = e.get("comment") if approved else None
        if not approved and e.get("by"):
            st.record.declined_by = e.get("by")
            st.record.declined_via = e.get("via")
            st.record.decline_comment = e.get("comment")

    # -- the end of the run
    def _steps_done(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        self.steps_done_t = e["t"]

    def _health_polling(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        self.health_started_t = e["t"]

    def _health_held(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        self.health_held = e

    def _health_timeout(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        self.health_timed_out = True

    def _run_finished(self, e: Mapping[str, Any], st: _StepTimes | None) -> None:
        self.finished = e


@paused_gc()
def build_summary(events: list[dict[str, Any]]) -> RunSummary:
    """The summary of the run journaled by ``events``."""
    if not events or events[0]["event"] != Event.RUN_STARTED:
        raise ValueError("journal does not start with run_started")
    start = events[0]
    b = _Builder(start)
    for e in events:
        b.read(e)
    t_start, start_step = _rto_start(start, b.steps)
    _place_in_time(b, t_start)
    status = b.finished["status"] if b.finished else "crashed"
    t_end = _rto_end(b, status)
    summary = RunSummary(
        run_id=start["run_id"],
        runbook=start["runbook"],
        direction=start["direction"],
        source=start["source"],
        target=start["target"],
        parent_run=start.get("parent_run"),
        resumes=start.get("resumes"),
        reverses=start.get("reverses"),
        status=status,
        emergency=bool(start.get("emergency")),
        started_at=start["ts"],
        finished_at=b.finished["ts"] if b.finished else events[-1]["ts"],
        rto=_rto(start, t_start, t_end, start_step),
        rpo=_rpo(start, b.steps, b.guard),
        manual_wait_s=_r(b.manual_wait),
        critical_path=_critical_path(b.steps),
        steps=[st.record for st in b.steps.values()],
        health=_health(start, b, t_start),
        exit_code=b.finished.get("exit_code") if b.finished else None,
        yes=bool(start.get("yes")),
        runbook_file=start.get("runbook_file"),
        inventory_file=start.get("inventory_file"),
        runbook_sha256=start.get("runbook_sha256"),
        inventory_sha256=start.get("inventory_sha256"),
        hosts=list(start.get("hosts") or []),
        runbook_description=start.get("runbook_description"),
        rto_started_at=_wall(start, t_start) if t_start is not None else None,
        moves_to=start.get("moves_to"),
        message=(b.finished.get("message") or None) if b.finished else None,
        mode=start.get("mode") or "real",
        drill_id=start.get("drill_id"),
        rollback=bool(start.get("rollback")),
        probes=probe_records(start, b.probe_polls, b.probe_breached, events[-1]["t"]),
        children=child_records(start, b.steps),
        failback_mode=start.get("failback_mode"),
        reprotect=_reprotect(start, b.steps),
    )
    return summary


def probe_records(
    start: Mapping[str, Any],
    polls: Mapping[str, list[Mapping[str, Any]]],
    breached: set[str],
    t_end: float,
) -> list[ProbeRecord]:
    """Each probe's figures from its polls: it is down from its first failing poll (on any of
    its hosts) to the next poll after which every host passes; a window still open at the end
    of the run has no end (null) and counts until then."""
    records = []
    for meta in start.get("probes") or []:
        name = str(meta.get("name"))
        mine = sorted(polls.get(name, []), key=lambda e: float(e["t"]))
        down_hosts: set[str] = set()
        windows: list[list[float | None]] = []
        since: float | None = None
        for e in mine:
            if e.get("ok"):
                down_hosts.discard(str(e.get("host")))
            else:
                down_hosts.add(str(e.get("host")))
            if down_hosts and since is None:
                since = float(e["t"])
            elif not down_hosts and since is not None:
                windows.append([round(since, 3), round(float(e["t"]), 3)])
                since = None
        if since is not None:
            windows.append([round(since, 3), None])
        lengths = [(w[1] if w[1] is not None else t_end) - (w[0] or 0.0) for w in windows]
        records.append(
            ProbeRecord(
                name=name,
                polls=len(mine),
                failed_polls=sum(1 for e in mine if not e.get("ok")),
                down_s=round(sum(lengths), 3),
                longest_down_s=round(max(lengths, default=0.0), 3),
                windows=windows,
                breached=name in breached,
                max_down_s=meta.get("max_down_s"),
                interval_s=meta.get("interval_s"),
            )
        )
    return records


def _reprotect(start: Mapping[str, Any], steps: Mapping[str, _StepTimes]) -> ReprotectRecord | None:
    ids = [s for s in start.get("reprotect_steps") or () if s in steps]
    if not ids:
        return None
    phase = [steps[s] for s in ids]
    t0 = [st.t0 for st in phase if st.t0 is not None]
    t1 = [st.t1 for st in phase if st.t1 is not None]
    carried = {st.record.carried_from for st in phase}
    return ReprotectRecord(
        steps=ids,
        duration_s=_r(max(t1) - min(t0)) if t0 and t1 else None,
        carried_from=carried.pop() if len(carried) == 1 else None,
    )


def _read_reprotect(raw: Any) -> ReprotectRecord | None:
    doc = _map(raw)
    if not doc:
        return None
    return ReprotectRecord(
        steps=_strs(doc.get("steps")),
        duration_s=_num(doc.get("duration_s")),
        carried_from=_str(doc.get("carried_from")),
    )


def _rto_start(
    start: Mapping[str, Any], steps: Mapping[str, _StepTimes]
) -> tuple[float | None, str | None]:
    """Where the RTO starts: ``rto_start``'s start, else the first step that started (not
    counting a mirrored failback's reprotect phase, which runs while the service is up)."""
    named = steps.get(start.get("rto_start") or "")
    if named is not None and named.t0 is not None:
        return named.t0, named.record.id
    phase = set(start.get("reprotect_steps") or ())
    if phase and start.get("direction") != "reprotect":
        steps = {k: st for k, st in steps.items() if k not in phase}
    started = [st for st in steps.values() if st.t0 is not None]
    if not started:
        return None, None
    first = min(started, key=lambda st: st.t0 or 0.0)
    return first.t0, first.record.id


def _place_in_time(b: _Builder, t_start: float | None) -> None:
    """Offsets from the RTO start, durations, hosts in inventory order, attempts counted."""
    for st in b.steps.values():
        rec = st.record
        if st.t0 is not None and t_start is not None:
            rec.start_offset_s = _r(st.t0 - t_start)
        if st.t0 is not None and st.t1 is not None:
            rec.duration_s = _r(st.t1 - st.t0)
        rec.hosts = sorted(st.hosts.values(), key=lambda h: b.host_order.get(h.host, 10**9))
        if t_start is not None:
            for h in rec.hosts:
                for a in h.attempts:
                    a.start_offset_s = _r(st.attempt_t0[id(a)] - t_start)
                    for p in a.polls:
                        p.start_offset_s = _r(st.poll_t[id(p)] - t_start)
        if rec.kind in ("command", "check") and rec.status not in ("not_run", "skipped"):
            rec.attempts = max([rec.attempts, *(len(h.attempts) for h in rec.hosts)])


def _rto_end(b: _Builder, status: str) -> float | None:
    """The end of the RTO: health first holding, else (no health) the end of the last step."""
    if not (status == "succeeded" or (b.finished and b.finished.get("rto_reached"))):
        return None
    if b.health_held is not None:
        return float(b.health_held["t"])
    if b.steps_done_t is None:
        return None
    ends = [st.t1 for st in b.steps.values() if st.t0 is not None and st.t1 is not None]
    return max(ends, default=b.steps_done_t)


def _rto(
    start: Mapping[str, Any], t_start: float | None, t_end: float | None, start_step: str | None
) -> RtoRecord:
    measured = _r(t_end - t_start) if t_end is not None and t_start is not None else None
    if t_end is not None and t_start is None:
        measured = 0.0
    target = start.get("rto_target_s")
    rto = RtoRecord(
        measured_s=measured,
        target_s=target,
        met=(measured <= target) if measured is not None and target is not None else None,
        start_step=start_step,
        predicted_s=start.get("predicted_rto_s"),
    )
    if start.get("parent_start_wall") is not None and t_end is not None:
        rto.end_to_end_s = _r(start["wall0"] + t_end - start["parent_start_wall"])
        if target is not None:  # a resumed run: the outage lasted from the original start
            rto.met = rto.end_to_end_s <= target
    return rto


def _health(start: Mapping[str, Any], b: _Builder, t_start: float | None) -> HealthRecord | None:
    if not start.get("health_names"):
        return None
    held = b.health_held
    base = b.health_started_t if b.health_started_t is not None else b.steps_done_t
    return HealthRecord(
        held_at=held["ts"] if held else None,
        polls=b.health_polls,
        held_offset_s=_r(held["t"] - t_start) if held and t_start is not None else None,
        duration_s=_r(held["t"] - base) if held and base is not None else None,
        timed_out=b.health_timed_out,
    )


def _wall(start: Mapping[str, Any], t: float) -> str:
    from orchestrator.record.journal import utc_iso

    return utc_iso(start["wall0"] + t)


def _rpo(
    start: Mapping[str, Any], steps: Mapping[str, _StepTimes], guard: Mapping[str, Any] | None
) -> RpoRecord | None:
    name = start.get("rpo_step")
    if not name:  # nothing measures it (no rpo_step; a failback without one): not measured
        return None
    value = None
    st = steps.get(name) if name else None
    if st is not None:
        value = st.record.value
        if value is None:  # the last value seen while polling, even if the check never held
            for h in st.hosts.values():
                if h.value is not None:
                    value = h.value
    measured = (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    )
    target = start.get("rpo_target")
    met = measured <= target if measured is not None and target is not None else None
    record = RpoRecord(measured, target, met, name, in_bytes=bool(start.get("rpo_is_bytes")))
    if start.get("rpo_guard"):
        record.guard = RpoGuardRecord()
        if guard is not None:
            accepted = bool(guard.get("accepted"))
            record.guard = RpoGuardRecord(
                tripped=True,
                accepted=accepted,
                blocked=[] if accepted else list(guard.get("blocked") or []),
                accepted_loss=guard.get("measured") if accepted else None,
                message=guard.get("message"),
            )
    return record


def _critical_path(steps: Mapping[str, _StepTimes]) -> list[str]:
    """From the step that finished last, repeatedly step back to the need that finished last."""
    timed = {sid: st for sid, st in steps.items() if st.t1 is not None}
    if not timed:
        return []
    current = max(timed.values(), key=lambda st: st.t1 or 0.0)
    path = [current.record.id]
    while True:
        needs = [timed[n] for n in current.record.needs if n in timed]
        if not needs:
            break
        current = max(needs, key=lambda st: st.t1 or 0.0)
        path.append(current.record.id)
    path.reverse()
    return path
