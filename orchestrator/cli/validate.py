"""``drx validate``."""

from __future__ import annotations

from orchestrator.cli import say
from orchestrator.cli.app import (
    InventoryOpt,
    LogFormatOpt,
    RunbookOpt,
    StateDirOpt,
    StateUrlOpt,
    VerboseOpt,
    app,
    options,
)
from orchestrator.cli.options import Options, other_sites
from orchestrator.errors import Problem, ValidationError


def check(opts: Options) -> list[Problem]:
    """Plan a failover from the active site to every other site; return the warnings."""
    from orchestrator.plan.build import build_plan

    runbook, inventory = opts.load_checked(other_sites)
    # dicts as ordered sets: the same problem found for several sites is reported once
    problems: dict[Problem, None] = {}
    warnings: dict[Problem, None] = {}
    for site in inventory.sites:
        if site == inventory.active:
            continue
        try:
            plan = build_plan(runbook, inventory, site, source=inventory.active)
        except ValidationError as exc:
            problems.update(dict.fromkeys(exc.problems))
            continue
        warnings.update(dict.fromkeys(plan.warnings))
    if problems:
        raise ValidationError([*problems, *warnings])
    return list(warnings)


@app.command()
def validate(
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Check the runbook and inventory: the plan of a failover from the active site to every other
    site. Prints warnings (e.g. a command step with no undo) and errors; exit 2 on errors.

    Example: drx validate -r runbooks/webapp.yaml -i inventory/ssh.yaml
    """
    opts = options(runbook, inventory, state_dir, log_format, verbose, state_url)
    warnings = check(opts)
    for w in warnings:
        say.say("warning", w.message, str(w), file=w.file, line=w.line, step=w.step, hint=w.hint)
    say.info(f"ok: {len(warnings)} warning(s)", warnings=len(warnings))
