"""The typer app and the options every command shares. Each command lives in a module of its own
in this package; heavy modules (networkx, jinja2, paramiko) are imported inside the commands so that
``drx --help`` stays fast."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator import __version__
from orchestrator.errors import ExitCode

if TYPE_CHECKING:
    from orchestrator.cli.options import Options
    from orchestrator.record.store import Store

EXIT_CODES = (
    "Exit codes: "
    + " · ".join(f"{int(c)} {c.meaning}" for c in ExitCode)
    + ". Refused (2): invalid input, lock held, site already active, a host unreachable at the "
    "pre-flight, source unhealthy, nothing to fail back or resume."
    + "\n\nEvery runbook and inventory field, with defaults and examples: docs/reference.md in "
    "the drx repository. For editors: drx schema runbook (JSON Schema). To start: drx init DIR."
)

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
StateUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--state-url",
        envvar="DRX_STATE_URL",
        help="Keep state, lock and runs in etcd: etcd://HOST:PORT[,…]/PREFIX[?ttl=10s] "
        "(etcds:// with ca=, cert=, key=; user= with the password in DRX_ETCD_PASSWORD).",
    ),
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
AcceptDataLossOpt = Annotated[
    bool,
    typer.Option(
        "--accept-data-loss",
        help="Go on when the runbook's RPO guard trips (measured RPO over rpo_target); "
        "recorded in the run.",
    ),
]
NotifyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--notify",
        envvar="DRX_NOTIFY",
        help="Send run start, waiting gates, RTO at risk and the end to this Apprise URL "
        "(repeatable; DRX_NOTIFY: space-separated).",
    ),
]
CommentOpt = Annotated[
    str | None,
    typer.Option("--comment", help="A comment recorded with every gate approval (evidence)."),
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


def state_dir_path(state_dir: str | None) -> Path:
    return Path(state_dir or os.environ.get("DRX_STATE_DIR") or ".drx")


def store_for(state_dir: str | None, state_url: str | None = None) -> Store:
    """The store named by the common options."""
    return open_checked(state_dir_path(state_dir), state_url)


def runbook_name(runbook: str | None) -> str | None:
    """The ``name`` of the runbook given with -r (or DRX_RUNBOOK), to filter runs by; None
    when no runbook was given (then every runbook's runs are shown)."""
    if not runbook:
        return None
    from orchestrator.errors import ValidationError
    from orchestrator.model.siteplan import load_runbook

    parsed, problems = load_runbook(runbook)
    if parsed is None or any(p.severity == "error" for p in problems):
        raise ValidationError(problems)
    return parsed.name


_WARNED: set[Path] = set()


def open_checked(state_dir: Path, state_url: str | None) -> Store:
    """Open the store; refuse a local state directory another user owns or can write, and
    warn (once) when it lets others read: journals and command output can hold what nobody
    declared secret."""
    from orchestrator.cli import say
    from orchestrator.errors import StateDirError
    from orchestrator.record.store import open_store, readable_by_others, unsafe_state_dir

    if (why := unsafe_state_dir(state_dir)) is not None:
        raise StateDirError(why)
    if state_dir not in _WARNED and readable_by_others(state_dir):
        _WARNED.add(state_dir)
        mode = oct(state_dir.stat().st_mode & 0o777)[2:]
        say.warning(
            f"state directory {state_dir} is readable by others (mode {mode}); journals and "
            f"command output may hold secrets: chmod 700 {state_dir}",
            state_dir=str(state_dir),
            mode=mode,
        )
    return open_store(state_dir, state_url)


def options(
    runbook: str | None,
    inventory: str | None,
    state_dir: str | None,
    log_format: str,
    verbose: int,
    state_url: str | None = None,
    *,
    notify: list[str] | None = None,
    comment: str | None = None,
) -> Options:
    from orchestrator.cli.options import Options

    return Options.create(
        runbook,
        inventory,
        state_dir_path(state_dir),
        log_format,
        verbose,
        state_url,
        notify=tuple(notify or ()),
        comment=comment,
    )


def check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        from orchestrator.errors import UsageError

        raise UsageError(f"unknown format '{fmt}' (choose from {', '.join(allowed)})")
