"""The RPO guard (runbook ``rpo_guard: true``; Patroni calls it ``maximum_lag_on_failover``).

When the ``rpo_step`` of a failover (or the ``failback_rpo_step`` of a failback) finishes, its
value is the RPO the run would cost. If
it exceeds ``rpo_target`` — or nothing was measured — no step that needs the ``rpo_step``
(transitively) may start: the run fails, saying measured against target. ``--accept-data-loss``
lets the run through, and the journal records that the operator accepted it, and how much.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.model.units import format_duration
from orchestrator.plan.build import Plan
from orchestrator.record.outcomes import Status, StepOutcome


@dataclass(frozen=True)
class RpoGuard:
    """What the guard compares: the rpo_step's value against the target (seconds or bytes)."""

    step: str
    target: float
    is_bytes: bool
    accept_data_loss: bool

    @classmethod
    def of(cls, plan: Plan, accept_data_loss: bool) -> RpoGuard | None:
        """The guard of a plan whose runbook sets ``rpo_guard`` and that measures an RPO: a
        failover (its rpo_step), or a failback that runs the runbook's failback_rpo_step."""
        rb = plan.runbook
        step = rb.rpo_step if plan.runs_forward else rb.failback_rpo_step
        if not rb.rpo_guard or step is None or rb.rpo_target is None or step not in plan.steps:
            return None
        return cls(step, rb.rpo_target, rb.rpo_is_bytes, accept_data_loss)

    def show(self, amount: float) -> str:
        if self.is_bytes:
            return f"{int(amount):,} B"
        return format_duration(amount)


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's decision on one measurement: ``tripped`` (over target, or unmeasured)."""

    measured: float | None
    tripped: bool
    accepted: bool
    blocked: tuple[str, ...]  # the steps that need the rpo_step, in declaration order
    message: str

    @property
    def refuses(self) -> bool:
        return self.tripped and not self.accepted


def judge(
    guard: RpoGuard, outcome: StepOutcome, plan: Plan, *, dependents_run: bool
) -> GuardVerdict | None:
    """The verdict on the rpo_step's outcome. ``dependents_run``: whether the steps that need it
    would start (it succeeded, was skipped, or failed in a way that is tolerated: on_failure:
    continue, or --emergency at the source); None when they would not start anyway. A step that
    let its dependents through without a number measured nothing, which trips the guard."""
    if not dependents_run:
        return None
    value = outcome.value if outcome.status is Status.SUCCEEDED else None
    measured = (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    )
    descendants = plan.graph.descendants(guard.step)
    blocked = tuple(sid for sid in plan.steps if sid in descendants)
    target = guard.show(guard.target)
    if measured is None:
        how = f"value {value!r}" if outcome.status is Status.SUCCEEDED else outcome.status.value
        what = f"RPO guard: {guard.step} measured no RPO ({how}); the target is {target}"
    elif measured > guard.target:
        what = (
            f"RPO guard: {guard.step} measured {guard.show(measured)}, over the rpo_target of "
            f"{target}"
        )
    else:
        return GuardVerdict(measured, False, False, blocked, "")
    if guard.accept_data_loss:
        loss = guard.show(measured) if measured is not None else "an unmeasured amount"
        message = f"{what}; the operator accepted the data loss ({loss}) with --accept-data-loss"
        return GuardVerdict(measured, True, True, blocked, message)
    held = ", ".join(blocked) if blocked else "nothing"
    message = (
        f"{what}; {held} not started (--accept-data-loss to fail over anyway, losing that data)"
    )
    return GuardVerdict(measured, True, False, blocked, message)
