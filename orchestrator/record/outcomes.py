"""Outcomes of a run's steps and hosts: what the executor produces, the journal records, and
failback, resume and reports read back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.vocab import StepStatus

#: the status of a step (or one host of it), under the name the engine has always used
Status = StepStatus


@dataclass
class HostOutcome:
    host: str
    status: Status
    rc: int | None = None
    error: str | None = None
    stdout: str = ""
    value: Any = None
    attempts: int = 0
    t_end: float = 0.0  # run offset when it finished


@dataclass
class StepOutcome:
    id: str
    status: Status
    error: str | None = None
    hosts: dict[str, HostOutcome] = field(default_factory=dict)
    attempts: int = 0
    value: Any = None
    outcome_unknown: bool = False
    message: str | None = None

    def template_view(self, order: Mapping[str, int]) -> dict[str, Any]:
        """What ``steps['id']`` shows templates: the first host's rc/stdout/value + per host."""
        hosts = sorted(self.hosts.values(), key=lambda h: order.get(h.host, 10**9))
        first = hosts[0] if hosts else None
        return {
            "status": self.status.value,
            "rc": first.rc if first else None,
            "stdout": first.stdout if first else "",
            "value": first.value if first else self.value,
            "hosts": {
                h.host: {"rc": h.rc, "stdout": h.stdout, "value": h.value, "status": h.status.value}
                for h in hosts
            },
        }
