"""Scheduling under failure, on local hosts and on real sshd hosts: each host retries on its
own clock, nothing new starts once the run stops (Ctrl-C or an abort), and a ``serial`` step
fails fast."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tests.drill import World

COUNT = (
    'n=$(cat "$DRX_HOST_DIR/{name}" 2>/dev/null || echo 0); echo $((n+1)) > "$DRX_HOST_DIR/{name}"'
)


def count(name: str) -> str:
    """A command that counts its runs in a file on the host."""
    return COUNT.format(name=name)


def attempts(world: World, host: str, name: str) -> int:
    """How many times the counter ran (a file caught mid-write reads as the count before)."""
    path = world.host_file(host, name)
    for _ in range(50):
        text = path.read_text().strip() if path.exists() else "0"
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError(f"{path} stays empty")


def events(world: World, kind: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in world.journal()
        if e["event"] == kind and all(e.get(k) == v for k, v in match.items())
    ]


def wait_for(world: World, host: str, name: str, proc: Any, at_least: int = 1) -> None:
    """Wait until the counter reached ``at_least``; on failure the process is ended."""
    deadline = time.monotonic() + 15
    try:
        while attempts(world, host, name) < at_least:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, f"{name} never ran {at_least} time(s) on {host}"
            time.sleep(0.02)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise


def test_a_host_retries_on_its_own_clock(world: World, capsys) -> None:
    """A host that fails at once starts its next attempt retry_delay after its own failure,
    while a slow host of the same step is still running its first."""
    world.write_runbook(f"""
        name: retry-clock
        steps:
          - id: flaky
            hosts: "@target"
            run: >-
              {count("n")};
              case {{{{ host.name }}}} in
                db-b) [ "$(cat "$DRX_HOST_DIR/n")" -ge 2 ] ;;
                *) sleep 1.5 ;;
              esac
            retries: 1
            retry_delay: 300ms
            undo: 'true'
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 0, err
    first_fail = events(world, "host_finished", step="flaky", host="db-b", attempt=1)[0]["t"]
    retry = events(world, "host_started", step="flaky", host="db-b", attempt=2)[0]["t"]
    slow_end = events(world, "host_finished", step="flaky", host="app-b")[0]["t"]
    assert 0.28 <= retry - first_fail < 0.9, (first_fail, retry)
    assert retry < slow_end, "the retry waited for the slow host of the round"
    assert world.step(world.summary(), "flaky")["attempts"] == 2


def test_ctrl_c_stops_retries(world: World) -> None:
    """After the first Ctrl-C no retry starts: a step with retries: 30 ends after the attempt
    that was running, and the run is cancelled (exit 130)."""
    world.write_runbook(f"""
        name: retry-stop
        steps:
          - {{id: doomed, hosts: db@target, run: '{count("n")}; sleep 0.2; false',
              retries: 30, retry_delay: 100ms, undo: 'true'}}
    """)
    proc = world.spawn("failover", "site-b")
    wait_for(world, "db-b", "n", proc, at_least=2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    seen = attempts(world, "db-b", "n")
    time.sleep(0.5)
    assert attempts(world, "db-b", "n") == seen <= 3
    summary = world.summary()
    assert summary["status"] == "cancelled"
    assert world.step(summary, "doomed")["attempts"] == seen


def test_ctrl_c_stops_check_polls(world: World) -> None:
    """After the first Ctrl-C a check polls no more: the run ends within a poll interval,
    the check cancelled (not failed on its own)."""
    world.write_runbook(f"""
        name: poll-stop
        steps:
          - {{id: lag, kind: check, hosts: db@target, run: '{count("p")}; false',
              interval: 300ms, timeout: 60s}}
    """)
    proc = world.spawn("failover", "site-b")
    wait_for(world, "db-b", "p", proc, at_least=2)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 3
    seen = attempts(world, "db-b", "p")
    time.sleep(0.5)
    assert attempts(world, "db-b", "p") == seen
    step = world.step(world.summary(), "lag")
    assert step["status"] == "cancelled" and not step["outcome_unknown"]


def test_an_abort_stops_retries_of_other_steps(world: World, capsys) -> None:
    """Once a step aborts the run, a step still retrying elsewhere starts no further attempt."""
    world.write_runbook(f"""
        name: abort-stop
        steps:
          - {{id: broken, hosts: app@target, run: 'sleep 0.3; false', undo: 'true'}}
          - {{id: flaky, hosts: db@target, run: '{count("n")}; false',
              retries: 30, retry_delay: 100ms, undo: 'true'}}
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 1, err
    tried = attempts(world, "db-b", "n")
    assert 2 <= tried <= 5, tried
    summary = world.summary()
    assert world.step(summary, "broken")["status"] == "failed"
    assert world.step(summary, "flaky")["status"] == "failed"
    assert world.step(summary, "flaky")["attempts"] == tried


def test_serial_step_fails_fast(world: World, capsys) -> None:
    """Once a host of a serial step has failed (after its retries), no further host starts."""
    world.write_inventory(roles={"db-b": ["node"], "app-b": ["node"]})
    world.write_runbook(f"""
        name: rolling
        steps:
          - id: roll
            hosts: node@target
            run: '{count("n")}; [ {{{{ host.name }}}} != db-b ]'
            serial: 1
            retries: 1
            retry_delay: 0
            undo: 'true'
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 1, err
    assert attempts(world, "db-b", "n") == 2
    assert attempts(world, "app-b", "n") == 0
    step = world.step(world.summary(), "roll")
    assert step["status"] == "failed"
    assert [h["host"] for h in step["hosts"]] == ["db-b"]
    assert "db-b failed" in step["message"] and "app-b" in step["message"]
