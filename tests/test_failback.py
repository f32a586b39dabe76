"""Failback as the reverse plan, rollback of a partial failover, and resume — on local hosts and
on real sshd hosts, from the journal alone after Ctrl-C or SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.drill import World
from tests.test_engine import host_time, stamped

CHAIN = f"""
    name: chain
    steps:
      - {{id: a, hosts: db@target, run: 'true', undo: '{stamped("undo-a")}'}}
      - {{id: b, hosts: db@target, run: 'true', undo: '{stamped("undo-b", "sleep 0.1")}', needs: [a]}}
      - {{id: c, hosts: app@target, run: 'true', undo: '{stamped("undo-c", "sleep 0.1")}', needs: [b]}}
"""


def test_failback_undoes_in_reverse_dependency_order_and_moves_state_back(
    world: World, capsys
) -> None:
    """After a failover a→b→c, failback runs undo-c, undo-b, undo-a in that order on the same
    hosts, records undo_of/parent_run, and sets the source active again."""
    world.write_runbook(CHAIN)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    failover_id = world.summary()["run_id"]
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    c1 = host_time(world, "app-b", "undo-c.end")
    b0, b1 = host_time(world, "db-b", "undo-b.start"), host_time(world, "db-b", "undo-b.end")
    a0 = host_time(world, "db-b", "undo-a.start")
    assert c1 <= b0 and b1 <= a0
    summary = world.summary()
    assert summary["direction"] == "failback" and summary["parent_run"] == failover_id
    assert (summary["source"], summary["target"]) == ("site-a", "site-b")
    assert {s["id"]: s["undo_of"] for s in summary["steps"]} == {
        "undo-a": "a",
        "undo-b": "b",
        "undo-c": "c",
    }
    assert summary["rto"]["measured_s"] is not None
    state = json.loads((world.state / "state.json").read_text())
    assert state["active"] == "site-a"
    code, err = world.run(capsys, "failback")
    assert code == 2 and "nothing to fail back" in err


def test_failback_bridges_steps_without_undo(world: World, capsys) -> None:
    """a→b→c where b has no undo: undo-c still precedes undo-a; b is listed as left out."""
    world.write_runbook(f"""
        name: bridge
        steps:
          - {{id: a, hosts: db@target, run: 'true', undo: '{stamped("undo-a")}'}}
          - {{id: b, hosts: db@target, run: 'true', needs: [a]}}
          - {{id: c, hosts: app@target, run: 'true', undo: '{stamped("undo-c", "sleep 0.1")}', needs: [b]}}
    """)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    code, _ = world.run(capsys, "failback", "--dry-run", "--format", "json")
    assert code == 0
    preview = json.loads(world.last_stdout)
    assert preview["waves"] == [["undo-c"], ["undo-a"]]
    assert {"id": "b", "reason": "succeeded, but has no undo"} in preview["left_out"]
    assert world.run(capsys, "failback", "--yes")[0] == 0
    assert host_time(world, "app-b", "undo-c.end") <= host_time(world, "db-b", "undo-a.start")


def test_undo_mapping_with_its_own_hosts_and_kind(world: World, capsys) -> None:
    """An undo given as a mapping runs as its own kind on its own hosts."""
    world.write_runbook("""
        name: mapping
        steps:
          - id: promote
            hosts: db@target
            run: 'touch "$DRX_HOST_DIR/primary"'
            undo:
              kind: check
              hosts: db@source
              run: 'touch "$DRX_HOST_DIR/checked"; test -f "$DRX_HOST_DIR/checked"'
              interval: 50ms
              timeout: 5s
    """)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    undo = world.step(world.summary(), "undo-promote")
    assert undo["kind"] == "check" and [h["host"] for h in undo["hosts"]] == ["db-a"]
    assert world.host_file("db-a", "checked").exists()
    assert not world.host_file("db-b", "checked").exists()


def test_partial_failover_is_undone_exactly_and_only_on_good_hosts(world: World, capsys) -> None:
    """A failover that fails half-way: failback undoes only the steps that succeeded and, of a
    multi-host step that failed on one host, only the hosts where it succeeded."""
    world.write_runbook("""
        name: partial
        steps:
          - {id: first, hosts: db@target, run: 'true', undo: 'touch "$DRX_HOST_DIR/undo-first"'}
          - id: both
            hosts: "@target"
            run: 'test "$(basename "$DRX_HOST_DIR")" != app-b'
            undo: 'touch "$DRX_HOST_DIR/undo-both"'
            needs: [first]
          - {id: never, hosts: db@target, run: 'true', undo: 'touch "$DRX_HOST_DIR/undo-never"', needs: [both]}
    """)
    code, _ = world.run(capsys, "failover", "site-b")
    assert code == 1
    summary = world.summary()
    assert world.step(summary, "both")["status"] == "failed"
    assert world.step(summary, "never")["status"] == "not_run"
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    assert world.host_file("db-b", "undo-first").exists()
    assert world.host_file("db-b", "undo-both").exists()
    assert not world.host_file("app-b", "undo-both").exists()
    assert not world.host_file("db-b", "undo-never").exists()
    back = world.summary()
    assert [s["id"] for s in back["steps"]] == ["undo-first", "undo-both"]


def test_failback_of_a_failback_and_of_nothing_is_refused(world: World, capsys) -> None:
    """Failing back a failback, or with no failover at all, exits 2 and runs nothing."""
    world.write_runbook(CHAIN)
    code, err = world.run(capsys, "failback")
    assert code == 2 and "nothing to fail back" in err
    assert world.run(capsys, "failover", "site-b")[0] == 0
    assert world.run(capsys, "failback", "--yes")[0] == 0
    failback_id = world.summary()["run_id"]
    code, err = world.run(capsys, "failback", "--run", failback_id)
    assert code == 2 and "is a failback" in err
    assert len(world.run_dirs()) == 2


def _wait_for(path, proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"drx ended early: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


SLOW = """
    name: slow
    steps:
      - {id: a, hosts: db@target, run: 'echo a >> "$DRX_HOST_DIR/ran"', undo: 'echo undo-a >> "$DRX_HOST_DIR/undone"'}
      - id: b
        hosts: db@target
        run: 'echo b >> "$DRX_HOST_DIR/ran"; touch "$DRX_HOST_DIR/b-started"; sleep 2'
        undo: 'echo undo-b >> "$DRX_HOST_DIR/undone"'
        needs: [a]
      - {id: c, hosts: db@target, run: 'echo c >> "$DRX_HOST_DIR/ran"', undo: 'echo undo-c >> "$DRX_HOST_DIR/undone"', needs: [b]}
