"""``kind: command`` (the default): runs ``run`` once on each host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.kinds.base import Kind, StepRunner

if TYPE_CHECKING:
    from orchestrator.model.runbook import Step
    from orchestrator.plan.build import PlanStep
    from orchestrator.record.outcomes import StepOutcome


class Command(Kind):
    name = "command"
    doc = "`command` runs `run` once per host"
    required = ("hosts", "run")
    runs_commands = True
    changes_hosts = True

    def plan_warnings(self, step: Step, *, mirror: bool) -> list[tuple[int, str]]:
        # a mirror runbook fails back a succeeded failover by its steps: an undo is only for
        # rolling back a half-done one, and many steps rightly have none
        if step.undo is None and not mirror:
            return [(step.line, "command step has no 'undo': failback will leave it out")]
        return []

    def execute(self, runner: StepRunner, ps: PlanStep) -> StepOutcome:
        return runner.on_hosts(ps)


KIND = Command()
