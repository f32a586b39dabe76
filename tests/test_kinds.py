"""Step kinds as a table: a kind registered in-process (one class, one register call, no other
file) is validated, planned, previewed, run in a failover on local hosts and reported; the
built-in kinds are the registry's, in the order the reference lists them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator import kinds
from orchestrator.kinds import Kind, StepRunner, kind_of, register, unregister
from orchestrator.model.reference import FieldDoc, Type
from orchestrator.model.runbook import StepKind
from orchestrator.record.outcomes import Status, StepOutcome
from tests.drill import World

if TYPE_CHECKING:
    from orchestrator.model.fields import Fields
    from orchestrator.model.runbook import Step
    from orchestrator.model.yaml_source import LMap
    from orchestrator.plan.build import PlanStep

LOCAL = pytest.mark.parametrize("world", ["local"], indirect=True)


class Noop(Kind):
    """A kind that runs nothing and succeeds at once, saying its ``note`` (a field of its own)."""

    name = "noop"
    hosts_label = "nobody"
    own_fields = ("note",)
    required = ("note",)
    field_docs = (FieldDoc("note", Type.TEXT, "—", "What the noop step says.", "done"),)
    ran: list[str] = []  # noqa: RUF012 - the ids this kind executed, in order

    def check_fields(self, f: Fields, data: LMap, *, undo: bool) -> None:
        for key in ("hosts", "run"):
            if key in data:
                f.error(key, f"a noop step runs nothing: it cannot have '{key}'")
        super().check_fields(f, data, undo=undo)

    def own_values(self, f: Fields) -> dict[str, Any]:
        return {"options": {"note": f.text("note")}}

    def fixed_duration(self, step: Step) -> float | None:
        return 0.0

    def execute(self, runner: StepRunner, ps: PlanStep) -> StepOutcome:
        self.ran.append(ps.id)
        assert ps.step.options is not None
        return StepOutcome(ps.id, Status.SUCCEEDED, message=ps.step.options["note"])

    def preview_entry(self, ps: PlanStep, redact: Any) -> dict[str, Any]:
        return {"noop": True}

    def preview_lines(self, ps: PlanStep, redact: Any) -> list[str]:
        return ["      does nothing"]


@pytest.fixture
def noop() -> Iterator[Noop]:
    kind = Noop()
    kind.ran = []
    register(kind)
    yield kind
    unregister("noop")


RUNBOOK = """
    name: with-noop
    steps:
      - {id: first, hosts: db@target, run: 'touch "$DRX_HOST_DIR/first"', undo: 'true'}
      - {id: pause, kind: noop, note: nothing to do, needs: [first]}
      - {id: last, hosts: app@target, run: 'touch "$DRX_HOST_DIR/last"', undo: 'true',
         needs: [pause]}
