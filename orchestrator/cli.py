"""The ``drx`` command line: parses options, calls the core, maps errors to exit codes.

Heavy modules (networkx, jinja2, fabric) are imported inside the commands so that ``drx --help``
stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from orchestrator import __version__
from orchestrator.errors import DrxError, ValidationError

if TYPE_CHECKING:
    from orchestrator.session import Options

EXIT_CODES = """\
Exit codes: 0 success · 1 the run failed · 2 refused before anything ran (invalid input, lock
held, site already active, host unreachable at pre-flight, source unhealthy, nothing to fail back
or resume) · 3 succeeded but the measured RTO missed its target · 130 cancelled."""

app = typer.Typer(
    name="drx",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

RunbookOpt = Annotated[
    str | None,
    typer.Option("--runbook", "-r", envvar="DRX_RUNBOOK", help="Runbook YAML file."),
]
InventoryOpt = Annotated[
    str | None,
    typer.Option("--inventory", "-i", envvar="DRX_INVENTORY", help="Inventory YAML file."),
]
StateDirOpt = Annotated[
    str | None,
    typer.Option("--state-dir", envvar="DRX_STATE_DIR", help="State directory (default ./.drx)."),
]
LogFormatOpt = Annotated[
    str, typer.Option("--log-format", help="Log lines on stderr: console or json.")
]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log detail.")]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="Output: text, json, dot or mermaid.")
]
VarOpt = Annotated[
    list[str] | None, typer.Option("--var", help="Set a variable: NAME=VALUE (repeatable).")
]
SecretVarOpt = Annotated[
    list[str] | None,
    typer.Option("--secret-var", help="Set a secret variable, masked as *** everywhere."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"drx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Failover/failback runbook engine for disaster-recovery drills, with a measured RTO.

    drx turns a runbook into a dependency DAG, runs it over SSH, and measures the RTO.

    Example: drx plan site-b; drx failover site-b --yes; drx report --format html -o drill.html
    """


# -- helpers ----------------------------------------------------------------------------------


def _state_dir(state_dir: str | None) -> Path:
    return Path(state_dir or os.environ.get("DRX_STATE_DIR") or ".drx")


def _options(
    runbook: str | None,
    inventory: str | None,
    state_dir: str | None,
    log_format: str,
    verbose: int,
) -> Options:
    from orchestrator.session import Options

    return Options.create(runbook, inventory, _state_dir(state_dir), log_format, verbose)


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        from orchestrator.errors import UsageError

        raise UsageError(f"unknown format '{fmt}' (choose from {', '.join(allowed)})")


# -- commands ---------------------------------------------------------------------------------


