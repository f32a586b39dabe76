"""``kind: command`` (the default): runs ``run`` once on each host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.kinds.base import Kind, StepRunner

if TYPE_CHECKING:
    from orchestrator.model.fields import Fields
    from orchestrator.model.runbook import Step
    from orchestrator.model.yaml_source import LMap
    from orchestrator.plan.build import PlanStep
    from orchestrator.record.outcomes import StepOutcome


def require_hosts_and_run(
    f: Fields, *, hosts: tuple[str, ...], run: str | None, undo: bool
) -> None:
    """A step running a command needs ``run``, and ``hosts`` unless it is an undo (which
    runs where the step it undoes ran)."""
    if not hosts and not undo:
        f.require("hosts")
    if run is None:
        f.require("run")


class Command(Kind):
    name = "command"
    runs_commands = True
    changes_hosts = True

    def check_fields(
        self, f: Fields, data: LMap, *, hosts: tuple[str, ...], run: str | None, undo: bool
    ) -> None:
        require_hosts_and_run(f, hosts=hosts, run=run, undo=undo)

    def plan_warnings(self, step: Step, *, mirror: bool) -> list[tuple[int, str]]:
        # a mirror runbook fails back a succeeded failover by its steps: an undo is only for
        # rolling back a half-done one, and many steps rightly have none
        if step.undo is None and not mirror:
            return [(step.line, "command step has no 'undo': failback will leave it out")]
        return []

    def execute(self, runner: StepRunner, ps: PlanStep) -> StepOutcome:
        return runner.on_hosts(ps)


KIND = Command()
