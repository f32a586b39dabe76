"""``kind: check``: polls ``run`` on each host until ``until`` holds (or ``timeout``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.kinds.base import Redact
from orchestrator.kinds.command import Command
from orchestrator.model.units import format_duration

if TYPE_CHECKING:
    from orchestrator.model.runbook import Step
    from orchestrator.plan.build import PlanStep


class Check(Command):
    """A command's rules (``hosts`` and ``run``), but polled, and changing nothing."""

    name = "check"
    doc = "`check` polls `run` until `until` holds"
    polls = True
    changes_hosts = False

    def plan_warnings(self, step: Step, *, mirror: bool) -> list[tuple[int, str]]:
        return []  # a check changes nothing: it needs no undo

    def preview_entry(self, ps: PlanStep, redact: Redact) -> dict[str, Any]:
        return {"until": redact(ps.step.until or "rc == 0"), "interval_s": ps.step.interval}

    def preview_lines(self, ps: PlanStep, redact: Redact) -> list[str]:
        step = ps.step
        return [
            f"      until {redact(step.until or 'rc == 0')} every "
            f"{format_duration(step.interval)}, within {format_duration(step.timeout)}"
        ]


KIND = Check()
