"""``kind: manual``: a gate; an operator approves (or denies) it, nothing runs on a host."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.kinds.base import Kind, Redact, StepRunner

if TYPE_CHECKING:
    from orchestrator.model.fields import Fields
    from orchestrator.model.runbook import Step
    from orchestrator.model.yaml_source import LMap
    from orchestrator.plan.build import PlanStep
    from orchestrator.record.outcomes import StepOutcome

#: how long a manual gate with no terminal waits for drx approve/deny before it is denied
MANUAL_TIMEOUT = 3600.0


class Manual(Kind):
    name = "manual"
    doc = "`manual` asks an operator (`prompt`)"
    gate = True
    default_timeout = MANUAL_TIMEOUT
    hosts_label = "operator"

    def check_fields(self, f: Fields, data: LMap, *, undo: bool) -> None:
        if data.get("always") is True:
            f.error(
                "always",
                "a manual step cannot be 'always': cleanup that must run when the run is "
                "failing or cancelled cannot wait for an operator",
            )

    def plan_warnings(self, step: Step, *, mirror: bool) -> list[tuple[int, str]]:
        ignored = [k for k in ("hosts", "run") if k in step.field_lines]
        if not ignored:
            return []
        return [
            (
                step.field_lines[ignored[0]],
                f"a manual step runs nothing on any host: its {' and '.join(map(repr, ignored))} "
                "are ignored (remove them, or make the step a command)",
            )
        ]

    def execute(self, runner: StepRunner, ps: PlanStep) -> StepOutcome:
        return runner.ask_operator(ps)

    def preview_entry(self, ps: PlanStep, redact: Redact) -> dict[str, Any]:
        return {"prompt": ps.prompt}

    def preview_lines(self, ps: PlanStep, redact: Redact) -> list[str]:
        return [f"      prompt: {ps.prompt}"]


KIND = Manual()
