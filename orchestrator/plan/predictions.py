"""Past runs in the store: listing them and predicting durations from them."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from orchestrator.kinds import kind_of
from orchestrator.vocab import Direction, RunStatus, StepStatus

if TYPE_CHECKING:
    from orchestrator.record.store import Store


def predictions_for(
    store: Store, runbook: str, direction: str, target: str, *, mirror: bool = False
) -> tuple[dict[str, float], float | None]:
    """Median duration of each step (and of health) over past succeeded runs of the same
    runbook, direction and target; a manual gate's only over runs where a person answered it.
    A failover and a mirrored failback (``mirror``) run the same steps: each is predicted from
    every run that moved the service to ``target`` by running them (failovers to it and
    mirrored failbacks to it)."""
    from orchestrator.record.runs import load_summaries

    durations: dict[str, list[float]] = {}
    health: list[float] = []
    forward = direction == Direction.FAILOVER or mirror
    for summary in load_summaries(store):
        runs_forward = summary.direction in (Direction.FAILOVER, Direction.REPROTECT) or (
            summary.failback_mode == "mirror"
        )
        same = (
            runs_forward
            if forward
            else summary.direction == direction and summary.failback_mode != "mirror"
        )
        if (
            summary.runbook != runbook
            or not same
            or summary.target != target
            or summary.status != RunStatus.SUCCEEDED
        ):
            continue
        for step in summary.steps:
            if step.status != StepStatus.SUCCEEDED or step.duration_s is None or step.carried_from:
                continue
            # a gate takes as long as a person takes to answer it: runs where --yes answered
            # (in a millisecond) say nothing about that; the gate's expect does
            via = step.approved_via or ("--yes" if summary.yes else "terminal")
            gate = kind_of(step.kind).gate
            if gate and via != "terminal":
                continue
            duration = step.duration_s
            if gate and step.manual_wait_s is not None:
                duration = step.manual_wait_s
            durations.setdefault(step.id, []).append(duration)
        if summary.health is not None and summary.health.duration_s is not None:
            health.append(summary.health.duration_s)
    medians = {k: statistics.median(v) for k, v in durations.items()}
    return medians, (statistics.median(health) if health else None)