@app.command()
def validate(
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Check the runbook and inventory: the plan of a failover from the active site to every other
    site. Prints warnings (e.g. a command step with no undo) and errors; exit 2 on errors.

    Example: drx validate -r runbooks/webapp.yaml -i inventory/ssh.yaml
    """
    from orchestrator import session

    opts = _options(runbook, inventory, state_dir, log_format, verbose)
    warnings = session.validate(opts)
    for w in warnings:
        typer.echo(str(w), err=True)
    typer.echo(f"ok: {len(warnings)} warning(s)", err=True)


@app.command()
def plan(
    site: Annotated[str, typer.Argument(help="The site to fail over to.")],
    fmt: FormatOpt = "text",
    force: Annotated[bool, typer.Option("--force", help="Plan even if SITE is active.")] = False,
    emergency: Annotated[bool, typer.Option("--emergency", help="Plan an emergency run.")] = False,
    var: VarOpt = None,
    secret_var: SecretVarOpt = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Preview a failover to SITE without running it: waves, hosts, rendered commands, predicted
    durations (history median, else expect) and the predicted RTO with its critical path.

    Example: drx plan site-b --format mermaid
    """
    from orchestrator import session

    _check_format(fmt, ("text", "json", "dot", "mermaid"))
    opts = _options(runbook, inventory, state_dir, log_format, verbose)
    typer.echo(
        session.preview_failover(opts, site, fmt, force, emergency, var or [], secret_var or []),
        nl=False,
    )


@app.command()
def failover(
    site: Annotated[str, typer.Argument(help="The site to fail over to.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve every manual gate.")] = False,
    emergency: Annotated[
        bool,
        typer.Option("--emergency", help="Real disaster: the source may be gone."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Run even if SITE is active.")] = False,
    max_parallel: Annotated[
        int, typer.Option("--max-parallel", min=1, help="Steps running at once.")
    ] = 32,
    fmt: FormatOpt = "text",
    var: VarOpt = None,
    secret_var: SecretVarOpt = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Fail the service over to SITE: run the runbook's DAG, poll health at SITE, measure the RTO.

    Example: drx failover site-b --yes
    """
    from orchestrator import session

    opts = _options(runbook, inventory, state_dir, log_format, verbose)
    if dry_run:
        _check_format(fmt, ("text", "json", "dot", "mermaid"))
        typer.echo(
            session.preview_failover(
                opts, site, fmt, force, emergency, var or [], secret_var or []
            ),
            nl=False,
        )
        return
    code = session.run_failover(
        opts,
        site,
        yes=yes,
        emergency=emergency,
        force=force,
        max_parallel=max_parallel,
        cli_vars=var or [],
        secret_vars=secret_var or [],
    )
    raise typer.Exit(code)


@app.command()
def failback(
    run: Annotated[str | None, typer.Option("--run", help="The failover run to reverse.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the reverse plan.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Approve gates and outcome-unknown steps.")
    ] = False,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1)] = 32,
    fmt: FormatOpt = "text",
    var: VarOpt = None,
    secret_var: SecretVarOpt = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Reverse a failover: undo what it did, in reverse dependency order, then poll health at the
    original source. Default: the latest failover not yet failed back.

    Example: drx failback --dry-run; drx failback --yes
    """
    from orchestrator import session

    opts = _options(runbook, inventory, state_dir, log_format, verbose)
    if dry_run:
        _check_format(fmt, ("text", "json", "dot", "mermaid"))
    code = session.run_failback(
        opts,
        run,
        dry_run=dry_run,
        fmt=fmt,
        yes=yes,
        max_parallel=max_parallel,
        cli_vars=var or [],
        secret_vars=secret_var or [],
    )
    raise typer.Exit(code)


@app.command()
def resume(
    run: Annotated[str | None, typer.Argument(help="The run to continue.")] = None,
    rerun_inflight: Annotated[
        bool,
        typer.Option("--rerun-inflight", help="Re-run steps that were running when it stopped."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve every manual gate.")] = False,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1)] = 32,
    var: VarOpt = None,
    secret_var: SecretVarOpt = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Continue a failed, cancelled or crashed run in a new run; succeeded steps are not re-run.

    Example: drx resume --yes
    """
    from orchestrator import session

    opts = _options(runbook, inventory, state_dir, log_format, verbose)
    code = session.run_resume(
        opts,
        run,
        rerun_inflight=rerun_inflight,
        yes=yes,
        max_parallel=max_parallel,
        cli_vars=var or [],
        secret_vars=secret_var or [],
    )
    raise typer.Exit(code)


@app.command()
def runs(
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    state_dir: StateDirOpt = None,
) -> None:
    """List past runs: id, runbook, direction, site, status, measured RTO vs target, RPO.

    Example: drx runs --format json
    """
    from orchestrator import session

    _check_format(fmt, ("table", "json"))
    typer.echo(session.list_runs(_state_dir(state_dir), fmt), nl=False)


@app.command()
def report(
    run: Annotated[str | None, typer.Argument(help="Run id (default: the latest).")] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="text, md, html, json or junit.")
    ] = "text",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to FILE.")] = None,
    compare: Annotated[
        str | None, typer.Option("--compare", help="Compare with another run.")
    ] = None,
    state_dir: StateDirOpt = None,
) -> None:
    """The post-drill report of a run (default: the latest).

    Example: drx report --format html -o drill.html
    """
    from orchestrator import session

    _check_format(fmt, ("text", "md", "html", "json", "junit"))
    text = session.report(_state_dir(state_dir), run, fmt, compare, color=output is None)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(text, nl=False)


@app.command()
def status(state_dir: StateDirOpt = None) -> None:
    """Show the active site, the latest run, and whether a run holds the lock.

    Example: drx status --state-dir /var/lib/drx
    """
    from orchestrator import session

    typer.echo(session.status(_state_dir(state_dir)), nl=False)


# -- entry point ------------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    color = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    prefix = "\x1b[31merror:\x1b[0m " if color else "error: "
    print(prefix + message, file=sys.stderr)
    raise SystemExit(code)


def _debug_log_dir(argv: list[str]) -> Path:
    for i, arg in enumerate(argv):
        if arg == "--state-dir" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--state-dir="):
            return Path(arg.split("=", 1)[1])
    return _state_dir(None)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line for an expected error, a debug log for an unexpected one.

    Called as the console script (no ``argv``), it ends the process with ``os._exit`` once
    everything is written and flushed: tearing down the interpreter (networkx, Jinja2,
    Paramiko, rich...) would add ~90 ms to every command, and every file drx writes is already
    closed and fsynced by then.
    """
    if argv is not None:
        _main(argv)
        return
    code: int | str | None = 0
    try:
        _main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing left to say
        pass
    os._exit(code)


def _main(args: list[str]) -> None:
    try:
        app(args=args, prog_name="drx", standalone_mode=True)
    except ValidationError as exc:
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        errors = sum(1 for p in exc.problems if p.severity == "error")
        _fail(f"{errors} error(s); nothing was run", 2)
    except DrxError as exc:
        _fail(str(exc), exc.exit_code)
    except OSError as exc:  # a path that cannot be written or read (report -o, --state-dir)
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception:
        import datetime
        import traceback

        directory = _debug_log_dir(args)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / "debug.log"
            with path.open("a", encoding="utf-8") as fh:
                fh.write(f"--- {datetime.datetime.now(datetime.UTC).isoformat()} drx {args}\n")
                fh.write(traceback.format_exc())
            where = str(path)
        except OSError:
            where = "(could not write the debug log)"
            traceback.print_exc()
        _fail(f"unexpected internal error; the traceback is in {where}", 70)


if __name__ == "__main__":
    main()
