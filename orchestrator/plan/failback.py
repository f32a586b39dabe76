"""Which failback a failover gets, and the mirrored failback's plan.

A runbook with ``failback: mirror`` returns a *succeeded* failover A→B by running its own steps
again from B to A (the way real DR procedures fail back, after a reprotect); a failover that
failed, was cancelled or crashed stopped half-way, and only the undo plan (a rollback of exactly
what it did) is right for it. See docs/reference.md, "Undo or mirror".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.model.inventory import Inventory
from orchestrator.model.runbook import FailbackMode, Runbook
from orchestrator.plan.build import FAILBACK, Plan, build_plan


def failback_mode_for(runbook_mode: FailbackMode, failover_status: str) -> FailbackMode:
    """The mode a failback of a failover that ended ``failover_status`` runs in: mirror only
    for a succeeded failover of a mirror runbook; undo for everything else."""
    if runbook_mode is FailbackMode.MIRROR and failover_status == "succeeded":
        return FailbackMode.MIRROR
    return FailbackMode.UNDO


def build_mirror_plan(
    runbook: Runbook,
    inventory: Inventory,
    *,
    failover_source: str,
    failover_target: str,
    reverses: str,
    cli_vars: Mapping[str, Any] | None = None,
    secrets: Iterable[str] = (),
    predictions: Mapping[str, float] | None = None,
    predicted_health_s: float | None = None,
) -> Plan:
    """The runbook's steps from the failover's target back to its source: ``source`` and
    ``target`` swap (``db@target`` is now at the failover's source), ``direction`` is failback,
    and health is polled at the failover's source."""
    plan = build_plan(
        runbook,
        inventory,
        failover_source,
        source=failover_target,
        direction=FAILBACK,
        cli_vars=cli_vars,
        secrets=secrets,
        predictions=predictions,
        predicted_health_s=predicted_health_s,
        check_undo=False,  # the failover's plan checked them; a mirror runs none
        failback_mode=FailbackMode.MIRROR.value,
    )
    plan.parent_run = plan.reverses = reverses
    plan.warnings = []  # the failover's plan said them already
    return plan
