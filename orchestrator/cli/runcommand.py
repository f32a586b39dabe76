"""What the run commands (failover, failback, resume, drill, reprotect) share: the options each
takes the same way, one builder of what a command gets from them (:class:`RunInputs`), and
:func:`run_command`, which adds those options to a command's signature — so that a command
declares only its own — and runs it inside the process edge (``orchestrator.cli.edge``)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.app import (
    CommentOpt,
    InventoryOpt,
    LogFormatOpt,
    NotifyOpt,
    RunbookOpt,
    SecretVarOpt,
    StateDirOpt,
    StateUrlOpt,
    VarOpt,
    VerboseOpt,
    options,
)
from orchestrator.cli.options import Options, secret_inputs, warn_unknown_vars

if TYPE_CHECKING:
    from orchestrator.model.inventory import Inventory
    from orchestrator.model.runbook import Runbook

# Options that several run commands declare with the same words.
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Approve every manual gate.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run even if SITE is active.")]
MaxParallelOpt = Annotated[
    int, typer.Option("--max-parallel", min=1, help="Steps running at once.")
]
MaxParallelPlainOpt = Annotated[int, typer.Option("--max-parallel", min=1)]


@dataclass(frozen=True)
class RunInputs:
    """What every run command gets from the options it shares with the others."""

    opts: Options
    cli_vars: list[str]  # --var NAME=VALUE
    secret_vars: list[str]  # --secret-var NAME=VALUE

    def variables(self) -> tuple[dict[str, Any], list[str]]:
        """The variables given (``--var``, ``--secret-var``, ``DRX_SECRET_*``) and the secret
        values among them."""
        return secret_inputs(self.cli_vars, self.secret_vars)

    def warn_unknown(self, runbook: Runbook, inventory: Inventory) -> None:
        """A warning for each variable name given that nothing uses."""
        warn_unknown_vars(runbook, inventory, self.cli_vars, self.secret_vars)

    def checked_variables(
        self, runbook: Runbook, inventory: Inventory
    ) -> tuple[dict[str, Any], list[str]]:
        """:meth:`variables`, after :meth:`warn_unknown`."""
        self.warn_unknown(runbook, inventory)
        return self.variables()


def run_inputs(
    var: VarOpt = None,
    secret_var: SecretVarOpt = None,
    notify: NotifyOpt = None,
    comment: CommentOpt = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> RunInputs:
    """The run commands' shared options, in the order ``--help`` lists them (after each
    command's own), made into :class:`RunInputs`."""
    opts = options(
        runbook,
        inventory,
        state_dir,
        log_format,
        verbose,
        state_url,
        notify=notify,
        comment=comment,
    )
    return RunInputs(opts, var or [], secret_var or [])


def run_command(command: Callable[..., int | None]) -> Callable[..., None]:
    """``command`` with the shared options added to its signature (typer reads it) in place of
    its ``inputs: RunInputs`` parameter. Called, it builds the inputs, runs ``command`` at the
    process edge (:func:`at_the_edge`) and exits with the code the command returns (None: a
    dry run, exit 0)."""
    own = _parameters(command, skip="inputs")
    shared = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in _parameters(run_inputs)]

    @functools.wraps(command)
    def run(**given: Any) -> None:
        inputs = run_inputs(**{p.name: given.pop(p.name) for p in shared})
        with at_the_edge(inputs, logging=not given.get("dry_run", False)) as ready:
            code = command(**given, inputs=ready)
        if code is not None:
            raise typer.Exit(code)

    run.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
    return run


@contextlib.contextmanager
def at_the_edge(inputs: RunInputs, *, logging: bool = True) -> Iterator[RunInputs]:
    """``inputs`` as a run command uses them, for the block: drx's log configured and Ctrl-C
    routed to the run in progress (``orchestrator.cli.edge``); both as they were afterwards."""
    from orchestrator.cli import edge

    opts = inputs.opts
    with edge.installed(opts.log_format, opts.verbose, logging=logging) as interrupts:
        yield dataclasses.replace(inputs, opts=dataclasses.replace(opts, interrupts=interrupts))


def _parameters(function: Callable[..., Any], skip: str = "") -> list[inspect.Parameter]:
    """``function``'s parameters with their annotations resolved (typer needs the objects)."""
    hints = typing.get_type_hints(function, include_extras=True)
    return [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(function).parameters.values()
        if p.name != skip
    ]
