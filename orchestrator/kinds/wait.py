"""``kind: wait``: sleeps ``duration``; runs nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.kinds.base import Kind, Redact, StepRunner
from orchestrator.model.units import format_duration

if TYPE_CHECKING:
    from orchestrator.model.fields import Fields
    from orchestrator.model.runbook import Step
    from orchestrator.model.yaml_source import LMap
    from orchestrator.plan.build import PlanStep
    from orchestrator.record.outcomes import StepOutcome


class Wait(Kind):
    name = "wait"
    doc = "`wait` sleeps `duration`"
    required = ("duration",)

    def check_fields(self, f: Fields, data: LMap, *, undo: bool) -> None:
        if "duration" not in data:
            f.error(None, "a wait step needs 'duration'")

    def fixed_duration(self, step: Step) -> float | None:
        return step.duration

    def execute(self, runner: StepRunner, ps: PlanStep) -> StepOutcome:
        # imported here: loading a runbook (model/) needs the kinds but not the run record
        from orchestrator.record.outcomes import Status, StepOutcome

        # a wait runs nothing: once the run stops scheduling it ends at once, cancelled
        if runner.pause(ps.step.duration or 0.0, ps):
            return StepOutcome(ps.id, Status.SUCCEEDED)
        return StepOutcome(ps.id, Status.CANCELLED, message=runner.why_stopped())

    def preview_entry(self, ps: PlanStep, redact: Redact) -> dict[str, Any]:
        return {"duration_s": ps.step.duration}

    def preview_lines(self, ps: PlanStep, redact: Redact) -> list[str]:
        return [f"      wait {format_duration(ps.step.duration or 0)}"]


KIND = Wait()
