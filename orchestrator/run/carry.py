"""Steps a new run takes over, done, from an earlier run: a mirrored failback carries the
reprotect phase a ``drx reprotect`` of the same failover already ran."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestrator.record.events import JournalEvent, StepCarried
from orchestrator.record.outcomes import Status, StepOutcome
from orchestrator.record.runs import approvals_from_events, outcomes_from_events

if TYPE_CHECKING:
    from orchestrator.plan.build import Plan
    from orchestrator.record.store import Store


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


def reprotect_carried(store: Store, plan: Plan) -> tuple[dict[str, StepOutcome], list[StepCarried]]:
    """A mirrored failback's reprotect steps that a succeeded ``drx reprotect`` of the same
    failover already ran: carried, not run again."""
    from orchestrator.plan.failback import reprotect_to_carry
    from orchestrator.record.runs import load_summaries

    phase = [sid for sid, ps in plan.steps.items() if ps.phase == "reprotect"]
    if not phase or plan.reverses is None:
        return {}, []
    done = reprotect_to_carry(load_summaries(store), plan.reverses)
    if done is None:
        return {}, []
    return carried_steps(store.read_events(done), phase, done)
