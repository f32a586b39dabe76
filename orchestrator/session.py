"""The use cases behind each command: load, plan, execute, record, report. The CLI calls these
and only maps their errors to exit codes."""

from __future__ import annotations

import os
from collections.abc import Iterable
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

    runbook, inventory = opts.load()
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

    runbook, inventory = opts.load()
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


def _closing_line(summary: dict[str, Any], code: int) -> None:
    """One line on stderr with the outcome and the measured RTO."""
    import sys

    from orchestrator.units import format_duration

    rto = summary.get("rto") or {}
    measured = rto.get("measured_s")
    text = f"{summary['direction']} {summary['run_id']}: {summary['status']}"
    if measured is not None:
        text += f"; measured RTO {format_duration(measured)}"
        if rto.get("target_s") is not None:
            text += f" (target {format_duration(rto['target_s'])}: "
            text += "met)" if rto.get("met") else "MISSED)"
    if summary.get("message"):
        text += f" — {summary['message']}"
    text += f"\nreport: drx report {summary['run_id']}"
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
    code, summary = execute(
        plan, opts.state_dir, _run_options(opts, yes=yes, max_parallel=max_parallel)
    )
    _closing_line(summary, code)
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
    return render(summary, fmt, compare=other, history=history, color=use_color)


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
        extra = f", RTO {rto:.1f}s" if rto is not None else ""
        lines.append(f"latest run: {s['run_id']} ({s['direction']}, {s['status']}{extra})")
    else:
        lines.append("latest run: none")
    holder = lock_holder(state_dir)
    lines.append(f"lock: held by {holder}" if holder else "lock: free")
    return "\n".join(lines) + "\n"
