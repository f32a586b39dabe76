"""The use cases behind each command: load, plan, execute, record, report. The CLI calls these
and only maps their errors to exit codes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import Problem, RefusedError, UsageError, ValidationError
from orchestrator.inventory import Inventory
from orchestrator.runbook import Runbook
from orchestrator.schema import suggest


@dataclass(frozen=True)
class Options:
    """Options common to every command."""

    runbook_path: str | None
    inventory_path: str | None
    state_dir: Path
    log_format: str = "console"
    verbose: int = 0

    @classmethod
    def create(
        cls,
        runbook: str | None,
        inventory: str | None,
        state_dir: Path,
        log_format: str = "console",
        verbose: int = 0,
    ) -> Options:
        if log_format not in ("console", "json"):
            raise UsageError(f"unknown log format '{log_format}' (console or json)")
        return cls(runbook, inventory, state_dir, log_format, verbose)

    def load(self) -> tuple[Runbook, Inventory]:
        from orchestrator.loading import load_both, resolve_paths

        runbook_path, inventory_path = resolve_paths(self.runbook_path, self.inventory_path)
        return load_both(runbook_path, inventory_path)

    def load_checked(
        self, targets: Callable[[Inventory], Iterable[str]]
    ) -> tuple[Runbook, Inventory]:
        """Load both files; if either has errors, still check the runbook's plan for each
        site in ``targets`` (when the inventory is sound), so that one run of drx reports
        every problem at once."""
        from orchestrator.loading import load_partial, resolve_paths
        from orchestrator.plan import build_plan

        runbook_path, inventory_path = resolve_paths(self.runbook_path, self.inventory_path)
        runbook, inventory, problems, inventory_ok = load_partial(runbook_path, inventory_path)
        if runbook is not None and inventory is not None and not _errors(problems):
            return runbook, inventory
        if runbook is not None and inventory is not None and inventory_ok:
            for site in targets(inventory):
                try:
                    build_plan(runbook, inventory, site, source=inventory.active)
                except ValidationError as exc:
                    problems.extend(p for p in exc.problems if p not in problems)
        raise ValidationError(problems)


def _errors(problems: list[Problem]) -> bool:
    return any(p.severity == "error" for p in problems)


def _other_sites(inventory: Inventory) -> list[str]:
    return [s for s in inventory.sites if s != inventory.active]


def secret_inputs(
    cli_vars: Iterable[str], secret_vars: Iterable[str]
) -> tuple[dict[str, str], list[str]]:
    """Variables from ``--var``, ``--secret-var`` and ``DRX_SECRET_<NAME>``, and the secret values."""
    from orchestrator.plan import parse_cli_vars

    variables = parse_cli_vars(cli_vars)
    secrets_given = parse_cli_vars(secret_vars, option="--secret-var")
    for name, value in os.environ.items():
        if name.startswith("DRX_SECRET_") and len(name) > len("DRX_SECRET_"):
            secrets_given.setdefault(name[len("DRX_SECRET_") :].lower(), value)
    variables.update(secrets_given)
    return variables, list(secrets_given.values())


def active_site(state_dir: Path, inventory: Inventory) -> str:
    """The site serving now: state.json overrides the inventory's ``active``."""
    from orchestrator.state import read_state

    state = read_state(state_dir)
    active = state.get("active")
    return active if isinstance(active, str) and active in inventory.sites else inventory.active


def check_site(inventory: Inventory, site: str) -> None:
    if site not in inventory.sites:
        hint = suggest(site, inventory.sites)
        raise UsageError(
            f"unknown site '{site}' (sites: {', '.join(inventory.sites)})"
            + (f"; {hint}" if hint else "")
        )


