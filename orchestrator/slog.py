"""structlog, imported without its optional rich integration.

structlog imports ``rich.console``, ``rich.pretty`` and ``rich.traceback`` when rich is installed (typer brings
it), to render exceptions in its own console renderer — which drx does not use: drx renders
its log lines itself (``orchestrator.run.live``). Those imports cost every run command ~70 ms
of start-up, so they are kept out while structlog is imported; structlog then falls back to
its plain renderers.
"""

from __future__ import annotations

import sys
from types import ModuleType

#: what structlog imports only for renderers drx does not use
_UNUSED = ("rich.console", "rich.pretty", "rich.traceback")


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


structlog = _import()
