"""What a step kind is: one object holding everything that differs between kinds.

A kind says which fields it takes and requires (and the messages when they are wrong), how a
step of it runs, how it reads in a plan preview, and what the summary and reports say of it.
The loader, planner, executor and reports ask the kind (``orchestrator.kinds.kind_of``) instead
of testing the kind's name, so a new kind is one module plus its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from orchestrator.model.fields import Fields
    from orchestrator.model.reference import FieldDoc
    from orchestrator.model.runbook import Step
    from orchestrator.model.yaml_source import LMap
    from orchestrator.plan.build import PlanStep
    from orchestrator.record.outcomes import StepOutcome

#: how long a step may take unless it says otherwise (seconds)
DEFAULT_TIMEOUT = 600.0

#: redacts secrets out of a text shown in a preview
Redact = Callable[[str], str]


class StepRunner(Protocol):
    """What a kind's execution may ask of the executor running the step (run/executor.py)."""

    def on_hosts(self, ps: PlanStep) -> StepOutcome:
        """Run the step's command on each of its hosts (retries, serial, polls for a check)."""
        ...

    def ask_operator(self, ps: PlanStep) -> StepOutcome:
        """Ask an operator to approve the step (terminal, drx approve/deny, the web page)."""
        ...

    def pause(self, seconds: float, ps: PlanStep | None = None) -> bool:
        """Sleep up to ``seconds``; False as soon as nothing new may start."""
        ...

    def why_stopped(self) -> str | None:
        """Why nothing new may start (None: it may)."""
        ...


class Kind:
    """A step kind. Subclasses set the class attributes and override what differs."""

    #: the value of ``kind:`` in a runbook
    name: str = ""
    #: what it does, for the reference ("`wait` sleeps `duration`")
    doc: str = ""
    #: the fields its step must have (an undo's ``hosts`` never: it runs where its step ran);
    #: the JSON Schema says so, and :meth:`check_fields` refuses a step without them
    required: tuple[str, ...] = ()
    #: resolves ``hosts``, is pre-flighted, and renders ``run`` on each host
    runs_commands: bool = False
    #: each attempt on a host polls ``run`` until ``until`` holds (a check)
    polls: bool = False
    #: waits for an operator's answer: its time is operator time, not automation
    gate: bool = False
    #: changes something on its hosts (so a failback needs its undo; a standing check counts it)
    changes_hosts: bool = False
    #: named in the hint of an unknown kind
    listed: bool = True
    #: the default of ``timeout``
    default_timeout: float = DEFAULT_TIMEOUT
    #: step fields only this kind takes: any other kind's step naming one is refused. A field
    #: no built-in step has is stored in ``Step.options`` (see :meth:`own_values`) and
    #: described in ``field_docs`` (the reference's step table and the JSON Schema show it)
    own_fields: tuple[str, ...] = ()
    field_docs: tuple[FieldDoc, ...] = ()
    #: what reports show in place of hosts for a step of this kind that ran on none
    hosts_label: str = "—"

    # -- load ----------------------------------------------------------------------------------
    def check_fields(self, f: Fields, data: LMap, *, undo: bool) -> None:
        """Report (through ``f``) what this kind's step lacks or must not say; ``undo`` when it
        is the undo of another step. By default: each ``required`` field it lacks."""
        for key in self.required:
            if not (undo and key == "hosts"):
                f.require(key)

    def own_values(self, f: Fields) -> dict[str, Any]:
        """The ``Step`` fields read from this kind's ``own_fields``: for fields of its own (not
        among the built-in step fields), ``{"options": {field: value}}``."""
        return {}

    # -- plan ----------------------------------------------------------------------------------
    def plan_warnings(self, step: Step, *, mirror: bool) -> list[tuple[int, str]]:
        """Warnings (line, text) a plan carries for this step; ``mirror``: the runbook fails
        back by its own steps, not by undos."""
        return []

    def fixed_duration(self, step: Step) -> float | None:
        """How long the step takes whatever happens (a prediction without history)."""
        return None

    # -- run -----------------------------------------------------------------------------------
    def execute(self, runner: StepRunner, ps: PlanStep) -> StepOutcome:
        """Run the step (its ``when``, hosts and templates already settled)."""
        raise NotImplementedError(f"kind '{self.name}' cannot run")

    # -- preview -------------------------------------------------------------------------------
    def preview_entry(self, ps: PlanStep, redact: Redact) -> dict[str, Any]:
        """What this kind adds to the step's entry in the JSON plan."""
        return {}

    def preview_lines(self, ps: PlanStep, redact: Redact) -> list[str]:
        """What this kind adds under the step in the text preview (after its hosts)."""
        return []
