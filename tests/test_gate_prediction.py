"""A manual gate's predicted duration comes from runs where a person answered it (never from
--yes runs, which answer in a millisecond), else its expect; the plan shows the operator's time
at gates apart from the automated time."""

from __future__ import annotations

import json

import pytest

from tests.drill import World

pytestmark = pytest.mark.parametrize("world", ["local"], indirect=True)

RUNBOOK = """
    name: gated
    steps:
      - {id: prep, hosts: db@target, run: 'sleep 0.05', undo: 'true', expect: 1s}
      - {id: approve, kind: manual, prompt: Go?, needs: [prep], expect: 2m}
      - {id: switch, hosts: app@target, run: 'true', undo: 'true', needs: [approve], expect: 1s}
"""


def plan_json(world: World, capsys) -> dict:
    code, err = world.run(capsys, "plan", "site-b", "--format", "json")
    assert code == 0, err
    return json.loads(world.last_stdout)


def step(doc: dict, sid: str) -> dict:
    return next(s for s in doc["steps"] if s["id"] == sid)


def test_gate_prediction_ignores_yes_runs_and_uses_answered_ones(world: World, capsys) -> None:
    """After --yes drills the gate is still predicted from expect (2 min); once a run where a
    person answered in 42 s is on record, from that; operator time is shown apart."""
    world.write_runbook(RUNBOOK)
    for _ in range(2):
        assert world.run(capsys, "failover", "site-b", "--yes")[0] == 0
        assert world.run(capsys, "failback", "--yes")[0] == 0
    doc = plan_json(world, capsys)
    gate = step(doc, "approve")
    assert (gate["prediction_source"], gate["predicted_s"]) == ("expect", 120.0)
    assert step(doc, "prep")["prediction_source"] == "history"
    assert doc["predicted_operator_s"] == 120.0
    assert doc["predicted_automated_s"] == pytest.approx(doc["predicted_rto_s"] - 120.0)
    # a drill where a person answered the gate after 42 s
    failover = next(d for d in world.run_dirs() if "-failover-" in d.name)
    path = failover / "summary.json"
    summary = json.loads(path.read_text())
    for s in summary["steps"]:
        if s["id"] == "approve":
            s.update(approved_via="terminal", manual_wait_s=42.0, duration_s=42.0)
    summary["yes"] = False
    path.write_text(json.dumps(summary))
    doc = plan_json(world, capsys)
    gate = step(doc, "approve")
    assert (gate["prediction_source"], gate["predicted_s"]) == ("history", 42.0)
    assert doc["predicted_operator_s"] == 42.0
    world.run(capsys, "plan", "site-b")
    assert "operator at gates 42" in world.last_stdout