"""


def test_sigkill_mid_run_leaves_a_journal_to_fail_back_and_resume(world: World, capsys) -> None:
    """After SIGKILL of the controller mid-step, the run reads back as crashed; the in-flight
    step's command ran on to its end on the host, and resume takes its outcome and output from
    the host's spool (reattached in the summary, said in the report) instead of re-running it
    or asking for --rerun-inflight; failback of the resumed run undoes everything."""
    _killed_in_b(world)
    crashed_id = world.run_dirs()[-1].name
    code, _ = world.run(capsys, "runs", "--format", "json")
    runs = json.loads(world.last_stdout)
    assert runs[-1]["status"] == "crashed"
    steps = {s["id"]: s["status"] for s in runs[-1]["steps"]}
    assert steps == {"a": "succeeded", "b": "unknown", "c": "not_run"}
    time.sleep(2.1)  # the orphaned command ends while no controller watches
    code, err = world.run(capsys, "resume")
    assert code == 0, err
    assert "taken from the host's spool" in err
    resumed = world.summary()
    assert resumed["parent_run"] == crashed_id
    a = world.step(resumed, "a")
    assert a["status"] == "succeeded" and a["carried_from"] == crashed_id
    b = world.step(resumed, "b")
    assert b["status"] == "succeeded" and b["hosts"][0]["reattached"] is True
    assert "reattached" not in world.step(resumed, "c")["hosts"][0]
    assert resumed["rto"]["end_to_end_s"] > resumed["rto"]["measured_s"]
    assert world.host_file("db-b", "ran").read_text().split() == ["a", "b", "c"]
    code, _ = world.run(capsys, "report")
    text = " ".join(world.last_stdout.split())  # notes are wrapped
    assert "read from the hosts' spools" in text and "db-b (b)" in text
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    assert world.summary()["parent_run"] == resumed["run_id"]
    assert world.host_file("db-b", "undone").read_text().split() == ["undo-c", "undo-b", "undo-a"]


def _killed_in_b(world: World) -> None:
    """Fail over with SLOW and SIGKILL the controller once b's command has started."""
    world.write_runbook(SLOW)
    proc = world.spawn("failover", "site-b")
    _wait_for(world.host_file("db-b", "b-started"), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)