def validate(opts: Options) -> list[Problem]:
    """Plan a failover from the active site to every other site; return the warnings."""
    from orchestrator.plan import build_plan

    runbook, inventory = opts.load_checked(_other_sites)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for site in inventory.sites:
        if site == inventory.active:
            continue
        try:
            plan = build_plan(runbook, inventory, site, source=inventory.active)
        except ValidationError as exc:
            problems.extend(p for p in exc.problems if p not in problems)
            continue
        warnings.extend(w for w in plan.warnings if w not in warnings)
    if problems:
        raise ValidationError(problems + warnings)
    return warnings


def failover_plan(
    opts: Options,
    site: str,
    *,
    force: bool,
    emergency: bool,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
) -> Any:
    """Load, check the site, and build the failover plan (with history predictions)."""
    from orchestrator.history import predictions_for
    from orchestrator.plan import build_plan

    runbook, inventory = opts.load_checked(
        lambda inv: [site] if site in inv.sites and site != inv.active else _other_sites(inv)
    )
    check_site(inventory, site)
    source = active_site(opts.state_dir, inventory)
    if site == source and not force:
        raise RefusedError(f"site '{site}' is already active (use --force to run anyway)")
    if site == source:
        others = [s for s in inventory.sites if s != site]
        source = others[0]
    variables, secrets = secret_inputs(cli_vars, secret_vars)
    steps, health = predictions_for(opts.state_dir, runbook.name, "failover", site)
    return build_plan(
        runbook,
        inventory,
        site,
        source=source,
        cli_vars=variables,
        secrets=secrets,
        emergency=emergency,
        predictions=steps,
        predicted_health_s=health,
    )


def preview_failover(
    opts: Options,
    site: str,
    fmt: str,
    force: bool,
    emergency: bool,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
) -> str:
    from orchestrator.planview import render_plan

    plan = failover_plan(
        opts, site, force=force, emergency=emergency, cli_vars=cli_vars, secret_vars=secret_vars
    )
    return render_plan(plan, fmt)


def _run_options(opts: Options, **kwargs: Any) -> Any:
    import sys

    from orchestrator.loading import resolve_paths
    from orchestrator.runner import RunOptions

    runbook_path, inventory_path = resolve_paths(opts.runbook_path, opts.inventory_path)
    return RunOptions(
        interactive=sys.stdin.isatty() and sys.stderr.isatty(),
        log_format=opts.log_format,
        verbose=opts.verbose,
        runbook_file=runbook_path,
        inventory_file=inventory_path,
        **kwargs,
    )


def _closing_line(summary: dict[str, Any], code: int, state_dir: Path) -> None:
    """One line on stderr with the outcome and the measured RTO."""
    import sys

    from orchestrator.units import format_duration

    rto = summary.get("rto") or {}
    measured = rto.get("measured_s")
    text = f"{summary['direction']} {summary['run_id']}: {summary['status']}"
    if measured is not None:
        text += f"; measured RTO {format_duration(measured)}"
        if rto.get("end_to_end_s") is not None:
            text += (
                f" for this run, {format_duration(rto['end_to_end_s'])} end to end from "
                f"the start of {summary.get('parent_run')}"
            )
        if rto.get("target_s") is not None:
            text += f" (target {format_duration(rto['target_s'])}: "
            text += "met)" if rto.get("met") else "MISSED)"
    if summary.get("message"):
        text += f" — {summary['message']}"
    where = "" if str(state_dir) == ".drx" else f" --state-dir {state_dir}"
    text += f"\nreport: drx report {summary['run_id']}{where}"
    with contextlib.suppress(OSError):  # stderr may be a closed pipe; the run is recorded
        print(text, file=sys.stderr)


def run_failover(
    opts: Options,
    site: str,
    *,
    yes: bool,
    emergency: bool,
    force: bool,
    max_parallel: int,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
) -> int:
    from orchestrator.runner import execute

    plan = failover_plan(
        opts, site, force=force, emergency=emergency, cli_vars=cli_vars, secret_vars=secret_vars
    )
    # (Starting the pre-flight while the engine's modules import was tried: on two cores the
    # import and the key exchanges fight over the GIL and the run starts later, not sooner.)
    code, summary = execute(
        plan, opts.state_dir, _run_options(opts, yes=yes, max_parallel=max_parallel)
    )
    _closing_line(summary, code, opts.state_dir)
    return code


