"""Drill history: predictions from past runs, the live RTO budget, runs listing, reports from
the CLI, status."""

from __future__ import annotations

import json

from tests.drill import World

RUNBOOK = """
    name: hist
    rto_target: 10m
    health:
      - {name: up, hosts: control, run: 'true', interval: 50ms, timeout: 5s}
    steps:
      - {id: a, hosts: db@target, run: 'sleep 0.1', undo: 'true', expect: 5s}
      - {id: b, hosts: app@target, run: 'sleep 0.2', undo: 'true', needs: [a]}
"""


def _drill(world: World, capsys) -> None:
    assert world.run(capsys, "failover", "site-b")[0] == 0
    assert world.run(capsys, "failback", "--yes")[0] == 0


def test_predictions_come_from_history_after_two_drills(world: World, capsys) -> None:
    """Before any drill the plan predicts from expect (b unknown → lower bound); after two drills
    every step's prediction is the median of past durations, marked history."""
    world.write_runbook(RUNBOOK)
    assert world.run(capsys, "plan", "site-b", "--format", "json")[0] == 0
    before = json.loads(world.last_stdout)
    sources = {s["id"]: s["prediction_source"] for s in before["steps"]}
    assert sources == {"a": "expect", "b": "unknown"}
    assert before["predicted_rto_is_lower_bound"] is True
    _drill(world, capsys)
    _drill(world, capsys)
    assert world.run(capsys, "plan", "site-b", "--format", "json")[0] == 0
    after = json.loads(world.last_stdout)
    steps = {s["id"]: s for s in after["steps"]}
    assert {s["prediction_source"] for s in steps.values()} == {"history"}
    assert 0.1 <= steps["a"]["predicted_s"] < 1.0
    assert 0.2 <= steps["b"]["predicted_s"] < 1.0
    assert after["predicted_rto_is_lower_bound"] is False
    assert after["critical_path"] == ["a", "b"]
    failovers = [s for s in world.summaries() if s["direction"] == "failover"]
    durations = sorted(world.step(s, "a")["duration_s"] for s in failovers)
    assert steps["a"]["predicted_s"] == sum(durations) / 2


def test_rto_budget_at_risk_is_journaled_once_per_crossing(world: World, capsys) -> None:
    """When elapsed + predicted remaining exceeds the target, one rto_budget_at_risk event."""
    world.write_runbook("""
        name: budget
        rto_target: 500ms
        steps:
          - {id: a, hosts: db@target, run: 'sleep 0.3', undo: 'true', expect: 100ms}
          - {id: b, hosts: db@target, run: 'sleep 0.1', undo: 'true', expect: 1s, needs: [a]}
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 0  # the projection (1.1 s) was pessimistic: the run took 0.4 s
    events = [e for e in world.journal() if e["event"] == "rto_budget_at_risk"]
    assert len(events) == 1
    assert events[0]["projected_s"] > 0.5 and events[0]["target_s"] == 0.5
    assert "rto_budget_at_risk" in err


def test_runs_report_and_status_from_the_cli(world: World, capsys) -> None:
    """runs (table, json), report in every format, --compare, and status work on real runs."""
    world.write_runbook(RUNBOOK)
    _drill(world, capsys)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    assert world.run(capsys, "runs")[0] == 0
    table = world.last_stdout
    assert "failover" in table and "failback" in table and "site-b" in table
    assert world.run(capsys, "runs", "--format", "json")[0] == 0
    runs = json.loads(world.last_stdout)
    assert [r["direction"] for r in runs] == ["failover", "failback", "failover"]
    for r in runs:
        assert {"run_id", "direction", "source", "target", "status", "rto", "rpo"} <= set(r)
    for fmt in ("text", "md", "html", "json", "junit"):
        code, err = world.run(capsys, "report", "--format", fmt)
        assert code == 0, err
        assert world.last_stdout.strip()
    code, _ = world.run(capsys, "report", "--format", "json")
    assert json.loads(world.last_stdout)["run_id"] == runs[-1]["run_id"]
    code, err = world.run(capsys, "report", runs[-1]["run_id"], "--compare", runs[0]["run_id"])
    assert code == 0, err
    out = world.last_stdout.lower()
    assert "compar" in out
    assert world.run(capsys, "status")[0] == 0
    assert "active site: site-b" in world.last_stdout
    assert "lock: free" in world.last_stdout


def test_a_run_in_progress_shows_as_running_and_holds_the_lock(world: World, capsys) -> None:
    """While a run executes, `drx runs` lists it as running (not crashed) and `drx status`
    names it as the lock holder."""
    import time

    world.write_runbook("""
        name: slow
        steps:
          - {id: s, hosts: db@target, run: 'touch "$DRX_HOST_DIR/go"; sleep 1.5', undo: 'true'}
    """)
    proc = world.spawn("failover", "site-b")
    deadline = time.monotonic() + 10
    while not world.host_file("db-b", "go").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    assert world.run(capsys, "runs", "--format", "json")[0] == 0
    assert json.loads(world.last_stdout)[-1]["status"] == "running"
    assert world.run(capsys, "status")[0] == 0
    assert "lock: held by" in world.last_stdout and "failover-site-b" in world.last_stdout
    proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert world.summary()["status"] == "succeeded"


def test_unwritable_report_path_is_one_line_and_exit_2(world: World, capsys) -> None:
    """`report -o` into a missing directory: one error line naming the path, exit 2."""
    world.write_runbook(RUNBOOK)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    code, err = world.run(capsys, "report", "-o", str(world.root / "missing" / "r.html"))
    assert code == 2
    assert err.strip().count("\n") == 0 and "missing/r.html" in err and "Traceback" not in err


def test_closing_line_names_a_non_default_state_dir(world: World, capsys) -> None:
    """The `report:` hint printed after a run works when copied: it carries --state-dir."""
    world.write_runbook(RUNBOOK)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 0
    hint = next(line for line in err.splitlines() if line.startswith("report: "))
    assert hint.endswith(f"--state-dir {world.state}")
