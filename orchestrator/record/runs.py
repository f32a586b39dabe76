"""Reading runs back from the store: summaries (or, for a run whose controller died,
a summary reconstructed from its journal), and the queries failback/resume/report need."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import JournalError, RefusedError, UsageError
from orchestrator.record.events import JournalEvent, RunStarted
from orchestrator.record.fold import RUNNING, WAITING, RunState, StepState
from orchestrator.record.outcomes import HostOutcome, Status, StepOutcome
from orchestrator.record.store import PlanRecord, Store
from orchestrator.record.summary import RunSummary, build_summary
from orchestrator.vocab import Direction, RunStatus, StepStatus


def load_summary(store: Store, run_id: str) -> RunSummary:
    """A run's summary: summary.json, else rebuilt from its journal (status ``crashed``)."""
    stored = store.read_summary(run_id)
    if stored is not None:
        return stored
    events = store.read_events(run_id)
    try:
        summary = build_summary(events)
    except (ValueError, KeyError) as exc:
        raise JournalError(f"run {run_id}: journal cannot be read back: {exc}") from exc
    holder = store.lock_holder()
    if holder is not None and holder.split()[0] == run_id:
        running(summary, store.read_plan(run_id))  # not crashed: its controller holds the lock
    return summary


def running(summary: RunSummary, plan: PlanRecord | None) -> None:
    """Mark a summary rebuilt from a live run's journal as running: its steps under way are
    running (not of unknown outcome), it has not finished, and its progress is as of now."""
    import time

    from orchestrator.record.progress import progress

    summary.status = RunStatus.RUNNING
    summary.finished_at = None
    for step in summary.steps:
        if step.status == StepStatus.UNKNOWN:
            step.status = StepStatus.RUNNING
            for host in step.hosts:
                host.status = (
                    StepStatus.RUNNING if host.status == StepStatus.UNKNOWN else host.status
                )
    summary.progress = progress(
        summary.started_at,
        summary.rto_started_at,
        {s.id: (s.status, s.started_at) for s in summary.steps},
        plan,
        time.time(),
    )


def load_summaries(store: Store) -> list[RunSummary]:
    """Every readable run's summary, oldest first; links (failed back, resumed) filled in."""
    summaries = []
    for run_id in store.run_ids():
        try:
            summaries.append(load_summary(store, run_id))
        except JournalError:
            continue
    by_id = {s.run_id: s for s in summaries}
    for s in summaries:
        resumes, reverses = continued(s, by_id), reversed_run(s, by_id)
        if resumes in by_id:
            by_id[resumes].resumed_by.append(s.run_id)
        elif reverses in by_id:
            by_id[reverses].failed_back_by.append(s.run_id)
            if s.rollback and by_id[reverses].rolled_back_by is None:
                by_id[reverses].rolled_back_by = s.run_id
    return summaries


def continued(s: RunSummary, by_id: Mapping[str, RunSummary]) -> str | None:
    """The run ``s`` continues (``drx resume``), if any. Runs recorded before ``resumes`` was
    journaled say so through ``parent_run``: a failover's parent is the run it resumes, and a
    failback whose parent is a failback resumes it."""
    if s.resumes is not None:
        return s.resumes
    parent = by_id.get(s.parent_run or "")
    if parent is None or s.reverses is not None:
        return None
    if s.direction == Direction.FAILOVER or parent.direction == Direction.FAILBACK:
        return parent.run_id
    return None


def reversed_run(s: RunSummary, by_id: Mapping[str, RunSummary]) -> str | None:
    """The failover run a failback reverses (for a resumed failback: the one it reversed)."""
    if s.direction != Direction.FAILBACK:
        return None
    if s.reverses is not None:
        return s.reverses
    if continued(s, by_id) is None:
        return s.parent_run
    parent = by_id.get(s.parent_run or "")
    return reversed_run(parent, by_id) if parent is not None else None


