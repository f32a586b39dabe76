"""What every command shares: the common options, loading the files, variables and secrets from the
command line and the environment, the active site, and the closing line of a run."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.cli import say
from orchestrator.errors import Problem, UsageError, ValidationError
from orchestrator.vocab import RunStatus

if TYPE_CHECKING:
    from orchestrator.model.inventory import Inventory
    from orchestrator.model.runbook import Runbook
    from orchestrator.record.store import Store
    from orchestrator.record.summary import RunSummary
    from orchestrator.run.interrupts import Interrupts


if TYPE_CHECKING:
    from orchestrator.plan.build import Plan


@dataclass(frozen=True)
class Options:
    """Options common to every command."""

    runbook_path: str | None
    inventory_path: str | None
    state_dir: Path
    log_format: str = "console"
    verbose: int = 0
    state_url: str | None = None
    notify: tuple[str, ...] = ()  # --notify URLs (commands that run)
    comment: str | None = None  # --comment recorded with gate approvals
    #: where a run routes Ctrl-C (set by the run commands' edge: orchestrator.cli.edge)
    interrupts: Interrupts | None = None

    @classmethod
    def create(
        cls,
        runbook: str | None,
        inventory: str | None,
        state_dir: Path,
        log_format: str = "console",
        verbose: int = 0,
        state_url: str | None = None,
        *,
        notify: tuple[str, ...] = (),
        comment: str | None = None,
    ) -> Options:
        if log_format not in ("console", "json"):
            raise UsageError(f"unknown log format '{log_format}' (console or json)")
        urls = tuple(u for item in notify for u in item.split())  # DRX_NOTIFY: space-separated
        return cls(
            runbook, inventory, state_dir, log_format, verbose, state_url or None, urls, comment
        )

    @cached_property
    def store(self) -> Store:
        """Where state, the lock and runs are kept."""
        from orchestrator.cli.app import open_checked

        return open_checked(self.state_dir, self.state_url)

    def load(self) -> tuple[Runbook, Inventory]:
        from orchestrator.model.loading import load_both, resolve_paths

        runbook_path, inventory_path = resolve_paths(self.runbook_path, self.inventory_path)
        return load_both(runbook_path, inventory_path)

    def load_checked(
        self, targets: Callable[[Inventory], Iterable[str]]
    ) -> tuple[Runbook, Inventory]:
        """Load both files; if either has errors, still check the runbook's plan for each
        site in ``targets`` (when the inventory is sound), so that one run of drx reports
        every problem at once."""
        from orchestrator.model.loading import load_partial, resolve_paths
        from orchestrator.plan.build import build_plan

        runbook_path, inventory_path = resolve_paths(self.runbook_path, self.inventory_path)
        runbook, inventory, problems, inventory_ok = load_partial(runbook_path, inventory_path)
        if runbook is not None and inventory is not None and not has_errors(problems):
            return runbook, inventory
        found = dict.fromkeys(problems)  # an ordered set: each problem once
        if runbook is not None and inventory is not None and inventory_ok:
            for site in targets(inventory):
                try:
                    build_plan(runbook, inventory, site, source=inventory.active)
                except ValidationError as exc:
                    found.update(dict.fromkeys(exc.problems))
        raise ValidationError(list(found))


def has_errors(problems: list[Problem]) -> bool:
    return any(p.severity == "error" for p in problems)


def other_sites(inventory: Inventory) -> list[str]:
    return [s for s in inventory.sites if s != inventory.active]


def secret_inputs(
    cli_vars: Iterable[str], secret_vars: Iterable[str]
) -> tuple[dict[str, Any], list[str]]:
    """Variables from ``--var``, ``--secret-var`` and ``DRX_SECRET_<NAME>``, and the secret values."""
    from orchestrator.plan.build import parse_cli_vars

    variables = parse_cli_vars(cli_vars, typed=True)
    secrets_given = parse_cli_vars(secret_vars, option="--secret-var")
    for name, value in os.environ.items():
        if name.startswith("DRX_SECRET_") and len(name) > len("DRX_SECRET_"):
            secrets_given.setdefault(name[len("DRX_SECRET_") :].lower(), value)
    variables.update(secrets_given)
    return variables, list(secrets_given.values())


def warn_unknown_vars(
    runbook: Runbook, inventory: Inventory, cli_vars: Iterable[str], secret_vars: Iterable[str]
) -> None:
    """A warning on stderr for each ``--var``/``--secret-var`` name nothing uses."""

    from orchestrator.plan.build import parse_cli_vars, unknown_cli_vars

    names = [*parse_cli_vars(cli_vars), *parse_cli_vars(secret_vars, option="--secret-var")]
    for name, hint in unknown_cli_vars(runbook, inventory, names):
        text = f"--var {name} is not used by any template or vars of the runbook or inventory"
        say.warning(text + (f"; {hint}" if hint else ""), var=name)


def active_site(store: Store, inventory: Inventory, runbook: str) -> str:
    """The site serving ``runbook``'s service now: state.json overrides the inventory."""
    active = store.read_state().runbook(runbook).active
    return active if isinstance(active, str) and active in inventory.sites else inventory.active