"""


def test_built_in_kinds_are_the_registry_in_reference_order() -> None:
    """The registry holds command, check, manual, wait, runbook (in that order), each the kind
    its StepKind names; an unregistered name reads as a plain kind with no special rules."""
    assert kinds.names() == [k.value for k in StepKind]
    assert kinds.names(listed_only=True) == ["command", "check", "manual", "wait"]
    assert kind_of("manual").gate and kind_of("check").polls
    assert kind_of("command").runs_commands and not kind_of("wait").runs_commands
    assert not kind_of("no-such-kind").gate


@LOCAL
def test_a_registered_kind_is_validated_by_its_own_rules(world: World, capsys, noop) -> None:
    """drx validate accepts a noop step, and refuses one with 'run' by the kind's own message,
    naming the file, line and step (exit 2); a mistyped kind is offered the new one."""
    world.write_runbook(RUNBOOK)
    code, err = world.run(capsys, "validate")
    assert code == 0, err
    world.write_runbook("""
        name: bad-noop
        steps:
          - id: pause
            kind: noop
            run: 'true'
            note: runs
          - {id: other, kind: nop, note: typo}
          - {id: bare, kind: noop}
          - {id: cmd, hosts: db@target, run: 'true', note: mine}
    """)
    code, err = world.run(capsys, "validate")
    assert code == 2
    assert (
        f"{world.runbook}:6: error: step 'pause': a noop step runs nothing: it cannot have 'run'"
        in err
    )
    assert "unknown kind 'nop' (command, check, manual, wait, noop)" in err
    assert "did you mean 'noop'?" in err
    assert "step 'bare': missing required field 'note' in step 'bare'" in err
    assert "step 'cmd': 'note' belongs to a kind: noop step only" in err
    assert noop.ran == []


def test_a_registered_kind_is_in_the_json_schema(noop) -> None:
    """The runbook JSON Schema offers the registered kind, describes its own field and requires
    it of the kind's steps; the reference's step table lists the field."""
    from orchestrator.model.reference import all_docs
    from orchestrator.model.schema import runbook_schema

    step = runbook_schema()["$defs"]["step"]
    assert "noop" in step["properties"]["kind"]["enum"]
    assert step["properties"]["note"]["description"].startswith("What the noop step says.")
    assert "note" in [d.name for d in all_docs()["step"]]  # the reference's step table
    when = {"properties": {"kind": {"const": "noop"}}, "required": ["kind"]}
    assert {"if": when, "then": {"required": ["note"]}} in step["allOf"]


def test_an_unregistered_kind_and_its_fields_are_unknown_again(tmp_path) -> None:
    """Once the noop kind is unregistered, its name is an unknown kind and its field an
    unknown field (the registry is the only place a kind is known)."""
    from orchestrator.model.runbook import parse_runbook

    register(Noop())
    unregister("noop")
    path = tmp_path / "rb.yaml"
    path.write_text("name: x\nsteps:\n  - {id: a, kind: noop, note: hi}\n")
    _, problems = parse_runbook(path)
    messages = [p.message for p in problems]
    assert any(m.startswith("unknown field 'note'") for m in messages), messages
    assert any(m.startswith("unknown kind 'noop'") for m in messages), messages


@LOCAL
def test_a_registered_kind_is_planned_and_previewed(world: World, capsys, noop) -> None:
    """drx plan shows the noop step with its kind, its own preview line and entry, and its
    fixed duration as the prediction; it resolves no hosts."""
    world.write_runbook(RUNBOOK)
    code, err = world.run(capsys, "plan", "site-b")
    assert code == 0, err
    text = world.last_stdout
    assert "pause (noop)" in text
    assert "      does nothing" in text
    code, err = world.run(capsys, "plan", "site-b", "--format", "json")
    assert code == 0, err
    doc = json.loads(world.last_stdout)
    step = next(s for s in doc["steps"] if s["id"] == "pause")
    assert step["kind"] == "noop"
    assert step["noop"] is True
    assert step["hosts"] == []
    assert (step["predicted_s"], step["prediction_source"]) == (0.0, "expect")
    assert [s["wave"] for s in doc["steps"]] == [0, 1, 2]


@LOCAL
def test_a_registered_kind_runs_in_a_failover(world: World, capsys, noop) -> None:
    """A failover runs the noop step between its needs and its dependents (the hosts' files
    are written in order), records it in the summary with its kind and message, and the text
    report shows it with the kind's label in place of hosts."""
    world.write_runbook(RUNBOOK)
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    assert noop.ran == ["pause"]
    assert world.host_file("db-b", "first").exists()
    assert world.host_file("app-b", "last").exists()
    summary = world.summary()
    assert summary["status"] == "succeeded"
    step = world.step(summary, "pause")
    assert (step["kind"], step["status"], step["message"]) == ("noop", "succeeded", "nothing to do")
    assert step["hosts"] == []
    first, pause, last = (world.step(summary, s) for s in ("first", "pause", "last"))
    assert first["start_offset_s"] <= pause["start_offset_s"] <= last["start_offset_s"]
    code, err = world.run(capsys, "report")
    assert code == 0, err
    steps = world.last_stdout.split("Steps — ")[1]
    row = next(line for line in steps.splitlines() if " pause " in line)
    assert row.split()[2:6] == ["pause", "noop", "succeeded", "nobody"]
