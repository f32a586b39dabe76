"""Which failback a failover gets, and the mirrored failback's plan.

A runbook with ``failback: mirror`` returns a *succeeded* failover A→B by running its own steps
again from B to A (the way real DR procedures fail back, after a reprotect); a failover that
failed, was cancelled or crashed stopped half-way, and only the undo plan (a rollback of exactly
what it did) is right for it. See docs/reference.md, "Undo or mirror".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.model.inventory import Inventory
from orchestrator.model.runbook import FailbackMode, Runbook
from orchestrator.plan.build import (
    FAILBACK,
    MIRROR,
    REPROTECT,
    Plan,
    build_plan,
    compute_waves,
    reprotect_runbook,
    topological,
)
from orchestrator.record.summary import RunSummary
from orchestrator.vocab import RunStatus


def failback_mode_for(runbook_mode: FailbackMode, failover_status: str) -> FailbackMode:
    """The mode a failback of a failover that ended ``failover_status`` runs in: mirror only
    for a succeeded failover of a mirror runbook; undo for everything else."""
    if runbook_mode is FailbackMode.MIRROR and failover_status == RunStatus.SUCCEEDED:
        return FailbackMode.MIRROR
    return FailbackMode.UNDO


def reprotect_refusal(runbook: Runbook, failover_status: str) -> str | None:
    """Why ``drx reprotect`` of a failover that ended ``failover_status`` is refused (None: it
    may run): the runbook has no reprotect phase, or its failback would not be mirrored."""
    if not runbook.reprotect:
        return f"runbook '{runbook.name}' has no 'reprotect' steps"
    if failback_mode_for(runbook.failback, failover_status) is not FailbackMode.MIRROR:
        if runbook.failback is not FailbackMode.MIRROR:
            return (
                f"runbook '{runbook.name}' fails back by its undos (failback: undo): a "
                "reprotect prepares a mirrored failback"
            )
        return (
            f"the failover {failover_status}: it is failed back by its undos, which need no "
            "reprotect (a reprotect prepares the mirrored failback of a succeeded failover)"
        )
    return None


def reprotect_to_carry(runs: Sequence[RunSummary], failover_run: str) -> str | None:
    """The latest succeeded ``drx reprotect`` of ``failover_run``: a mirrored failback of that
    failover carries its steps instead of running them again."""
    done = [
        s.run_id
        for s in runs
        if s.direction == REPROTECT
        and s.reverses == failover_run
        and s.status == RunStatus.SUCCEEDED
    ]
    return done[-1] if done else None


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
    mode: str = "real",
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
        mode=mode,
    )
    plan.parent_run = plan.reverses = reverses
    plan.warnings = []  # the failover's plan said them already
    if runbook.reprotect:
        phase = build_reprotect_plan(
            runbook,
            inventory,
            failover_source=failover_source,
            failover_target=failover_target,
            reverses=reverses,
            direction=FAILBACK,
            cli_vars=cli_vars,
            secrets=secrets,
            predictions=predictions,
        )
        _run_first(phase, plan)
    return plan


def build_reprotect_plan(
    runbook: Runbook,
    inventory: Inventory,
    *,
    failover_source: str,
    failover_target: str,
    reverses: str,
    direction: str = REPROTECT,
    cli_vars: Mapping[str, Any] | None = None,
    secrets: Iterable[str] = (),
    predictions: Mapping[str, float] | None = None,
) -> Plan:
    """The reprotect phase of the failback of the failover ``failover_source`` →
    ``failover_target`` (templates see the failback's ``source``/``target``): a run of its own
    (``direction`` reprotect: no health, the service stays where it is) or the first phase of a
    mirrored failback."""
    plan = build_plan(
        reprotect_runbook(runbook),
        inventory,
        failover_source,
        source=failover_target,
        direction=direction,
        cli_vars=cli_vars,
        secrets=secrets,
        predictions=predictions,
        check_undo=False,
        failback_mode=MIRROR,
    )
    plan.runbook = runbook
    plan.parent_run = plan.reverses = reverses
    plan.warnings = []
    if direction == REPROTECT:
        plan.failback_mode = None
    for ps in plan.steps.values():
        ps.phase = REPROTECT
    return plan


def _run_first(phase: Plan, plan: Plan) -> None:
    """Put the reprotect ``phase`` before every step of ``plan``: each step with no needs now
    needs the phase's last steps. The predicted RTO and its critical path stay those of the
    steps (the RTO starts after the phase); the phase's own prediction is kept apart."""
    ends = [n for n in phase.steps if phase.graph.out_degree(n) == 0]
    graph = phase.graph.compose(plan.graph)
    steps = dict(phase.steps)
    shift = len(phase.steps)
    for ps in plan.steps.values():
        ps.index += shift
        graph.nodes[ps.id]["index"] = ps.index
        if not ps.needs:
            ps.needs = list(ends)
            graph.add_edges_from((end, ps.id) for end in ends)
        steps[ps.id] = ps
    waves = compute_waves(graph, topological(graph))
    for sid, ps in steps.items():
        ps.wave = waves[sid]
    plan.steps, plan.graph = steps, graph
    plan.waves = [[] for _ in range(max(waves.values(), default=-1) + 1)]
    for ps in steps.values():
        plan.waves[ps.wave].append(ps.id)
    plan.predicted_reprotect_s = phase.predicted_rto_s
