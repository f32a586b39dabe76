"""structlog, imported when first needed and without its optional rich integration.

structlog imports ``rich.console``, ``rich.pretty`` and ``rich.traceback`` when rich is
installed (typer brings it), to render exceptions in its own console renderer — which drx does
not use: drx renders its log lines itself (``orchestrator.run.live``). Those imports cost every
run command ~70 ms of start-up, so they are kept out while structlog is imported; structlog
then falls back to its plain renderers.

structlog itself (with ``asyncio``, ``ssl`` and ``logging``, which its stdlib module imports:
~30 ms more) is imported only when a line goes through it. A run's own step lines on the
console do not (the log view renders them itself), so ``configure`` keeps drx's configuration
pending until something asks for ``structlog()``, which applies it first.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Protocol

#: what structlog imports only for renderers drx does not use
_UNUSED = ("rich.console", "rich.pretty", "rich.traceback")


class Setup(Protocol):
    """A structlog configuration to apply once structlog is imported."""

    def apply(self, structlog: ModuleType) -> None: ...


_pending: Setup | None = None


def _import() -> ModuleType:
    if "structlog" in sys.modules:
        return sys.modules["structlog"]
    held = [name for name in _UNUSED if name not in sys.modules]
    for name in held:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it fails
    try:
        import structlog
    finally:
        for name in held:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return structlog


def loaded() -> bool:
    """Whether structlog is imported already."""
    return "structlog" in sys.modules


def structlog() -> ModuleType:
    """structlog, imported if need be, with a pending ``configure`` applied."""
    global _pending
    module = _import()
    setup, _pending = _pending, None
    if setup is not None:
        setup.apply(module)
    return module


def configure(setup: Setup | None, *, now: bool = False) -> None:
    """Make ``setup`` structlog's configuration: at once if structlog is imported (or ``now``),
    else when it first is. None drops a pending one."""
    global _pending
    _pending = setup
    if setup is not None and (now or loaded()):
        structlog()


def pending() -> Setup | None:
    """The configuration waiting for structlog's import, if any."""
    return _pending
