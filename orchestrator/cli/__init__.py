"""The ``drx`` command line: parses options, calls the core, maps errors to exit codes.

``app`` (typer) lives in :mod:`orchestrator.cli.app`; each command in a module of its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

# Commands register themselves on ``app`` when imported, in the order ``drx --help`` lists them.
# isort: off
from orchestrator.cli import (  # noqa: F401
    init,
    validate,
    check,
    failover,
    failback,
    drill,
    reprotect,
    resume,
    runs,
    report,
    bundle,
    logs,
    status,
    state,
    schema,
    control,
    serve,
)

# isort: on
from orchestrator.cli import say
from orchestrator.cli.app import app, state_dir_path
from orchestrator.errors import DrxError, ExitCode, ValidationError

__all__ = ["app", "main"]


def _fail(message: str, code: ExitCode) -> NoReturn:
    say.error(message, int(code))
    raise SystemExit(int(code))


def _debug_log_dir(argv: list[str]) -> Path:
    for i, arg in enumerate(argv):
        if arg == "--state-dir" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--state-dir="):
            return Path(arg.split("=", 1)[1])
    return state_dir_path(None)


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
    journal = sys.modules.get("orchestrator.record.journal")  # imported only by runs
    if journal is not None:
        journal.flush_open()  # a run ended by an unexpected error: its last events too
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing left to say
        pass
    os._exit(code)


def _main(args: list[str]) -> None:
    with say.log_format(say.wanted_format(args)):
        _run(args)


def _secret_mask(args: list[str]) -> Callable[[str], str]:
    """Masks the values of ``--secret-var NAME=VALUE`` and ``DRX_SECRET_*`` in what the debug
    log keeps of the command line and the traceback."""
    from orchestrator.model.templating import Redactor

    values = [v for k, v in os.environ.items() if k.startswith("DRX_SECRET_")]
    for i, arg in enumerate(args):
        given = args[i + 1] if arg == "--secret-var" and i + 1 < len(args) else None
        if arg.startswith("--secret-var="):
            given = arg.removeprefix("--secret-var=")
        if given is not None and "=" in given:
            values.append(given.split("=", 1)[1])
    return Redactor(values)


def _run(args: list[str]) -> None:
    try:
        app(args=args, prog_name="drx", standalone_mode=True)
    except ValidationError as exc:
        for problem in exc.problems:
            say.say(
                problem.severity,
                problem.message,
                str(problem),
                file=problem.file,
                line=problem.line,
                column=problem.column,
                step=problem.step,
                hint=problem.hint,
            )
        errors = sum(1 for p in exc.problems if p.severity == "error")
        _fail(f"{errors} error(s); nothing was run", ExitCode.REFUSED)
    except DrxError as exc:
        _fail(str(exc), exc.exit_code)
    except OSError as exc:  # a path that cannot be written or read (report -o, --state-dir)
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", ExitCode.REFUSED)
    except KeyboardInterrupt:
        _fail("interrupted", ExitCode.CANCELLED)
    except Exception:
        import datetime
        import traceback

        directory = _debug_log_dir(args)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = directory / "debug.log"
            fd = os.open(  # may hold secrets: owner-only, never through a link
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600
            )
            mask = _secret_mask(args)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                now = datetime.datetime.now(datetime.UTC).isoformat()
                fh.write(mask(f"--- {now} drx {args}\n"))
                fh.write(mask(traceback.format_exc()))
            where = str(path)
        except OSError:
            where = "(could not write the debug log)"
            traceback.print_exc()
        _fail(f"unexpected internal error; the traceback is in {where}", ExitCode.INTERNAL)
