"""``drx resume``: continue a failed, cancelled or crashed run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import typer

from orchestrator.cli.app import (
    AcceptDataLossOpt,
    CommentOpt,
    InventoryOpt,
    LogFormatOpt,
    NotifyOpt,
    RunbookOpt,
    SecretVarOpt,
    StateDirOpt,
    StateUrlOpt,
    VarOpt,
    VerboseOpt,
    app,
    options,
)
from orchestrator.cli.failback import reverse_plan
from orchestrator.cli.options import (
    Options,
    closing_line,
    half_done,
    run_options,
    secret_inputs,
    warn_unknown_vars,
)
from orchestrator.errors import RefusedError, UsageError


@app.command()
def resume(
    run: Annotated[str | None, typer.Argument(help="The run to continue.")] = None,
    rerun_inflight: Annotated[
        bool,
        typer.Option("--rerun-inflight", help="Re-run steps that were running when it stopped."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve every manual gate.")] = False,
    emergency: Annotated[
        bool,
        typer.Option(
            "--emergency",
            help="The source site was lost mid-run: its hosts may be unreachable, and steps "
            "on them fail without aborting the run.",
        ),
    ] = False,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1)] = 32,
    accept_data_loss: AcceptDataLossOpt = False,
    var: VarOpt = None,
    secret_var: SecretVarOpt = None,
    notify: NotifyOpt = None,
    comment: CommentOpt = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Continue a failed, cancelled or crashed run in a new run; succeeded steps are not re-run.

    Example: drx resume --yes
    """
    opts = options(
        runbook,
        inventory,
        state_dir,
        log_format,
        verbose,
        state_url,
        notify=notify,
        comment=comment,
    )
    code = run_resume(
        opts,
        run,
        rerun_inflight=rerun_inflight,
        yes=yes,
        emergency=emergency,
        max_parallel=max_parallel,
        accept_data_loss=accept_data_loss,
        cli_vars=var or [],
        secret_vars=secret_var or [],
    )
    raise typer.Exit(code)


