"""Steps a new run takes over, done, from an earlier run: a mirrored failback carries the
reprotect phase a ``drx reprotect`` of the same failover already ran."""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.record.events import JournalEvent, StepCarried
from orchestrator.record.outcomes import Status, StepOutcome
from orchestrator.record.runs import approvals_from_events, outcomes_from_events


def carried_steps(
    events: list[JournalEvent], step_ids: Iterable[str], from_run: str
) -> tuple[dict[str, StepOutcome], list[StepCarried]]:
    """The steps among ``step_ids`` that succeeded in the run whose journal is ``events``:
    their outcomes (their values feed templates) and the ``step_carried`` events that record
    them in the new run, each naming ``from_run``."""
    outcomes = outcomes_from_events(events)
    approvals = approvals_from_events(events)
    carried: dict[str, StepOutcome] = {}
    records: list[StepCarried] = []
    for sid in step_ids:
        o = outcomes.get(sid)
        if o is None or o.status is not Status.SUCCEEDED:
            continue
        carried[sid] = o
        records.append(
            StepCarried(
                step=sid,
                from_run=o.message or from_run,
                value=o.value,
                attempts=o.attempts,
                hosts=[
                    {"host": h.host, "rc": h.rc, "stdout": h.stdout, "value": h.value}
                    for h in o.hosts.values()
                ],
                approval=approvals.get(sid),
            )
        )
    return carried, records
