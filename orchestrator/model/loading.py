"""Finding and loading the runbook and inventory together, so one invocation reports the problems
of both files at once."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.bulk import paused_gc
from orchestrator.errors import Problem, UsageError, ValidationError
from orchestrator.model.inventory import Inventory, parse_inventory
from orchestrator.model.runbook import Runbook
from orchestrator.model.siteplan import load_runbook

RUNBOOK_CANDIDATES = ("runbook.yaml", "runbooks/webapp.yaml")
INVENTORY_CANDIDATES = ("inventory.yaml", "inventory/local.yaml")


def _find(given: str | None, env: str, candidates: tuple[str, ...], what: str) -> str:
    if given:
        return given
    if os.environ.get(env):
        return os.environ[env]
    for candidate in candidates:
        if Path(candidate).is_file():
            return candidate
    raise UsageError(
        f"no {what} given and none found here (looked for {', '.join(candidates)}); "
        f"use --{what} FILE or set {env}"
    )


def resolve_paths(runbook: str | None, inventory: str | None) -> tuple[str, str]:
    """The runbook and inventory paths: option, else environment, else the usual places."""
    return (
        _find(runbook, "DRX_RUNBOOK", RUNBOOK_CANDIDATES, "runbook"),
        _find(inventory, "DRX_INVENTORY", INVENTORY_CANDIDATES, "inventory"),
    )


def load_partial(
    runbook_path: str, inventory_path: str
) -> tuple[Runbook | None, Inventory | None, list[Problem], bool]:
    """Load both files, keeping what could be read: (runbook, inventory, problems, whether the
    inventory itself is sound enough to check the runbook's plan against it)."""
    with paused_gc():
        runbook, rb_problems = load_runbook(runbook_path)
        inventory, inv_problems = parse_inventory(inventory_path)
    inventory_ok = inventory is not None and not any(p.severity == "error" for p in inv_problems)
    return runbook, inventory, [*rb_problems, *inv_problems], inventory_ok


def load_both(runbook_path: str, inventory_path: str) -> tuple[Runbook, Inventory]:
    """Load both files; raise one ValidationError with the problems of both."""
    runbook, inventory, problems, _ = load_partial(runbook_path, inventory_path)
    if runbook is None or inventory is None or any(p.severity == "error" for p in problems):
        raise ValidationError(problems)
    return runbook, inventory
