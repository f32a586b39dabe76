"""Paramiko, imported without invoke.

Paramiko imports invoke (and with it ``unittest.mock`` and ``asyncio``: ~40 ms, a third of
Paramiko's import) only to run the commands of an ssh_config ``Match exec`` line. drx's
transport never needs it, so ``load`` holds it out while Paramiko is imported; an ssh_config
that has such a line gets it when it is read (``allow_match_exec``). A process that imported
Paramiko before drx did keeps Paramiko as it is.
"""

from __future__ import annotations

import sys
from types import ModuleType


def load() -> ModuleType:
    """Paramiko, imported (once) without invoke."""
    if "paramiko" in sys.modules:
        return sys.modules["paramiko"]
    held = "invoke" not in sys.modules
    if held:
        sys.modules["invoke"] = None  # type: ignore[assignment]  # an import of it fails
    try:
        import paramiko
    finally:
        if held and sys.modules.get("invoke", 0) is None:
            del sys.modules["invoke"]
    return paramiko


def allow_match_exec() -> None:
    """Give Paramiko's ssh_config parser invoke, which it runs ``Match exec`` commands with."""
    load()
    import paramiko.config

    if getattr(paramiko.config, "invoke", None) is None:
        import invoke

        paramiko.config.invoke = invoke  # type: ignore[attr-defined]
