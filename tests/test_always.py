"""always: true — cleanup steps that run once their needs finished in any state: after a
failure and abort, after a refused RPO guard, after a first Ctrl-C (a second cancels them); their
failure fails the run. On local hosts and on real sshd hosts."""

from __future__ import annotations

import os
import signal

from tests.drill import World
from tests.test_failback import _wait_for


def _statuses(summary: dict) -> dict[str, str]:
    return {s["id"]: s["status"] for s in summary["steps"]}


def test_cleanup_runs_after_a_failure_aborts_the_run(world: World, capsys) -> None:
    """a fails, so b (needs a) never runs; the always step (needs a and b) still runs, the
    run fails (exit 1); an always step with no failed need runs as usual."""
    world.write_runbook("""
        name: cleanup
        steps:
          - {id: maint-on, hosts: app@target, run: 'touch "$DRX_HOST_DIR/maint"'}
          - {id: a, hosts: db@target, run: 'exit 3', needs: [maint-on]}
          - {id: b, hosts: db@target, run: 'touch "$DRX_HOST_DIR/b"', needs: [a]}
          - id: maint-off
            hosts: app@target
            run: 'rm "$DRX_HOST_DIR/maint"; touch "$DRX_HOST_DIR/cleaned"'
            always: true
            needs: [a, b]
    """)
    code, _ = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 1
    summary = world.summary()
    assert _statuses(summary) == {
        "maint-on": "succeeded",
        "a": "failed",
        "b": "not_run",
        "maint-off": "succeeded",
    }
    assert summary["status"] == "failed"
    assert world.host_file("app-b", "cleaned").exists()
    assert not world.host_file("app-b", "maint").exists()
    assert not world.host_file("db-b", "b").exists()


def test_a_failing_cleanup_fails_the_run(world: World, capsys) -> None:
    """Every step succeeds but the always step fails: the run fails, exit 1."""
    world.write_runbook("""
        name: cleanup-fails
        steps:
          - {id: a, hosts: db@target, run: 'true'}
          - {id: tidy, hosts: db@target, run: 'exit 1', always: true, needs: [a]}
    """)
    code, _ = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 1
    summary = world.summary()
    assert summary["status"] == "failed"
    assert _statuses(summary) == {"a": "succeeded", "tidy": "failed"}


SLOW = """
    name: slow
    steps:
      - id: long
        hosts: db@target
        run: 'touch "$DRX_HOST_DIR/long-started"; sleep 1'
      - {id: next, hosts: db@target, run: 'touch "$DRX_HOST_DIR/next"', needs: [long]}
      - id: tidy
        hosts: app@target
        run: 'touch "$DRX_HOST_DIR/tidy-started"; sleep {{ vars.tidy_s }}; touch "$DRX_HOST_DIR/tidied"'
        always: true
        needs: [long, next]
    vars: {tidy_s: 0}
"""


def test_cleanup_runs_after_a_first_ctrl_c(world: World) -> None:
    """A first Ctrl-C lets the running step end and cancels what never started, but the always
    step still runs to the end; the run is cancelled (exit 130)."""
    world.write_runbook(SLOW)
    proc = world.spawn("failover", "site-b")
    _wait_for(world.host_file("db-b", "long-started"), proc)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    summary = world.summaries()[-1]
    assert _statuses(summary) == {"long": "succeeded", "next": "cancelled", "tidy": "succeeded"}
    assert world.host_file("app-b", "tidied").exists()
    assert not world.host_file("db-b", "next").exists()


def test_a_second_ctrl_c_cancels_the_cleanup(world: World) -> None:
    """A second Ctrl-C while the always step runs cancels it too: it never finishes its
    command, and the run is cancelled (exit 130)."""
    world.write_runbook(SLOW.replace("{tidy_s: 0}", "{tidy_s: 20}"))
    proc = world.spawn("failover", "site-b")
    _wait_for(world.host_file("db-b", "long-started"), proc)
    os.killpg(proc.pid, signal.SIGINT)
    _wait_for(world.host_file("app-b", "tidy-started"), proc)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    summary = world.summaries()[-1]
    assert _statuses(summary)["tidy"] == "cancelled"
    assert not world.host_file("app-b", "tidied").exists()


def test_always_on_a_manual_step_is_refused_with_its_line(world: World, capsys) -> None:
    """always: true on a manual step is an error at its line, exit 2, nothing runs."""
    world.write_runbook("""
        name: bad
        steps:
          - {id: a, hosts: db@target, run: 'touch "$DRX_HOST_DIR/ran"'}
          - id: ask
            kind: manual
            always: true
            needs: [a]
    """)
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 2
    assert "runbook.yaml:7" in err and "a manual step cannot be 'always'" in err
    assert not world.host_file("db-b", "ran").exists()
