"""Resume and failback act on the true state of the world: a run whose effects were reversed or
continued is refused with the run to use instead; checks are re-run on resume; a resumed
failback is recorded as resuming it; a resumed run is judged end to end."""

from __future__ import annotations

import time

import pytest

from tests.drill import World

#: step b fails while "$DRX_HOST_DIR/broken" exists; every step and undo leaves a marker
RUNBOOK = """
    name: lineage
    steps:
      - {id: a, hosts: db@target, run: 'touch "$DRX_HOST_DIR/a"', undo: 'touch "$DRX_HOST_DIR/undo-a"'}
      - id: b
        hosts: db@target
        run: '[ ! -e "$DRX_HOST_DIR/broken" ] && touch "$DRX_HOST_DIR/b"'
        undo: '[ ! -e "$DRX_HOST_DIR/undo-broken" ] && touch "$DRX_HOST_DIR/undo-b"'
        needs: [a]
      - {id: c, hosts: app@target, run: 'touch "$DRX_HOST_DIR/c"', undo: 'touch "$DRX_HOST_DIR/undo-c"', needs: [b]}
"""

pytestmark = pytest.mark.parametrize("world", ["local"], indirect=True)


def run_ids(world: World) -> list[str]:
    return [d.name for d in world.run_dirs()]


def broken(world: World, name: str, on: bool) -> None:
    path = world.host_file("db-b", name)
    if on:
        path.touch()
    else:
        path.unlink(missing_ok=True)


def failed_failover(world: World, capsys) -> str:
    world.write_runbook(RUNBOOK)
    broken(world, "broken", True)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 1, err
    return run_ids(world)[-1]


def refused(world: World, capsys, *argv: str) -> str:
    """Run drx, expect exit 2 and no new run; return stderr."""
    before = run_ids(world)
    code, err = world.run(capsys, *argv)
    assert code == 2, err
    assert run_ids(world) == before, "a refused command started a run"
    return err


def test_a_failover_that_was_failed_back_cannot_be_resumed(world: World, capsys) -> None:
    """Resume of a failover its failback reversed is refused (exit 2) naming the failback;
    nothing re-runs and nothing is carried."""
    failover = failed_failover(world, capsys)
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    back = run_ids(world)[-1]
    broken(world, "broken", False)
    err = refused(world, capsys, "resume", failover)
    assert back in err and "reversed" in err
    assert not world.host_file("db-b", "b").exists()
    # the default candidate skips it too: the latest run not reversed is the failback itself
    assert "nothing to resume" in refused(world, capsys, "resume")


def test_a_resumed_run_is_continued_and_failed_back_through_its_latest(
    world: World, capsys
) -> None:
    """Resume of a run already resumed names the continuation; failback of it names the
    latest run of the chain, whose failback undoes the steps of the whole chain."""
    first = failed_failover(world, capsys)
    code, _ = world.run(capsys, "resume", first)
    assert code == 1
    second = run_ids(world)[-1]
    err = refused(world, capsys, "resume", first)
    assert f"already been resumed by {second}" in err and f"resume {second} instead" in err
    err = refused(world, capsys, "failback", "--run", first, "--yes")
    assert f"fail back {second} instead" in err
    broken(world, "broken", False)
    code, err = world.run(capsys, "resume", second)
    assert code == 0, err
    third = run_ids(world)[-1]
    err = refused(world, capsys, "resume", first)
    assert f"already been resumed by {second}" in err and third in err
    code, err = world.run(capsys, "failback", "--yes")
    assert code == 0, err
    back = world.summary()
    assert back["parent_run"] == third and back["reverses"] == third
    for marker in ("undo-a", "undo-b"):
        assert world.host_file("db-b", marker).exists(), marker
    assert world.host_file("app-b", "undo-c").exists()
    err = refused(world, capsys, "failback", "--run", third, "--yes")
    assert f"already been failed back by {back['run_id']}" in err
    err = refused(world, capsys, "resume", second)
    assert third in err


