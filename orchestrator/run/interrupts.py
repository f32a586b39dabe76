"""Where Ctrl-C goes while drx works: to the innermost part that asked for it (a run's executor,
a drill's hold between its legs), else the usual ``KeyboardInterrupt``.

The process's SIGINT handler is installed once, by the command line (``orchestrator.cli.edge``);
the code that runs plans only routes Ctrl-C to its handler for as long as it needs it, so that it
changes nothing process-wide and can run in-process, twice, without one run acting on the next.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import FrameType


class Interrupts:
    """A stack of Ctrl-C handlers; an instance is the SIGINT handler that calls the top one."""

    def __init__(self) -> None:
        self._handlers: list[Callable[[], None]] = []

    @contextlib.contextmanager
    def routed_to(self, handler: Callable[[], None]) -> Iterator[None]:
        """Ctrl-C calls ``handler`` until the block ends (then whatever it called before)."""
        self._handlers.append(handler)
        try:
            yield
        finally:
            self._handlers.remove(handler)

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self._handlers:
            self._handlers[-1]()
        else:
            signal.default_int_handler(signum, frame)


def routed(
    interrupts: Interrupts | None, handler: Callable[[], None]
) -> AbstractContextManager[None]:
    """``interrupts.routed_to(handler)``; nothing when no Ctrl-C is routed (a library caller)."""
    return interrupts.routed_to(handler) if interrupts is not None else contextlib.nullcontext()