def list_runs(state_dir: Path, fmt: str) -> str:
    import json

    from orchestrator.records import load_summaries
    from orchestrator.units import format_duration

    summaries = load_summaries(state_dir)
    if fmt == "json":
        return json.dumps(summaries, indent=2) + "\n"
    if not summaries:
        return f"no runs in {state_dir}\n"
    rows = [("RUN", "RUNBOOK", "DIRECTION", "SITE", "STATUS", "RTO", "TARGET", "RPO", "NOTE")]
    for s in summaries:
        rto = s.get("rto") or {}
        rpo = s.get("rpo") or {}
        if rpo.get("measured_bytes") is not None:
            rpo_text = f"{int(rpo['measured_bytes'])}B"
        else:
            rpo_text = format_duration(rpo.get("measured_s")) if rpo else "—"
        met = rto.get("met")
        rto_text = format_duration(rto.get("measured_s"))
        if rto.get("end_to_end_s") is not None:  # a resumed run: the drill's own figure too
            rto_text += f" (e2e {format_duration(rto['end_to_end_s'])})"
        if met is not None:
            rto_text += " ✔" if met else " ✘"
        note = []
        if s.get("failed_back_by"):
            note.append(f"failed back by {s['failed_back_by'][-1]}")
        if s.get("resumed_by_runs"):
            note.append(f"resumed by {s['resumed_by_runs'][-1]}")
        if s.get("parent_run"):
            verb = "reverses" if s["direction"] == "failback" else "resumes"
            note.append(f"{verb} {s['parent_run']}")
        rows.append(
            (
                s["run_id"],
                s.get("runbook", ""),
                s["direction"],
                s.get("moves_to") or (s["target"] if s["direction"] == "failover" else s["source"]),
                s["status"],
                rto_text,
                format_duration(rto.get("target_s")),
                rpo_text,
                "; ".join(note),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in rows
    )


def report(
    state_dir: Path, run: str | None, fmt: str, compare: str | None, *, color: bool = False
) -> str:
    import sys

    from orchestrator.records import load_summaries, load_summary, resolve_run
    from orchestrator.report import render

    run_id = resolve_run(state_dir, run)
    summary = load_summary(state_dir, run_id)
    other = load_summary(state_dir, resolve_run(state_dir, compare)) if compare else None
    history = None
    if fmt == "html":
        history = [
            s
            for s in load_summaries(state_dir)
            if s.get("runbook") == summary.get("runbook")
            and s.get("direction") == summary.get("direction")
            and s["run_id"] <= run_id
        ][-20:]
    use_color = color and fmt == "text" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    text = render(summary, fmt, compare=other, history=history, color=use_color)
    return text if text.endswith("\n") else text + "\n"


def status(state_dir: Path) -> str:
    from orchestrator.records import load_summary, run_ids
    from orchestrator.state import lock_holder, read_state

    state = read_state(state_dir)
    lines = [f"state dir: {state_dir}"]
    lines.append(
        f"active site: {state.get('active') or '(inventory default: no run has changed it)'}"
    )
    ids = run_ids(state_dir)
    if ids:
        s = load_summary(state_dir, ids[-1])
        rto = (s.get("rto") or {}).get("measured_s")
        e2e = (s.get("rto") or {}).get("end_to_end_s")
        extra = f", RTO {rto:.1f}s" if rto is not None else ""
        if e2e is not None:
            extra += f" ({e2e:.1f}s end to end)"
        lines.append(f"latest run: {s['run_id']} ({s['direction']}, {s['status']}{extra})")
    else:
        lines.append("latest run: none")
    holder = lock_holder(state_dir)
    lines.append(f"lock: held by {holder}" if holder else "lock: free")
    return "\n".join(lines) + "\n"


def _confirm_unknown(yes: bool, interactive: bool) -> Any:
    """Before a failback runs: undo steps whose outcome is unknown need --yes or a 'yes'."""

    def check(plan: Any) -> None:
        unknown = [ps.undo_of for ps in plan.steps.values() if ps.outcome_unknown]
        if not unknown or yes:
            return
        names = ", ".join(unknown)
        if interactive:
            from rich.prompt import Confirm

            if Confirm.ask(
                f"The outcome of {names} is unknown (the controller stopped while it ran). "
                "Undo it anyway?",
                default=False,
            ):
                return
        raise RefusedError(
            f"the outcome of {names} is unknown (the run stopped while it ran); confirm at a "
            "terminal or pass --yes to undo it anyway"
        )

    return check


def _reverse_plan(
    opts: Options,
    runbook: Runbook,
    inventory: Inventory,
    source: str,
    target: str,
    failover_run: str,
    variables: dict[str, str],
    secrets: list[str],
) -> tuple[Any, dict[str, Any]]:
    """The reverse plan of ``failover_run`` (from its journal), with failback predictions; and
    what the failover's steps did (their values feed the undo templates)."""
    from orchestrator.history import predictions_for
    from orchestrator.plan import build_reverse_plan
    from orchestrator.records import load_events, outcomes_from_events

    outcomes = outcomes_from_events(load_events(opts.state_dir, failover_run))
    steps, health = predictions_for(opts.state_dir, runbook.name, "failback", target)
    plan = build_reverse_plan(
        runbook,
        inventory,
        source=source,
        target=target,
        parent_run=failover_run,
        outcomes=outcomes,
        cli_vars=variables,
        secrets=secrets,
        predictions=steps,
        predicted_health_s=health,
    )
    return plan, outcomes


def failback_plan(
    opts: Options,
    run: str | None,
    *,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
) -> Any:
    """The reverse plan of a failover run (default: the latest not yet failed back)."""
    from orchestrator.records import (
        is_failed_back,
        is_resumed,
        load_summaries,
        resolve_run,
    )

    summaries = load_summaries(opts.state_dir)
    if run is not None:
        run_id = resolve_run(opts.state_dir, run)
        summary = next(s for s in summaries if s["run_id"] == run_id)
        if summary["direction"] == "failback":
            raise RefusedError(
                f"run {run_id} is a failback; to move the service again, run a failover"
            )
        if is_failed_back(summaries, run_id):
            raise RefusedError(f"run {run_id} has already been failed back")
    else:
        candidates = [
            s
            for s in summaries
            if s["direction"] == "failover"
            and not is_failed_back(summaries, s["run_id"])
            and not is_resumed(summaries, s["run_id"])
        ]
        if not candidates:
            raise RefusedError(
                f"nothing to fail back: no failover run in {opts.state_dir} "
                "that has not been failed back"
            )
        summary = candidates[-1]
        run_id = summary["run_id"]
    runbook, inventory = opts.load()
    if summary.get("runbook") != runbook.name:
        raise RefusedError(
            f"run {run_id} used runbook '{summary.get('runbook')}', not '{runbook.name}'; "
            "pass --runbook with the runbook of that run"
        )
    for site in (summary["source"], summary["target"]):
        check_site(inventory, site)
    variables, secrets = secret_inputs(cli_vars, secret_vars)
    plan, outcomes = _reverse_plan(
        opts, runbook, inventory, summary["source"], summary["target"], run_id, variables, secrets
    )
    if not plan.steps:
        raise RefusedError(
            f"nothing to fail back: run {run_id} changed nothing that has an undo"
            + (
                " (" + "; ".join(f"{i['id']}: {i['reason']}" for i in plan.left_out) + ")"
                if plan.left_out
                else ""
            )
        )
    return plan, outcomes


def run_failback(
    opts: Options,
    run: str | None,
    *,
    dry_run: bool,
    fmt: str,
    yes: bool,
    max_parallel: int,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
) -> int:
    import sys

    from orchestrator.planview import render_plan
    from orchestrator.runner import execute

    plan, outcomes = failback_plan(opts, run, cli_vars=cli_vars, secret_vars=secret_vars)
    if dry_run:
        sys.stdout.write(render_plan(plan, fmt))
        return 0
    run_opts = _run_options(opts, yes=yes, max_parallel=max_parallel, extra_results=outcomes)
    run_opts.before_run = _confirm_unknown(yes, run_opts.interactive)
    code, summary = execute(plan, opts.state_dir, run_opts)
    _closing_line(summary, code, opts.state_dir)
    return code


def run_resume(
    opts: Options,
    run: str | None,
    *,
    rerun_inflight: bool,
    yes: bool,
    max_parallel: int,
    cli_vars: Iterable[str],
    secret_vars: Iterable[str],
) -> int:
    """Continue a failed, cancelled or crashed run; succeeded steps are carried over."""
    from orchestrator.executor import Status
    from orchestrator.history import predictions_for
    from orchestrator.plan import build_plan
    from orchestrator.records import (
        is_failed_back,
        is_resumed,
        load_events,
        load_summaries,
        outcomes_from_events,
        resolve_run,
        run_start,
    )
    from orchestrator.runner import execute

    summaries = load_summaries(opts.state_dir)
    by_id = {s["run_id"]: s for s in summaries}
    if run is not None:
        run_id = resolve_run(opts.state_dir, run)
    else:
        candidates = [
            s["run_id"]
            for s in summaries
            if not is_resumed(summaries, s["run_id"]) and not is_failed_back(summaries, s["run_id"])
        ]
        if not candidates:
            raise RefusedError(f"nothing to resume in {opts.state_dir}")
        run_id = candidates[-1]
    summary = by_id[run_id]
    if summary["status"] not in ("failed", "cancelled", "crashed"):
        raise RefusedError(
            f"nothing to resume: run {run_id} {summary['status']} "
            "(only failed, cancelled or crashed runs can be resumed)"
        )
    if is_resumed(summaries, run_id):
        raise RefusedError(f"run {run_id} has already been resumed")
    events = load_events(opts.state_dir, run_id)
    start = run_start(events)
    outcomes = outcomes_from_events(events)
    runbook, inventory = opts.load()
    if start["runbook"] != runbook.name:
        raise RefusedError(f"run {run_id} used runbook '{start['runbook']}', not '{runbook.name}'")
    variables, secrets = secret_inputs(cli_vars, secret_vars)
    direction = start["direction"]
    extra: dict[str, Any] = {}
    if direction == "failover":
        steps_pred, health_pred = predictions_for(
            opts.state_dir, runbook.name, "failover", start["target"]
        )
        plan = build_plan(
            runbook,
            inventory,
            start["target"],
            source=start["source"],
            cli_vars=variables,
            secrets=secrets,
            emergency=bool(start.get("emergency")),
            predictions=steps_pred,
            predicted_health_s=health_pred,
        )
    else:
        plan, extra = _reverse_plan(
            opts,
            runbook,
            inventory,
            start["source"],
            start["target"],
            start["parent_run"],
            variables,
            secrets,
        )
    plan.parent_run = run_id
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
    for sid, o in outcomes.items():
        if o.status is Status.SUCCEEDED and sid in plan.steps:
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
                }
            )
    origin = start.get("parent_start_wall") or start.get("wall0")
    run_opts = _run_options(
        opts,
        yes=yes,
        max_parallel=max_parallel,
        carried=carried,
        carried_events=carried_events,
        extra_results=extra,
        parent_start_wall=origin,
        check_source_health=False,
    )
    code, result = execute(plan, opts.state_dir, run_opts)
    _closing_line(result, code, opts.state_dir)
    return code