def _forget(journal: Path, step: str) -> None:
    """Take ``step``'s events out of a journal: what a controller killed in the moments after
    it started the step leaves (the journal's last batch never reached the file)."""
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(x for x in lines if json.loads(x).get("step") != step))


def test_a_command_whose_start_the_journal_lost_is_found_on_the_host(world: World, capsys) -> None:
    """The controller dies right after starting b, before the journal has b's start: the
    resume fences the run off on every host, finds b's attempt in the host's spool, and takes
    its outcome from there — b runs once, c after it. The fenced run can start nothing more."""
    _killed_in_b(world)
    crashed = world.run_dirs()[-1]
    _forget(crashed / "journal.jsonl", "b")
    code, _ = world.run(capsys, "runs", "--format", "json")
    steps = {s["id"]: s["status"] for s in json.loads(world.last_stdout)[-1]["steps"]}
    assert steps == {"a": "succeeded", "b": "not_run", "c": "not_run"}
    code, err = world.run(capsys, "resume")
    assert code == 0, err
    resumed = world.summary()
    b = world.step(resumed, "b")
    assert b["status"] == "succeeded" and b["hosts"][0]["reattached"] is True
    events = [
        json.loads(x) for x in (world.run_dirs()[-1] / "journal.jsonl").read_text().splitlines()
    ]
    taken = [e for e in events if e["event"] == "host_finished" and e["step"] == "b"]
    assert [e.get("from_run") for e in taken] == [crashed.name]
    assert world.host_file("db-b", "ran").read_text().split() == ["a", "b", "c"]


def test_a_lost_start_whose_outcome_is_lost_too_is_refused_then_run_again_when_asked(
    world: World, capsys
) -> None:
    """b's start is lost from the journal and its spool shows it started but neither ended nor
    running (its host rebooted, say): resume refuses, naming it, and runs nothing; with
    --rerun-inflight it runs b again."""
    _killed_in_b(world)
    crashed = world.run_dirs()[-1]
    _forget(crashed / "journal.jsonl", "b")
    time.sleep(2.1)  # b ends while no controller watches
    roots = [world.state / "spool", *Path("/home").glob("*/.drx/spool")]
    [attempt] = [d for r in roots for d in r.glob(f"{crashed.name}/b/db-b/1")]
    (attempt / "rc").unlink()
    code, err = world.run(capsys, "resume")
    assert code == 2 and "b on db-b" in err and "--rerun-inflight" in err, err
    assert world.host_file("db-b", "ran").read_text().split() == ["a", "b"]
    code, err = world.run(capsys, "resume", "--rerun-inflight")
    assert code == 0, err
    assert world.host_file("db-b", "ran").read_text().split() == ["a", "b", "b", "c"]


SLOWER = """
    name: slow
    steps:
      - id: b
        hosts: db@target
        timeout: 60s
        run: 'echo b >> "$DRX_HOST_DIR/ran"; touch "$DRX_HOST_DIR/b-started"; sleep 3; echo b-out; exit 5'
        undo: 'true'
      - {id: c, hosts: db@target, run: 'echo c >> "$DRX_HOST_DIR/ran"', undo: 'true', needs: [b]}
"""


