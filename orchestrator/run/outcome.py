"""What a finished run's outcome leaves the operator to decide: a failover that failed or was
cancelled after some of its steps changed things left the service between its sites, and only
a failback (undo them) or a resume (carry on) goes on from there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.vocab import Direction, RunStatus, StepStatus

if TYPE_CHECKING:
    from orchestrator.plan.build import Plan
    from orchestrator.record.summary import RunSummary


@dataclass(frozen=True)
class StoppedHalfWay:
    """A failover that stopped after ``changed`` steps (those with an undo) changed things."""

    run: RunSummary
    changed: tuple[str, ...]
    data_loss_refused: bool  # its RPO guard tripped and the loss was not accepted

    def advice(self, tail: str = "") -> str:
        """Where the service is and the exact commands that undo or carry on (``tail``: the
        options that name the same files and state)."""
        run = self.run
        changed = self.changed
        shown = ", ".join(changed[:6]) + (
            f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        )
        carry_on = f"  to carry on instead: drx resume {run.run_id}{tail}"
        if self.data_loss_refused:
            carry_on += " --accept-data-loss   (losing the data the RPO guard refused to lose)"
        return (
            f"the run stopped half-way: {len(changed)} step(s) had already changed things "
            f"({shown}), so the service is between {run.source} and {run.target}.\n"
            f"  to undo them:        drx failback --run {run.run_id}{tail}\n"
            f"{carry_on}"
        )


def stopped_half_way(plan: Plan, summary: RunSummary) -> StoppedHalfWay | None:
    """``summary``'s failover (of ``plan``) as one stopped half-way, if it is one: failed or
    cancelled after a step with an undo succeeded (on some host at least)."""
    if summary.direction != Direction.FAILOVER or summary.status not in (
        RunStatus.FAILED,
        RunStatus.CANCELLED,
    ):
        return None
    changed = tuple(
        s.id
        for s in summary.steps
        if s.id in plan.steps
        and plan.steps[s.id].step.undo is not None
        and (
            s.status == StepStatus.SUCCEEDED
            or any(h.status == StepStatus.SUCCEEDED for h in s.hosts)
        )
    )
    if not changed:
        return None
    guard = summary.rpo.guard if summary.rpo is not None else None
    refused = guard is not None and guard.tripped and not guard.accepted
    return StoppedHalfWay(summary, changed, data_loss_refused=refused)
