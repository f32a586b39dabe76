"""What a run command changes for the whole process, installed here at the command line's edge
and put back as it was when the command ends: how drx's log lines are written (structlog:
console lines or JSON on stderr) and where Ctrl-C goes (one SIGINT handler that routes to the
run or the drill's hold in progress, ``orchestrator.run.interrupts``). The JSON wrapping of
stderr is the other such change; ``say.log_format`` makes it for every command.

The runner itself installs none of these, so a program can run plans in-process, one after
another, without one run's settings reaching the next."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.run.interrupts import Interrupts


@contextlib.contextmanager
def installed(log_format: str, verbose: int, *, logging: bool = True) -> Iterator[Interrupts]:
    """For one run command: the log configured (unless ``logging`` is False: a dry run logs
    nothing) and Ctrl-C routed through the :class:`Interrupts` it yields."""
    from orchestrator.run.interrupts import Interrupts

    interrupts = Interrupts()
    with contextlib.ExitStack() as stack:
        if logging:
            stack.enter_context(_logging(log_format, verbose))
        stack.enter_context(_sigint(interrupts))
        yield interrupts


@contextlib.contextmanager
def _logging(log_format: str, verbose: int) -> Iterator[None]:
    from orchestrator import slog
    from orchestrator.run.live import configure_logging, unconfigure_logging

    # structlog is imported when a line first goes through it (orchestrator.slog); what was
    # configured before, if it was imported, is put back
    saved = None
    if slog.loaded() and slog.structlog().is_configured():
        saved = slog.structlog().get_config()
    configure_logging(log_format, verbose)
    try:
        yield
    finally:
        unconfigure_logging()
        if slog.loaded():
            if saved is None:
                slog.structlog().reset_defaults()
            else:
                slog.structlog().configure(**saved)


@contextlib.contextmanager
def _sigint(interrupts: Interrupts) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a signal handler (and receives SIGINT)
        return
    previous = signal.signal(signal.SIGINT, interrupts)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