def test_resume_follows_a_command_still_running_and_keeps_its_failure(world: World, capsys) -> None:
    """Resumed while the killed controller's command still runs: drx re-attaches, waits for it,
    takes its real exit code and output, and runs it no second time (a failure stays one)."""
    world.write_runbook(SLOWER)
    proc = world.spawn("failover", "site-b")
    _wait_for(world.host_file("db-b", "b-started"), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    code, err = world.run(capsys, "resume")
    assert code == 1, err
    assert "still running on the host" in err
    b = world.step(world.summary(), "b")
    host = b["hosts"][0]
    assert (b["status"], host["rc"], host["reattached"]) == ("failed", 5, True)
    assert "b-out" in host["output_tail"]
    assert world.host_file("db-b", "ran").read_text().split() == ["b"]


@pytest.mark.parametrize("start_lost", [False, True])
def test_failback_after_a_crash_needs_confirmation_for_in_flight_steps(
    world: World, capsys, start_lost: bool
) -> None:
    """A step that was running when the controller died is undone only with --yes, and the
    preview marks it outcome unknown. With its start lost from the journal (the controller
    died right after starting it), the preview (which changes nothing) cannot know of it; the
    failback fences the run off, finds b's attempt on its host and undoes it all the same."""
    _killed_in_b(world)
    if start_lost:
        _forget(world.run_dirs()[-1] / "journal.jsonl", "b")
    code, _ = world.run(capsys, "failback", "--dry-run", "--format", "json")
    assert code == 0
    preview = {s["id"]: s for s in json.loads(world.last_stdout)["steps"]}
    if start_lost:
        assert "undo-b" not in preview
    else:
        assert preview["undo-b"].get("outcome_unknown") is True
    assert "outcome_unknown" not in preview["undo-a"]
    code, err = world.run(capsys, "failback")
    assert code == 2 and "unknown" in err
    time.sleep(2.1)
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    assert world.host_file("db-b", "undone").read_text().split() == ["undo-b", "undo-a"]
    assert world.host_file("db-b", "ran").read_text().split() == ["a", "b"]


def test_ctrl_c_run_can_be_resumed_and_failed_back(world: World, capsys) -> None:
    """A cancelled run resumes (running only what did not succeed) and a failback of the
    resumed run undoes the carried steps too."""
    world.write_runbook(SLOW)
    proc = world.spawn("failover", "site-b")
    _wait_for(world.host_file("db-b", "b-started"), proc)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=20)
    assert proc.returncode == 130
    cancelled = world.summaries()[-1]
    assert {s["id"]: s["status"] for s in cancelled["steps"]} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "cancelled",
    }
    code, err = world.run(capsys, "resume")
    assert code == 0, err
    assert world.host_file("db-b", "ran").read_text().split() == ["a", "b", "c"]
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    assert world.host_file("db-b", "undone").read_text().split() == ["undo-c", "undo-b", "undo-a"]


def test_failback_preview_is_exactly_what_runs(world: World, capsys) -> None:
    """The dry-run JSON of a failback names the same steps, hosts, commands and order as the
    plan the failback then executes."""
    world.write_runbook(CHAIN)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    assert world.run(capsys, "failback", "--dry-run", "--format", "json")[0] == 0
    preview = json.loads(world.last_stdout)
    assert world.run(capsys, "failback", "--yes")[0] == 0
    executed = json.loads((world.run_dirs()[-1] / "plan.json").read_text())

    def shape(doc: dict) -> list:
        return [
            (s["id"], s["undo_of"], s["hosts"], s["needs"], s["wave"], s["commands"])
            for s in doc["steps"]
        ]

    assert shape(preview) == shape(executed)
    assert preview["waves"] == executed["waves"] == [["undo-c"], ["undo-b"], ["undo-a"]]
    summary = world.summary()
    assert [s["id"] for s in summary["steps"]] == [s["id"] for s in executed["steps"]]
