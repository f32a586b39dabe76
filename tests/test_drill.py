"""drx drill, guaranteed return and on_failure: rollback — on local hosts and on real sshd
hosts, with marks left on the hosts by every step and undo."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime

import pytest

from orchestrator.model.runbook import RunbookOnFailure
from orchestrator.record.store import State
from orchestrator.run.rollback import rollback_due
from tests.drill import World
from tests.test_failback import _wait_for

MARK = 'echo {name} >> "$DRX_HOST_DIR/{file}"'


def mark(name: str, file: str = "ran", then: str = "") -> str:
    """A command that appends ``name`` to a file on its host (then runs ``then``)."""
    return MARK.format(name=name, file=file) + (f"; {then}" if then else "")


def lines(world: World, host: str, file: str) -> list[str]:
    path = world.host_file(host, file)
    return path.read_text().split() if path.exists() else []


def _active(world: World) -> str | None:
    """The active site state.json records for the runbook (None: none recorded)."""
    state = json.loads((world.state / "state.json").read_text())
    return State.from_json(state).runbook("drill").active


FAILS_AT_B = f"""
    name: drill
    on_failure: rollback
    steps:
      - {{id: a, hosts: db@target, run: '{mark("a")}', undo: '{mark("undo-a", "undone")}'}}
      - {{id: b, hosts: db@target, run: 'exit 1', needs: [a], undo: 'true'}}
"""

FOUR = f"""
    name: drill
    steps:
      - {{id: a, hosts: db@target, run: '{mark("a")}', undo: '{mark("undo-a", "undone")}'}}
      - {{id: b, hosts: app@target, run: '{mark("b")}', undo: '{mark("undo-b", "undone")}', needs: [a]}}
      - {{id: c, hosts: db@target, run: '{mark("c")}', undo: '{mark("undo-c", "undone")}', needs: [b]}}