@dataclass
class Lineage:
    """How the runs of a state relate: which run continues which (a resume chain), and which
    failback reversed which failover — the questions resume and failback must answer before
    they act on the true state of the world."""

    by_id: dict[str, RunSummary]

    @classmethod
    def of(cls, summaries: list[RunSummary]) -> Lineage:
        return cls({s.run_id: s for s in summaries})

    def resumed_by(self, run_id: str) -> str | None:
        """The run that continued ``run_id`` (the first, if several)."""
        found = self.by_id[run_id].resumed_by if run_id in self.by_id else []
        return found[0] if found else None

    def chain(self, run_id: str) -> list[str]:
        """The resume chain ``run_id`` belongs to, from the original run to the latest."""
        root = run_id
        seen = {root}
        while (parent := continued(self.by_id[root], self.by_id)) in self.by_id:
            if parent in seen:
                break
            root = parent
            seen.add(root)
        out = [root]
        while (nxt := self.resumed_by(out[-1])) is not None and nxt not in out:
            out.append(nxt)
        return out

    def latest(self, run_id: str) -> str:
        """The latest run of ``run_id``'s resume chain: the one that holds the true state."""
        return self.chain(run_id)[-1]

    def failback_of(self, run_id: str) -> str | None:
        """The failback (the latest of its own resume chain) that reversed any run of
        ``run_id``'s resume chain, if any."""
        for rid in self.chain(run_id):
            for back in self.by_id[rid].failed_back_by:
                return self.latest(back)
        return None


def note_rolled_back(store: Store, failover_id: str, rollback_id: str) -> None:
    """Record in a failover's summary.json the rollback that reversed it (``rolled_back_by``);
    the store's lock is taken for the write, as for any summary."""
    summary = store.read_summary(failover_id)
    if summary is None:
        return  # a crashed failover: runs are linked when they are read back (load_summaries)
    summary.rolled_back_by = rollback_id
    try:
        with store.acquire(rollback_id) as lock:
            store.write_summary(failover_id, summary, lock)
    except RefusedError:
        return  # another run took the lock meanwhile: the link is made when runs are read


def resolve_run(store: Store, run_id: str | None) -> str:
    """A run id given in full or as a unique prefix/suffix; default the latest run."""
    ids = store.run_ids()
    if not ids:
        raise RefusedError(f"no runs in {store.location}")
    if run_id is None:
        return ids[-1]
    if run_id in ids:
        return run_id
    matches = [i for i in ids if i.startswith(run_id) or i.endswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no run '{run_id}' in {store.location}")
    raise UsageError(f"'{run_id}' matches several runs: {', '.join(matches)}")


def outcomes_from_events(events: Iterable[JournalEvent]) -> dict[str, StepOutcome]:
    """What each step of a run did, per host, from its journal: ``StepOutcome`` objects with the
    values and stdout tails later templates read. A step or host that started and never
    finished is ``unknown`` (the controller died while it ran)."""
    return {sid: step_outcome(st) for sid, st in RunState.of(events).steps.items()}


def step_outcome(st: StepState) -> StepOutcome:
    """A step of the folded journal as the outcome templates and resume read."""
    status = Status.UNKNOWN if st.status in (RUNNING, WAITING) else Status(st.status)
    out = StepOutcome(
        st.id,
        status,
        error=st.error,
        attempts=st.attempts,
        value=st.value,
        outcome_unknown=st.outcome_unknown,
        message=st.carried_from,
    )
    for name, h in st.hosts.items():
        out.hosts[name] = HostOutcome(
            name, Status(h.status), h.rc, h.error, h.stdout, h.value, h.attempt
        )
    return out


def approvals_from_events(events: Iterable[JournalEvent]) -> dict[str, dict[str, Any]]:
    """Who approved each gate of a run (``by``, ``via``, ``comment``), including approvals it
    carried from the run it resumed: a resumed run keeps the original approvals."""
    return {
        sid: dict(st.approval)
        for sid, st in RunState.of(events).steps.items()
        if st.approval is not None
    }


def run_start(events: Sequence[JournalEvent]) -> RunStarted:
    if not events or not isinstance(events[0], RunStarted):
        raise JournalError("journal does not start with run_started")
    return events[0]


def is_failed_back(summaries: list[RunSummary], run_id: str) -> bool:
    return Lineage.of(summaries).failback_of(run_id) is not None


def is_resumed(summaries: list[RunSummary], run_id: str) -> bool:
    return Lineage.of(summaries).resumed_by(run_id) is not None
