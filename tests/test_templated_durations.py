"""Durations may be templates: those that use only variables are checked when the plan is
built (garbage is refused at its line, exit 2, nothing runs); those that read earlier steps'
results are rendered when the step starts (garbage fails that step, naming it)."""

from __future__ import annotations

import json

from tests.drill import World

RUNBOOK = """
    name: timed
    vars: {settle: 2s, patience: 30s}
    steps:
      - id: measure
        hosts: db@target
        run: echo {{ vars.wait_for }}
        capture: text
      - id: settle
        kind: wait
        duration: "{{ vars.settle }}"
        needs: [measure]
      - id: slow
        hosts: db@target
        run: 'sleep 3; touch "$DRX_HOST_DIR/slow-done"'
        timeout: "{{ steps['measure'].value }}"
        needs: [measure]
    """


def test_variable_durations_are_planned_and_step_durations_decided_at_start(
    world: World, capsys
) -> None:
    """duration from --var is the plan's prediction for the wait; the timeout that reads
    measure's value is applied when the step starts (a 1s timeout kills a 3 s command)."""
    world.write_runbook(RUNBOOK)
    code, err = world.run(
        capsys, "plan", "site-b", "--format", "json", "--var", "settle=0.2", "--var", "wait_for=1s"
    )
    assert code == 0, err
    steps = {s["id"]: s for s in json.loads(world.last_stdout)["steps"]}
    assert steps["settle"]["duration_s"] == 0.2 and steps["settle"]["predicted_s"] == 0.2
    code, err = world.run(
        capsys, "failover", "site-b", "--yes", "--var", "settle=0.2", "--var", "wait_for=1s"
    )
    assert code == 1
    summary = world.summary()
    slow = next(s for s in summary["steps"] if s["id"] == "slow")
    assert slow["status"] == "failed" and slow["hosts"][0]["error"] == "timeout"
    assert not world.host_file("db-b", "slow-done").exists()


def test_a_duration_from_a_step_that_is_no_duration_fails_that_step(world: World, capsys) -> None:
    """measure prints 'soon': the step whose timeout reads it fails before running, naming the
    field and the value; the run fails (exit 1)."""
    world.write_runbook(RUNBOOK)
    code, _ = world.run(capsys, "failover", "site-b", "--yes", "--var", "wait_for=soon")
    assert code == 1
    slow = next(s for s in world.summary()["steps"] if s["id"] == "slow")
    assert slow["status"] == "failed"
    assert "timeout renders to 'soon', not a duration" in (slow.get("message") or "")
    assert not world.host_file("db-b", "slow-done").exists()


def test_a_variable_duration_that_is_garbage_is_refused_at_plan_time(world: World, capsys) -> None:
    """--var settle=forever makes the wait's duration garbage: exit 2 at its line, nothing runs."""
    world.write_runbook(RUNBOOK)
    code, err = world.run(
        capsys, "failover", "site-b", "--yes", "--var", "settle=forever", "--var", "wait_for=1s"
    )
    assert code == 2
    assert "runbook.yaml:11" in err and "duration renders to 'forever', not a duration" in err
    assert world.run_dirs() == []