"""


def test_drill_whose_legs_succeed_exits_0_and_the_state_is_back(world: World, capsys) -> None:
    """Both legs succeed: exit 0, the failback undid everything in reverse order, both
    summaries carry the failover's run id as drill_id, the source is active again, drx runs
    shows the pair and drx report DRILL-ID shows both legs."""
    world.write_runbook(FOUR)
    code, err = world.run(capsys, "drill", "site-b", "--yes")
    assert code == 0, err
    first, back = world.summaries()
    assert first["direction"] == "failover" and back["direction"] == "failback"
    assert first["drill_id"] == back["drill_id"] == first["run_id"]
    assert first["mode"] == back["mode"] == "drill"
    assert back["rollback"] is False and back["parent_run"] == first["run_id"]
    assert lines(world, "db-b", "undone") == ["undo-c", "undo-a"]
    assert lines(world, "app-b", "undone") == ["undo-b"]
    assert _active(world) == "site-a"
    assert f"drill {first['run_id']}" in err
    code, _ = world.run(capsys, "runs")
    table = world.last_stdout
    assert code == 0
    back_row = next(line for line in table.splitlines() if line.startswith(back["run_id"]))
    assert f"drill {first['run_id']}" in back_row
    code, _ = world.run(capsys, "report", first["run_id"])
    assert code == 0
    assert f"the failback leg, run {back['run_id']}" in world.last_stdout
    assert world.last_stdout.index("undo-c") > world.last_stdout.index("the failback leg")
    page = world.root / "drill.html"
    code, _ = world.run(capsys, "report", first["run_id"], "-o", str(page))
    text = page.read_text()
    assert code == 0 and text.count("</html>") == 1 and 'class="drill-leg"' in text
    assert back["run_id"] in text.split('class="drill-leg"', 1)[1]


def test_a_drill_whose_failover_leg_fails_mid_way_ends_at_the_source(world: World, capsys) -> None:
    """The failover leg fails at c: the rollback undoes exactly a and b (not c, not d), on the
    hosts they ran on; the drill exits 1 with the source active, the rollback is marked
    rollback: true, and the failover names it in rolled_back_by."""
    world.write_runbook(f"""
        name: drill
        steps:
          - {{id: a, hosts: db@target, run: '{mark("a")}', undo: '{mark("undo-a", "undone")}'}}
          - {{id: b, hosts: app@target, run: '{mark("b")}', undo: '{mark("undo-b", "undone")}', needs: [a]}}
          - {{id: c, hosts: db@target, run: '{mark("c", then="exit 3")}', undo: '{mark("undo-c", "undone")}', needs: [b]}}
          - {{id: d, hosts: db@target, run: '{mark("d")}', undo: '{mark("undo-d", "undone")}', needs: [c]}}
    """)
    code, err = world.run(capsys, "drill", "site-b", "--yes")
    assert code == 1, err
    first, back = world.summaries()
    assert first["status"] == "failed" and back["status"] == "succeeded"
    assert back["rollback"] is True and back["drill_id"] == first["run_id"]
    assert first["rolled_back_by"] == back["run_id"]
    assert lines(world, "db-b", "ran") == ["a", "c"]
    assert lines(world, "db-b", "undone") == ["undo-a"]
    assert lines(world, "app-b", "undone") == ["undo-b"]
    assert [s["undo_of"] for s in back["steps"]] == ["a", "b"]
    assert _active(world) == "site-a"
    assert "site-a is active again" in err


def test_on_failure_rollback_rolls_back_a_plain_failover(world: World, capsys) -> None:
    """on_failure: rollback: a failover that fails is rolled back at once (exit 1, the
    failover's summary names the rollback); --no-rollback leaves it where it stopped."""
    world.write_runbook(FAILS_AT_B)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 1, err
    first, back = world.summaries()
    assert back["rollback"] is True and first["rolled_back_by"] == back["run_id"]
    assert back["mode"] == "real" and back["drill_id"] is None
    assert lines(world, "db-b", "undone") == ["undo-a"]
    code, err = world.run(capsys, "failover", "site-b", "--no-rollback")
    assert code == 1, err
    assert len(world.summaries()) == 3 and lines(world, "db-b", "undone") == ["undo-a"]
    assert "drx failback --run" in err


def test_on_failure_rollback_is_off_under_emergency_unless_asked(world: World, capsys) -> None:
    """Under --emergency a failed failover is not rolled back (the source may be gone), unless
    --rollback is given."""
    world.write_runbook(FAILS_AT_B)
    code, err = world.run(capsys, "failover", "site-b", "--emergency")
    assert code == 1, err
    assert len(world.summaries()) == 1 and lines(world, "db-b", "undone") == []
    # a half-done failover must be failed back (or resumed) before another may start
    code, err = world.run(capsys, "failback")
    assert code == 0, err
    assert lines(world, "db-b", "undone") == ["undo-a"]
    code, err = world.run(capsys, "failover", "site-b", "--emergency", "--rollback")
    assert code == 1, err
    assert world.summaries()[-1]["rollback"] is True
    assert lines(world, "db-b", "undone") == ["undo-a", "undo-a"]


def test_the_rpo_guard_refusing_is_rolled_back(world: World, capsys) -> None:
    """An RPO guard that refuses fails the failover; with on_failure: rollback what it did
    before is undone (the source is restored)."""
    world.write_runbook(f"""
        name: drill
        on_failure: rollback
        rpo_step: lag
        rpo_target: 1s
        rpo_guard: true
        steps:
          - {{id: freeze, hosts: db@source, run: '{mark("freeze")}', undo: '{mark("thaw", "undone")}'}}
          - {{id: lag, hosts: db@target, run: 'echo 30', capture: number, needs: [freeze]}}
          - {{id: promote, hosts: db@target, run: '{mark("promote")}', undo: 'true', needs: [lag]}}
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 1, err
    first, back = world.summaries()
    assert first["rpo"]["guard"]["tripped"] is True and back["rollback"] is True
    assert lines(world, "db-a", "undone") == ["thaw"]
    assert lines(world, "db-b", "ran") == []


SLOW = f"""
    name: drill
    steps:
      - {{id: a, hosts: db@target, run: '{mark("a")}', undo: '{mark("undo-a", "undone")}'}}
      - {{id: b, hosts: db@target, run: '{mark("b", then='touch "$DRX_HOST_DIR/b-started"; sleep 1')}', undo: '{mark("undo-b", "undone", 'touch "$DRX_HOST_DIR/undo-b-started"; sleep 1.5')}', needs: [a]}}
      - {{id: c, hosts: db@target, run: '{mark("c")}', undo: '{mark("undo-c", "undone")}', needs: [b]}}
"""


def test_ctrl_c_once_rolls_the_drill_back(world: World) -> None:
    """One Ctrl-C during the failover leg: the running step ends, nothing new starts, and the
    drill rolls back what the leg did at once: exit 130, the source active again."""
    world.write_runbook(SLOW)
    proc = world.spawn("drill", "site-b", "--yes")
    _wait_for(world.host_file("db-b", "b-started"), proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    first, back = world.summaries()
    assert first["status"] == "cancelled" and back["rollback"] is True
    assert back["status"] == "succeeded"
    assert lines(world, "db-b", "ran") == ["a", "b"]
    assert lines(world, "db-b", "undone") == ["undo-b", "undo-a"]
    assert _active(world) == "site-a"


def test_ctrl_c_during_the_rollback_is_refused_once_then_abandons_it(world: World, capsys) -> None:
    """Ctrl-C during a rollback is refused once with a warning; the next abandons it (the
    rollback is cancelled, exit 130); drx failback then continues it to the end."""
    world.write_runbook(SLOW)
    proc = world.spawn("drill", "site-b", "--yes")
    _wait_for(world.host_file("db-b", "b-started"), proc)
    os.killpg(proc.pid, signal.SIGINT)
    _wait_for(world.host_file("db-b", "undo-b-started"), proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Ctrl-C again to abandon" in err
    _first, back = world.summaries()
    assert back["rollback"] is True and back["status"] == "cancelled"
    events = [e["event"] for e in world.journal(world.run_dirs()[-1])]
    assert "interrupt_refused" in events and "interrupt" in events
    assert lines(world, "db-b", "undone") == ["undo-b"]
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    resumed = world.summaries()[-1]
    assert resumed["resumes"] == back["run_id"] and resumed["rollback"] is True
    assert lines(world, "db-b", "undone") == ["undo-b", "undo-a"]
    assert _active(world) == "site-a"


def test_only_steps_run_in_their_mode_and_are_skipped_with_the_reason(world: World, capsys) -> None:
    """In a drill, only: real steps (and undos) are skipped with the reason and their
    dependents proceed; only: drill steps run, and templates see mode; a plain failover does
    the opposite; the plans show which steps are skipped."""
    world.write_runbook(f"""
        name: drill
        steps:
          - {{id: a, hosts: db@target, run: '{mark("a-{{ mode }}")}', undo: '{mark("undo-a", "undone")}'}}
          - {{id: real-only, hosts: db@target, run: '{mark("real-only")}', only: real, needs: [a], undo: 'true'}}
          - id: drill-only
            hosts: db@target
            run: '{mark("drill-only")}'
            only: drill
            needs: [a]
            undo: {{run: '{mark("undo-drill-only", "undone")}', only: real}}
          - {{id: last, hosts: db@target, run: '{mark("last")}', needs: [real-only, drill-only], undo: 'true'}}
    """)
    code, _ = world.run(capsys, "drill", "site-b", "--dry-run", "--format", "json")
    assert code == 0
    preview = {s["id"]: s for s in json.loads(world.last_stdout)["steps"]}
    assert preview["real-only"]["skipped"] == "only: real (this run is a drill)"
    assert "skipped" not in preview["drill-only"]
    code, _ = world.run(capsys, "plan", "site-b")
    assert "SKIPPED: only: drill" in world.last_stdout
    code, err = world.run(capsys, "drill", "site-b", "--yes")
    assert code == 0, err
    first, back = world.summaries()
    assert lines(world, "db-b", "ran") == ["a-drill", "drill-only", "last"]
    real_only = world.step(first, "real-only")
    assert real_only["status"] == "skipped" and "only: real" in real_only["message"]
    assert world.step(back, "undo-drill-only")["status"] == "skipped"
    assert lines(world, "db-b", "undone") == ["undo-a"]
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 0, err
    assert lines(world, "db-b", "ran")[3:] == ["a-real", "real-only", "last"]
    assert world.summaries()[-1]["mode"] == "real"


def test_on_failure_rollback_with_no_undo_at_all_is_a_warning(world: World, capsys) -> None:
    """on_failure: rollback on a runbook where no step has an undo validates with a warning
    naming the line: there is nothing to roll back."""
    world.write_runbook("""
        name: drill
        on_failure: rollback
        steps:
          - {id: a, hosts: db@target, run: 'true'}
    """)
    code, err = world.run(capsys, "validate")
    assert code == 0, err
    assert "runbook.yaml:3: warning: on_failure: rollback, but no step has an 'undo'" in err


def _probe_runbook(world: World, hold: str, max_down: str) -> None:
    down = world.root / "down"
    world.write_runbook(f"""
        name: drill
        probes:
          - {{name: client, run: 'test ! -e {down}', interval: 100ms, timeout: 2s, max_down: {max_down}}}
        steps:
          - {{id: a, hosts: db@target, run: '{mark("a")}; touch {down}', undo: '{mark("undo-a", "undone")}; rm -f {down}'}}
          - {{id: b, hosts: db@target, run: '{mark("b")}; sleep {hold}', undo: '{mark("undo-b", "undone")}', needs: [a]}}
          - {{id: c, hosts: db@target, run: '{mark("c")}; rm -f {down}', undo: '{mark("undo-c", "undone")}', needs: [b]}}
    """)


def test_probes_measure_the_downtime_clients_saw(world: World, capsys) -> None:
    """A probe polled from the control machine for the whole run: every poll is journaled, the
    down window spans the time the service was down (between a and c), and summary.json and
    the report show the observed downtime beside the measured RTO."""
    _probe_runbook(world, "0.8", "30s")
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 0, err
    summary = world.summary()
    (probe,) = summary["probes"]
    assert probe["name"] == "client" and probe["breached"] is False
    assert len(probe["windows"]) == 1 and probe["windows"][0][1] is not None
    assert 0.6 <= probe["down_s"] <= 3.0, probe
    assert probe["longest_down_s"] == probe["down_s"] and probe["failed_polls"] >= 3
    polls = [e for e in world.journal() if e["event"] == "probe_poll"]
    assert len(polls) == probe["polls"] and polls[0]["t"] < 0.5
    code, _ = world.run(capsys, "report", summary["run_id"])
    text = " ".join(world.last_stdout.split())
    assert "observed downtime" in text and "beside the measured RTO" in text, text
    html = world.root / "report.html"
    code, _ = world.run(capsys, "report", summary["run_id"], "-o", str(html))
    assert code == 0
    page = html.read_text()
    assert 'data-step="probe:client"' in page and "probe-down" in page
    assert "Observed downtime" in page
    code, _ = world.run(capsys, "report", summary["run_id"], "--format", "otlp")
    spans = [
        span
        for rs in json.loads(world.last_stdout)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]
    assert [s["name"] for s in spans].count("probe client down") == 1


def test_a_probe_breach_stops_the_drill_and_rolls_it_back(world: World, capsys) -> None:
    """A down window past max_down stops scheduling at once (c never starts), fails the
    failover naming the probe, and the drill rolls back what it did (exit 1, source active)."""
    _probe_runbook(world, "1.5", "500ms")
    code, err = world.run(capsys, "drill", "site-b", "--yes")
    assert code == 1, err
    first, back = world.summaries()
    assert first["status"] == "failed" and "probe 'client' breached" in first["message"]
    assert first["probes"][0]["breached"] is True
    assert world.step(first, "c")["status"] == "cancelled"
    assert lines(world, "db-b", "ran") == ["a", "b"]
    assert back["rollback"] is True and back["status"] == "succeeded"
    assert lines(world, "db-b", "undone") == ["undo-b", "undo-a"]
    assert _active(world) == "site-a"
    breach = next(e for e in world.journal(world.run_dirs()[0]) if e["event"] == "probe_breached")
    assert 0.5 <= breach["down_s"] <= 2.0
    code, _ = world.run(capsys, "report", first["run_id"], "--format", "junit")
    assert '<testcase classname="drill.failover" name="probe:client"' in world.last_stdout
    assert "BREACHED its max_down" in world.last_stdout


def test_a_drill_that_misses_its_rto_exits_3_after_the_hold(world: World, capsys) -> None:
    """Both legs succeed but miss rto_target: exit 3, the source active again; the failback leg
    starts only once --hold has passed after the failover leg ended."""
    world.write_runbook(f"""
        name: drill
        rto_target: 100ms
        steps:
          - {{id: a, hosts: db@target, run: '{mark("a", then="sleep 0.3")}', undo: '{mark("undo-a", "undone", "sleep 0.3")}'}}
    """)
    code, err = world.run(capsys, "drill", "site-b", "--yes", "--hold", "700ms")
    assert code == 3, err
    first, back = world.summaries()
    assert first["rto"]["met"] is False and back["status"] == "succeeded"
    assert _active(world) == "site-a"
    ended = datetime.fromisoformat(first["finished_at"].replace("Z", "+00:00"))
    began = datetime.fromisoformat(back["started_at"].replace("Z", "+00:00"))
    assert (began - ended).total_seconds() >= 0.7


def test_ctrl_c_during_the_hold_sends_the_drill_home_at_once(world: World) -> None:
    """A Ctrl-C while the drill holds at the target cuts the hold short: the failback leg runs
    at once and the drill ends at the source, exit 130."""
    world.write_runbook(FOUR)
    proc = world.spawn("drill", "site-b", "--yes", "--hold", "60s")
    deadline = time.monotonic() + 30
    while not any((d / "summary.json").exists() for d in world.run_dirs()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "going home" in err
    first, back = world.summaries()
    assert back["status"] == "succeeded" and back["drill_id"] == first["run_id"]
    assert lines(world, "db-b", "undone") == ["undo-c", "undo-a"]
    assert _active(world) == "site-a"


@pytest.mark.parametrize(
    ("status", "policy", "drill", "emergency", "asked", "due"),
    [
        ("failed", "stop", False, False, None, False),
        ("failed", "rollback", False, False, None, True),
        ("cancelled", "rollback", False, False, None, True),
        ("succeeded", "rollback", True, False, None, False),
        ("crashed", "rollback", True, False, None, False),
        ("failed", "rollback", False, True, None, False),
        ("failed", "rollback", False, True, True, True),
        ("failed", "stop", False, False, True, True),
        ("failed", "rollback", False, False, False, False),
        ("cancelled", "stop", True, False, None, True),
    ],
)
def test_when_a_failover_is_rolled_back(
    status: str, policy: str, drill: bool, emergency: bool, asked: bool | None, due: bool
) -> None:
    """A failed or cancelled failover is rolled back in a drill always, else per on_failure,
    never under --emergency unless --rollback, and never with --no-rollback."""
    assert (
        rollback_due(
            status, RunbookOnFailure(policy), drill=drill, emergency=emergency, asked=asked
        )
        is due
    )
