"""Past runs in the store: listing them and predicting durations from them."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.record.store import Store


def predictions_for(
    store: Store, runbook: str, direction: str, target: str
) -> tuple[dict[str, float], float | None]:
    """Median duration of each step (and of health) over past succeeded runs of the same
    runbook, direction and target."""
    from orchestrator.record.runs import load_summaries

    durations: dict[str, list[float]] = {}
    health: list[float] = []
    for summary in load_summaries(store):
        if (
            summary.get("runbook") != runbook
            or summary.get("direction") != direction
            or summary.get("target") != target
            or summary.get("status") != "succeeded"
        ):
            continue
        for step in summary.get("steps", []):
            if step.get("status") == "succeeded" and step.get("duration_s") is not None:
                if step.get("carried_from"):
                    continue
                key = step["id"]
                durations.setdefault(key, []).append(float(step["duration_s"]))
        h = summary.get("health") or {}
        if h.get("duration_s") is not None:
            health.append(float(h["duration_s"]))
    medians = {k: statistics.median(v) for k, v in durations.items()}
    return medians, (statistics.median(health) if health else None)