def run_resume(
    opts: Options,
    run: str | None,
    *,
    rerun_inflight: bool,
    yes: bool,
    emergency: bool = False,
    max_parallel: int,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
    accept_data_loss: bool = False,
) -> int:
    """Continue a failed, cancelled or crashed run; succeeded steps are carried over."""
    from orchestrator.plan.build import build_plan
    from orchestrator.plan.predictions import predictions_for
    from orchestrator.record.outcomes import Status
    from orchestrator.record.runs import (
        Lineage,
        approvals_from_events,
        load_summaries,
        outcomes_from_events,
        resolve_run,
        run_start,
    )
    from orchestrator.run.runner import execute

    summaries = load_summaries(opts.store)
    lineage = Lineage.of(summaries)
    runbook, inventory = opts.load()
    if run is not None:
        run_id = resolve_run(opts.store, run)
    else:
        candidates = [
            s.run_id
            for s in summaries
            if s.runbook == runbook.name  # each runbook has its own history
            and lineage.resumed_by(s.run_id) is None
            and lineage.failback_of(s.run_id) is None
        ]
        if not candidates:
            raise RefusedError(f"nothing to resume in {opts.store.location}")
        run_id = candidates[-1]
    refuse_resume(lineage, run_id)
    if lineage.by_id[run_id].direction == "reprotect":
        raise RefusedError(f"run {run_id} is a reprotect: run drx reprotect again")
    events = opts.store.read_events(run_id)
    start = run_start(events)
    outcomes = outcomes_from_events(events)
    if start["runbook"] != runbook.name:
        raise RefusedError(f"run {run_id} used runbook '{start['runbook']}', not '{runbook.name}'")
    warn_unknown_vars(runbook, inventory, cli_vars, secret_vars)
    variables, secrets = secret_inputs(cli_vars, secret_vars)
    direction = start["direction"]
    extra: dict[str, Any] = {}
    if direction == "failover":
        steps_pred, health_pred = predictions_for(
            opts.store, runbook.name, "failover", start["target"]
        )
        plan = build_plan(
            runbook,
            inventory,
            start["target"],
            source=start["source"],
            cli_vars=variables,
            secrets=secrets,
            emergency=emergency or bool(start.get("emergency")),
            predictions=steps_pred,
            predicted_health_s=health_pred,
        )
    elif emergency:
        raise UsageError(
            f"run {run_id} is a failback: --emergency continues a failover whose source "
            "site was lost"
        )
    else:
        # a mirrored failback names its own way (source: the failover's target); an undo
        # failback keeps the failover's names
        mode = start.get("failback_mode") or "undo"
        source, target = start["source"], start["target"]
        plan, extra = reverse_plan(
            opts,
            runbook,
            inventory,
            target if mode == "mirror" else source,
            source if mode == "mirror" else target,
            start.get("reverses") or start["parent_run"],
            variables,
            secrets,
            mode,
        )
    plan.parent_run = plan.resumes = run_id
    inflight = [
        sid
        for sid, o in outcomes.items()
        if sid in plan.steps
        and (o.status is Status.UNKNOWN or (o.status is Status.CANCELLED and o.outcome_unknown))
    ]
    blocked = [s for s in inflight if not (rerun_inflight or plan.steps[s].step.idempotent)]
    if blocked:
        raise RefusedError(
            f"step(s) {', '.join(blocked)} were running when run {run_id} stopped and are not "
            "idempotent: check them on the hosts, then resume with --rerun-inflight"
        )
    carried = {}
    carried_events = []
    approvals = approvals_from_events(events)
    for sid, o in outcomes.items():
        # a check is read-only and its answer may be stale: it runs again, never carried
        if o.status is Status.SUCCEEDED and sid in plan.steps and not _is_check(plan.steps[sid]):
            carried[sid] = o
            carried_events.append(
                {
                    "step": sid,
                    "from_run": o.message if o.message else run_id,
                    "value": o.value,
                    "attempts": o.attempts,
                    "hosts": [
                        {"host": h.host, "rc": h.rc, "stdout": h.stdout, "value": h.value}
                        for h in o.hosts.values()
                    ],
                    "approval": approvals.get(sid),
                }
            )
    origin = start.get("parent_start_wall") or start.get("wall0")
    run_opts = run_options(
        opts,
        yes=yes,
        max_parallel=max_parallel,
        carried=carried,
        carried_events=carried_events,
        extra_results=extra,
        parent_start_wall=origin,
        check_source_health=False,
        accept_data_loss=accept_data_loss,
    )
    code, result = execute(plan, opts.store, run_opts)
    closing_line(result, opts.store, half_done(plan, result, opts))
    return code


def _is_check(ps: Any) -> bool:
    from orchestrator.model.runbook import StepKind

    return bool(ps.step.kind is StepKind.CHECK)


def refuse_resume(lineage: Any, run_id: str) -> None:
    """Refuse (exit 2, naming the run to use instead) to resume a run whose continuation or
    reversal already exists: resuming it would act on a state of the world that is gone."""
    summary = lineage.by_id[run_id]
    after = lineage.resumed_by(run_id)
    if after is not None:
        latest = lineage.by_id[lineage.latest(run_id)]
        hint = (
            f"resume {latest.run_id} instead"
            if latest.status in ("failed", "cancelled", "crashed")
            else f"the latest continuation, {latest.run_id}, {latest.status}"
        )
        raise RefusedError(f"run {run_id} has already been resumed by {after}: {hint}")
    if summary.direction == "failover":
        back = lineage.failback_of(run_id)
        if back is not None:
            raise RefusedError(
                f"run {run_id} cannot be resumed: failback {back} reversed what it did "
                "(run a new failover to move the service again)"
            )
    if summary.status not in ("failed", "cancelled", "crashed"):
        raise RefusedError(
            f"nothing to resume: run {run_id} {summary.status} "
            "(only failed, cancelled or crashed runs can be resumed)"
        )