def test_a_failed_failback_is_resumed_not_reversed_again(world: World, capsys) -> None:
    """A failback that failed: failing the failover back again is refused naming it, resume
    continues it and is recorded as resuming it (resumes / resumed by), after which neither the
    failback nor the failover can be resumed."""
    world.write_runbook(RUNBOOK)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    failover = run_ids(world)[-1]
    broken(world, "undo-broken", True)
    code, _ = world.run(capsys, "failback", "--yes")
    assert code == 1
    back = run_ids(world)[-1]
    err = refused(world, capsys, "failback", "--run", failover, "--yes")
    assert f"already been failed back by {back}" in err and f"drx resume {back}" in err
    assert f"drx resume {back}" in refused(world, capsys, "failback", "--run", back, "--yes")
    broken(world, "undo-broken", False)
    code, err = world.run(capsys, "resume", back, "--yes")
    assert code == 0, err
    resumed = world.summary()
    assert resumed["direction"] == "failback"
    assert (resumed["parent_run"], resumed["resumes"], resumed["reverses"]) == (
        back,
        back,
        failover,
    )
    assert world.host_file("db-b", "undo-b").exists()
    world.run(capsys, "runs")
    rows = {line.split()[0]: line for line in world.last_stdout.splitlines()[1:]}
    assert f"resumed by {resumed['run_id']}" in rows[back]
    assert f"resumes {back}" in rows[resumed["run_id"]]
    assert "reverses" not in rows[resumed["run_id"]]
    assert f"failed back by {back}" in rows[failover]
    assert resumed["run_id"] in refused(world, capsys, "resume", back)
    assert resumed["run_id"] in refused(world, capsys, "resume", failover)


def test_resume_runs_checks_again(world: World, capsys) -> None:
    """A check that had held is read-only and may be stale: resume runs it again, while the
    command steps that succeeded are carried."""
    world.write_runbook("""
        name: recheck
        steps:
          - {id: act, hosts: db@target, run: 'echo x >> "$DRX_HOST_DIR/act"', undo: 'true'}
          - {id: lag, kind: check, hosts: db@target, run: 'echo x >> "$DRX_HOST_DIR/lag"', needs: [act]}
          - {id: go, hosts: db@target, run: '[ ! -e "$DRX_HOST_DIR/broken" ]', needs: [lag], undo: 'true'}
    """)
    broken(world, "broken", True)
    assert world.run(capsys, "failover", "site-b")[0] == 1
    broken(world, "broken", False)
    code, err = world.run(capsys, "resume")
    assert code == 0, err
    assert world.host_file("db-b", "act").read_text().count("x") == 1
    assert world.host_file("db-b", "lag").read_text().count("x") == 2
    summary = world.summary()
    assert world.step(summary, "act")["carried_from"] is not None
    assert world.step(summary, "lag")["carried_from"] is None


def test_resume_carries_a_check_whose_dependents_all_succeeded(world: World, capsys) -> None:
    """A check every dependent of which succeeded is not asked again (the world it checked has
    moved on): it is carried, shown as carried; a check a failed step still needs runs again."""
    world.write_runbook("""
        name: moved-on
        steps:
          - {id: pre, kind: check, hosts: db@target, run: 'echo x >> "$DRX_HOST_DIR/pre"'}
          - {id: act, hosts: db@target, run: 'echo x >> "$DRX_HOST_DIR/act"', undo: 'true', needs: [pre]}
          - {id: lag, kind: check, hosts: db@target, run: 'echo x >> "$DRX_HOST_DIR/lag"', needs: [act]}
          - {id: go, hosts: db@target, run: '[ ! -e "$DRX_HOST_DIR/broken" ]', needs: [lag], undo: 'true'}
    """)
    broken(world, "broken", True)
    assert world.run(capsys, "failover", "site-b")[0] == 1
    broken(world, "broken", False)
    code, err = world.run(capsys, "resume")
    assert code == 0, err
    assert world.host_file("db-b", "pre").read_text().count("x") == 1
    assert world.host_file("db-b", "lag").read_text().count("x") == 2
    summary = world.summary()
    assert world.step(summary, "pre")["carried_from"] is not None
    assert world.step(summary, "lag")["carried_from"] is None
    world.run(capsys, "report")
    rows = [line.split() for line in world.last_stdout.splitlines()]
    assert ["pre", "check", "succeeded", "(carried)"] in [r[1:5] for r in rows], world.last_stdout


def test_a_resumed_run_is_judged_end_to_end(world: World, capsys) -> None:
    """The outage lasts from the original run's start: a resumed run that is quick on its own
    but misses the target end to end exits 3 and shows ✘ in drx runs, with both figures."""
    world.write_runbook("""
        name: e2e
        rto_target: 1s
        steps:
          - {id: slow, hosts: db@target, run: 'sleep 0.7', undo: 'true'}
          - {id: go, hosts: db@target, run: '[ ! -e "$DRX_HOST_DIR/broken" ]', needs: [slow], undo: 'true'}
    """)
    broken(world, "broken", True)
    assert world.run(capsys, "failover", "site-b")[0] == 1
    broken(world, "broken", False)
    time.sleep(0.5)  # the operator looks into it: the outage goes on
    code, err = world.run(capsys, "resume")
    assert code == 3, err
    rto = world.summary()["rto"]
    assert rto["measured_s"] < 1.0 < rto["end_to_end_s"]
    assert rto["met"] is False
    assert "end to end" in err and "MISSED" in err
    world.run(capsys, "runs")
    last = world.last_stdout.splitlines()[-1]
    assert "e2e" in last and "✘" in last