def shown_location(store: Store) -> str:
    """Where the store is, for a message: a local directory as an absolute path (so that
    running from the wrong directory shows)."""
    if store.location == str(store.local_dir):
        return str(store.local_dir.resolve())
    return store.location


def state_note(store: Store, inventory: Inventory, runbook: str) -> str | None:
    """When no run has recorded an active site yet, say which one drx trusts and where it
    looked, so that running from the wrong directory is noticed."""
    if store.read_state().runbook(runbook).active:
        return None
    return (
        f"note: no drx state in {shown_location(store)} yet for runbook '{runbook}'; trusting "
        f"the inventory's active "
        f"site '{inventory.active}' ({inventory.path}). If drills ran from another directory, "
        "pass --state-dir (or set DRX_STATE_DIR)."
    )


def check_site(inventory: Inventory, site: str) -> None:
    if site not in inventory.sites:
        from orchestrator.model.fields import suggest

        hint = suggest(site, inventory.sites)
        raise UsageError(
            f"unknown site '{site}' (sites: {', '.join(inventory.sites)})"
            + (f"; {hint}" if hint else "")
        )


def run_options(opts: Options, **kwargs: Any) -> Any:
    import sys

    from orchestrator.model.loading import resolve_paths
    from orchestrator.run.runner import RunOptions

    runbook_path, inventory_path = resolve_paths(opts.runbook_path, opts.inventory_path)
    return RunOptions(
        interactive=sys.stdin.isatty() and sys.stderr.isatty(),
        log_format=opts.log_format,
        verbose=opts.verbose,
        runbook_file=runbook_path,
        inventory_file=inventory_path,
        notify=list(opts.notify),
        gate_comment=opts.comment,
        interrupts=opts.interrupts,
        **kwargs,
    )


def command_options(opts: Options) -> str:
    """The options that make a suggested command act on the same files and state as this one."""
    import shlex

    parts = []
    if opts.runbook_path:
        parts += ["-r", opts.runbook_path]
    if opts.inventory_path:
        parts += ["-i", opts.inventory_path]
    if opts.store.location != ".drx":
        parts += ["--state-dir", opts.store.location]
    return "".join(f" {shlex.quote(p)}" for p in parts)


def half_done(plan: Plan, summary: RunSummary, opts: Options) -> str | None:
    """For a failover that failed or was cancelled after changing things: which steps did,
    and the exact commands that undo them (failback) or carry on (resume)."""
    from orchestrator.run.outcome import stopped_half_way

    stopped = stopped_half_way(plan, summary)
    return stopped.advice(command_options(opts)) if stopped is not None else None


def export_trace(summary: RunSummary, store: Store) -> None:
    """Export the run as an OpenTelemetry trace when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is
    set; a collector that is missing or slow is a warning, never a failed run."""
    from orchestrator.report import export_configured

    if not export_configured():
        return
    from orchestrator.report import otlp

    try:
        problem = otlp.export(summary, store.read_events(summary.run_id))
    except Exception as exc:  # the run is recorded; the trace is a copy of it
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        say.warning(f"trace not exported: {problem}")


def closing_line(summary: RunSummary, store: Store, after: str | None = None) -> None:
    """One line on stderr with the outcome and the measured RTO (and ``after``, what to do
    next, if given)."""

    rto = summary.rto
    measured = rto.measured_s
    text = f"{summary.direction} {summary.run_id}: {summary.status}"
    headline = rto.headline(summary.parent_run)
    if headline is not None:
        text += f"; {headline}"
    if summary.message:
        text += f" — {summary.message}"
    from orchestrator.run.runner import report_hint

    export_trace(summary, store)
    report = report_hint(summary.run_id, store)
    text += f"\nreport: {report}"
    if after:
        text += f"\n{after}"
    say.say(
        "info" if summary.status == RunStatus.SUCCEEDED and rto.met is not False else "error",
        "run_closed",
        text,
        run_id=summary.run_id,
        direction=summary.direction,
        status=summary.status,
        rto_s=measured,
        rto_end_to_end_s=rto.end_to_end_s,
        rto_target_s=rto.target_s,
        rto_met=rto.met,
        why=summary.message,
        report=report,
        note=after,
    )
