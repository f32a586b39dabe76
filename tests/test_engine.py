"""The engine end to end through the CLI, on local hosts and on real sshd hosts: order and
overlap, retries, timeouts, checks, captures, conditions, gates, health, exit codes, records."""

from __future__ import annotations

import json
import time

import pytest

from orchestrator.record.store import LocalStore
from orchestrator.run.runner import operator_identity
from tests.drill import World

STAMP = 'date +%s.%N > "$DRX_HOST_DIR/{name}"'


def stamped(name: str, body: str = "true") -> str:
    """A command that records its start and end time on the host."""
    return f"{STAMP.format(name=name + '.start')}; {body}; {STAMP.format(name=name + '.end')}"


def host_time(world: World, host: str, name: str) -> float:
    return float(world.host_file(host, name).read_text().strip())


def test_dependency_order_and_overlap_of_independent_steps(world: World, capsys) -> None:
    """B and C (both need A) run at the same time; D starts only after both ended."""
    world.write_runbook(f"""
        name: order
        steps:
          - {{id: a, hosts: db@target, run: '{stamped("a")}', undo: 'true'}}
          - {{id: b, hosts: db@target, run: '{stamped("b", "sleep 0.4")}', needs: [a], undo: 'true'}}
          - {{id: c, hosts: app@target, run: '{stamped("c", "sleep 0.4")}', needs: [a], undo: 'true'}}
          - {{id: d, hosts: app@target, run: '{stamped("d")}', needs: [b, c], undo: 'true'}}
    """)
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    a_end = host_time(world, "db-b", "a.end")
    b0, b1 = host_time(world, "db-b", "b.start"), host_time(world, "db-b", "b.end")
    c0, c1 = host_time(world, "app-b", "c.start"), host_time(world, "app-b", "c.end")
    d0 = host_time(world, "app-b", "d.start")
    assert a_end <= b0 and a_end <= c0
    assert b0 < c1 and c0 < b1, "b and c should overlap"
    assert d0 >= max(b1, c1)
    summary = world.summary()
    assert summary["status"] == "succeeded"
    assert summary["critical_path"][0] == "a" and summary["critical_path"][-1] == "d"


def test_retries_rerun_only_until_success(world: World, capsys) -> None:
    """A step failing twice then succeeding, with retries: 2, succeeds on attempt 3."""
    counter = 'n=$(cat "$DRX_HOST_DIR/n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$DRX_HOST_DIR/n"; [ $n -ge 3 ]'
    world.write_runbook(f"""
        name: retry
        steps:
          - id: flaky
            hosts: db@target
            run: '{counter}'
            undo: 'true'
            retries: 2
            retry_delay: 100ms
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 0, err
    step = world.step(world.summary(), "flaky")
    assert step["attempts"] == 3
    assert [a["rc"] for a in step["hosts"][0]["attempts"]] == [1, 1, 0]
    assert world.host_file("db-b", "n").read_text().strip() == "3"


def test_exhausted_retries_fail_the_run_with_exit_1(world: World, capsys) -> None:
    """A step that keeps failing fails the run (exit 1); later steps are not_run."""
    world.write_runbook("""
        name: fail
        steps:
          - {id: bad, hosts: db@target, run: 'echo boom >&2; exit 7', retries: 1, retry_delay: 0, undo: 'true'}
          - {id: after, hosts: db@target, run: 'touch "$DRX_HOST_DIR/after"', needs: [bad], undo: 'true'}
    """)
    code, _ = world.run(capsys, "failover", "site-b")
    assert code == 1
    summary = world.summary()
    bad = world.step(summary, "bad")
    assert bad["status"] == "failed" and bad["attempts"] == 2
    assert bad["hosts"][0]["rc"] == 7 and "boom" in bad["hosts"][0]["output_tail"]
    assert world.step(summary, "after")["status"] == "not_run"
    assert not world.host_file("db-b", "after").exists()
    assert summary["status"] == "failed" and summary["rto"]["measured_s"] is None


def test_timeout_is_recorded_and_kills_the_command_on_the_host(world: World, capsys) -> None:
    """A timed-out command fails with error 'timeout', and nothing of it lives on."""
    world.write_runbook("""
        name: slow
        steps:
          - {id: hang, hosts: db@target, run: 'sleep 3; touch "$DRX_HOST_DIR/survived"', timeout: 300ms, undo: 'true'}
    """)
    code, _ = world.run(capsys, "failover", "site-b")
    assert code == 1
    host = world.step(world.summary(), "hang")["hosts"][0]
    assert host["error"] == "timeout" and host["rc"] is None
    time.sleep(3.3)
    assert not world.host_file("db-b", "survived").exists()


def test_check_polls_until_condition_and_capture_feeds_later_steps(world: World, capsys) -> None:
    """A check polls until `value >= 3`; its captured value renders into a later command."""
    poll = 'n=$(cat "$DRX_HOST_DIR/p" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$DRX_HOST_DIR/p"; echo "lag: $n units"'
    world.write_runbook(f"""
        name: check
        rpo_target: 10s
        rpo_step: wait-lag
        steps:
          - id: wait-lag
            kind: check
            hosts: db@target
            run: '{poll}'
            capture: number
            until: "value >= 3"
            interval: 50ms
            timeout: 10s
          - id: use
            hosts: app@target
            run: echo {{{{ steps['wait-lag'].value | quote }}}} > "$DRX_HOST_DIR/used"
            needs: [wait-lag]
            undo: 'true'
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 0, err
    summary = world.summary()
    check = world.step(summary, "wait-lag")
    assert check["value"] == 3
    assert len(check["hosts"][0]["attempts"][0]["polls"]) == 3
    assert world.host_file("app-b", "used").read_text().strip() == "3"
    assert summary["rpo"] == {"measured_s": 3.0, "target_s": 10.0, "met": True, "step": "wait-lag"}


def test_when_false_skips_but_dependents_run(world: World, capsys) -> None:
    """A step whose `when` is false is skipped; the steps that need it still run."""
    world.write_runbook("""
        name: when
        vars: {enabled: false}
        steps:
          - {id: maybe, hosts: db@target, run: 'touch "$DRX_HOST_DIR/maybe"', when: "vars.enabled", undo: 'true'}
          - {id: next, hosts: db@target, run: 'touch "$DRX_HOST_DIR/next"', needs: [maybe], undo: 'true'}
    """)
    code, _ = world.run(capsys, "failover", "site-b")
    assert code == 0
    summary = world.summary()
    assert world.step(summary, "maybe")["status"] == "skipped"
    assert not world.host_file("db-b", "maybe").exists()
    assert world.host_file("db-b", "next").exists()


def test_on_failure_continue_lets_dependents_run(world: World, capsys) -> None:
    """A failing step with on_failure: continue is recorded failed; its dependents run."""
    world.write_runbook("""
        name: cont
        steps:
          - {id: optional, hosts: db@target, run: 'exit 3', on_failure: continue, undo: 'true'}
          - {id: next, hosts: db@target, run: 'touch "$DRX_HOST_DIR/next"', needs: [optional], undo: 'true'}
    """)
    code, _ = world.run(capsys, "failover", "site-b")
    assert code == 0
    summary = world.summary()
    assert world.step(summary, "optional")["status"] == "failed"
    assert world.step(summary, "next")["status"] == "succeeded"


def test_manual_gate_with_yes_and_without_a_terminal(world: World, capsys) -> None:
    """--yes approves a gate (recorded as such); with no terminal and no --yes the gate waits
    for drx approve/deny and its timeout denies it (exit 1), nothing after it runs."""
    world.write_runbook("""
        name: gate
        steps:
          - {id: ok, kind: manual, prompt: "Go to {{ target }}?", timeout: 200ms}
          - {id: after, hosts: db@target, run: 'touch "$DRX_HOST_DIR/after"', needs: [ok], undo: 'true'}
    """)
    code, _ = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0
    gate = world.step(world.summary(), "ok")
    assert gate["status"] == "succeeded" and gate["approved_via"] == "--yes"
    assert gate["approved_by"] == operator_identity()  # user@host of whoever gave --yes
    world.host_file("db-b", "after").unlink()
    code, err = world.run(capsys, "failover", "site-b", "--force")
    assert code == 1 and "drx approve" in err and "ok" in err
    gate = world.step(world.summary(), "ok")
    assert gate["status"] == "failed" and gate["error"] == "timeout"
    assert not world.host_file("db-b", "after").exists()


def test_source_health_failing_refuses_unless_emergency(world: World, capsys) -> None:
    """Unhealthy source: exit 2 and nothing runs; --emergency skips the check and runs."""
    world.write_runbook("""
        name: health
        health:
          - {name: up, hosts: app@active, run: 'test -f "$DRX_HOST_DIR/serving"', interval: 50ms, timeout: 5s}
        steps:
          - {id: start, hosts: app@target, run: 'touch "$DRX_HOST_DIR/serving"', undo: 'rm -f "$DRX_HOST_DIR/serving"'}
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 2 and "not healthy at site-a" in err
    assert world.run_dirs() == [] and not world.host_file("app-b", "serving").exists()
    code, err = world.run(capsys, "failover", "site-b", "--emergency")
    assert code == 0, err
    summary = world.summary()
    assert summary["emergency"] is True and summary["health"]["held_at"] is not None


def test_health_after_ends_the_rto_and_never_holding_fails(world: World, capsys) -> None:
    """The RTO ends when health first holds at the target; health that never holds → exit 1,
    with the probe's last exit code and output in the run's message."""
    world.host_file("app-a", "serving").touch()
    world.write_runbook("""
        name: health
        health:
          - {name: up, hosts: app@active, run: 'test -f "$DRX_HOST_DIR/serving"', interval: 50ms, timeout: 1s}
        steps:
          - {id: start, hosts: app@target, run: 'sleep 0.2; touch "$DRX_HOST_DIR/serving"', undo: 'true'}
    """)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 0, err
    summary = world.summary()
    assert summary["rto"]["measured_s"] >= world.step(summary, "start")["duration_s"]
    assert summary["health"]["polls"] >= 1
    world.host_file("app-a", "serving").touch()
    world.host_file("app-b", "serving").unlink()
    world.write_runbook("""
        name: health
        health:
          - {name: up, hosts: app@active, run: 'test -f "$DRX_HOST_DIR/serving" || { echo "503 at {{ active }}"; exit 4; }', interval: 50ms, timeout: 500ms}
        steps:
          - {id: start, hosts: app@target, run: 'true', undo: 'true'}
    """)
    code, err = world.run(capsys, "failover", "site-b", "--force")
    assert code == 1
    summary = world.summary()
    assert summary["status"] == "failed" and summary["health"]["timed_out"] is True
    assert "health never held at site-b (health 'up' on app-b: exit 4" in summary["message"]
    assert "503 at site-b" in err


def test_lock_refuses_a_second_run_naming_the_holder(world: World, capsys) -> None:
    """While a run holds the lock, another run exits 2 and names the holder."""
    world.write_runbook("""
        name: lock
        steps:
          - {id: s, hosts: db@target, run: 'true', undo: 'true'}
    """)
    with LocalStore(world.state).acquire("someone-elses-run"):
        code, err = world.run(capsys, "failover", "site-b")
    assert code == 2 and "someone-elses-run" in err
    assert world.run_dirs() == []


def test_missed_rto_target_exits_3(world: World, capsys) -> None:
    """A run that succeeds but misses rto_target exits 3 and says so in the summary and in the
    journal's closing line (the same code as the process)."""
    world.write_runbook("""
        name: slow
        rto_target: 100ms
        steps:
          - {id: s, hosts: db@target, run: 'sleep 0.3', undo: 'true'}
    """)
    code, _ = world.run(capsys, "failover", "site-b")
    assert code == 3
    summary = world.summary()
    assert summary["status"] == "succeeded" and summary["rto"]["met"] is False
    assert summary["exit_code"] == 3
    finished = [e for e in world.journal() if e["event"] == "run_finished"]
    assert [e["exit_code"] for e in finished] == [3]


def test_summary_has_every_field_and_state_moves(world: World, capsys) -> None:
    """summary.json carries every SPEC field; state.json names the new active site."""
    world.write_runbook("""
        name: fields
        rto_target: 5m
        steps:
          - {id: one, hosts: "@target", run: 'echo hello', undo: 'true', expect: 1s}
          - {id: two, kind: wait, duration: 100ms, needs: [one]}
    """)
    code, _ = world.run(capsys, "failover", "site-b")
    assert code == 0
    run_dir = world.run_dirs()[-1]
    assert run_dir.name.endswith("-failover-site-b")
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in (
        "run_id",
        "runbook",
        "direction",
        "source",
        "target",
        "parent_run",
        "status",
        "emergency",
        "started_at",
        "finished_at",
        "rto",
        "rpo",
        "manual_wait_s",
        "critical_path",
        "steps",
        "health",
    ):
        assert key in summary, key
    assert summary["run_id"] == run_dir.name
    assert set(summary["rto"]) >= {"measured_s", "target_s", "met", "start_step"}
    one = world.step(summary, "one")
    for key in (
        "id",
        "kind",
        "status",
        "started_at",
        "finished_at",
        "duration_s",
        "attempts",
        "needs",
        "undo_of",
        "hosts",
    ):
        assert key in one, key
    assert [h["host"] for h in one["hosts"]] == ["db-b", "app-b"]
    assert set(one["hosts"][0]) >= {"host", "rc", "duration_s", "output_tail"}
    assert "hello" in one["hosts"][0]["output_tail"]
    assert (run_dir / "output" / "one" / "db-b.log").read_text().strip() == "hello"
    assert (run_dir / "plan.json").exists()
    assert summary["critical_path"] == ["one", "two"]
    state = json.loads((world.state / "state.json").read_text())
    assert state["active"] == "site-b" and state["last_run"] == run_dir.name
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 2 and "already active" in err


def test_measured_rto_agrees_with_host_timestamps(world: World, capsys) -> None:
    """The measured RTO is within 50 ms of the span seen on the hosts themselves."""
    world.write_runbook(f"""
        name: rto
        steps:
          - {{id: first, hosts: db@target, run: '{stamped("first", "sleep 0.2")}', undo: 'true'}}
          - {{id: last, hosts: app@target, run: '{stamped("last", "sleep 0.2")}', needs: [first], undo: 'true'}}
    """)
    code, _ = world.run(capsys, "failover", "site-b")
    assert code == 0
    span = host_time(world, "app-b", "last.end") - host_time(world, "db-b", "first.start")
    measured = world.summary()["rto"]["measured_s"]
    assert measured >= span - 0.005
    assert abs(measured - span) < 0.05, (measured, span)


def test_secrets_never_reach_any_file_under_the_state_dir(
    world: World, capsys, monkeypatch
) -> None:
    """Secret values (by name, --secret-var, DRX_SECRET_*) are *** in every file drx writes,
    while the command itself receives them."""
    monkeypatch.setenv("DRX_SECRET_API", "env-s3cret-value")
    world.write_runbook("""
        name: secrets
        vars: {db_password: pw-s3cret-value}
        steps:
          - id: use
            hosts: db@target
            run: >-
              echo {{ vars.db_password }} {{ vars.token }} {{ vars.api }};
              echo {{ vars.db_password }} {{ vars.token }} {{ vars.api }} > "$DRX_HOST_DIR/got"
            undo: 'true'
    """)
    code, err = world.run(capsys, "failover", "site-b", "--secret-var", "token=cli-s3cret-value")
    assert code == 0, err
    got = world.host_file("db-b", "got").read_text()
    assert "pw-s3cret-value cli-s3cret-value env-s3cret-value" in got
    files = [p for p in world.state.rglob("*") if p.is_file()]
    assert any(p.name == "db-b.log" for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        for secret in ("pw-s3cret-value", "cli-s3cret-value", "env-s3cret-value"):
            assert secret not in text, f"{secret} found in {path}"
    assert "***" in (world.run_dirs()[-1] / "output" / "use" / "db-b.log").read_text()
    assert "s3cret" not in err


def test_env_values_are_templates_and_secrets_in_them_stay_masked(world: World, capsys) -> None:
    """A step's env values render like its run (host, vars, secrets): the command sees the
    real values in its environment, every file and the terminal see *** for the secret."""
    world.write_runbook("""
        name: env-secrets
        steps:
          - id: use
            hosts: db@target
            env: {DB_PASSWORD: "{{ vars.db_password }}", WHERE: "{{ host.name }}@{{ target }}"}
            run: 'echo "$WHERE $DB_PASSWORD"; echo "$WHERE $DB_PASSWORD" > "$DRX_HOST_DIR/got"'
            undo: 'true'
          - id: probe
            kind: check
            hosts: app@target
            env: {TOKEN: "{{ vars.db_password }}"}
            run: '[ "$TOKEN" = env-s3cret-pw ]'
    """)
    code, err = world.run(capsys, "failover", "site-b", "--secret-var", "db_password=env-s3cret-pw")
    assert code == 0, err
    assert world.host_file("db-b", "got").read_text() == "db-b@site-b env-s3cret-pw\n"
    for path in (p for p in world.state.rglob("*") if p.is_file()):
        assert "env-s3cret-pw" not in path.read_text(errors="replace"), path
    assert "db-b@site-b ***" in (world.run_dirs()[-1] / "output" / "use" / "db-b.log").read_text()
    assert "s3cret" not in err


def test_ctrl_c_cancels_pending_steps_and_exits_130(world: World) -> None:
    """Ctrl-C to the process group lets the running command finish, cancels steps that never
    started, records the run cancelled, exits 130."""
    import os
    import signal

    world.write_runbook(f"""
        name: cancel
        steps:
          - {{id: running, hosts: db@target, run: '{stamped("running", "sleep 1")}', undo: 'true'}}
          - {{id: later, hosts: db@target, run: 'touch "$DRX_HOST_DIR/later"', needs: [running], undo: 'true'}}
    """)
    proc = world.spawn("failover", "site-b")
    deadline = time.monotonic() + 10
    while not world.host_file("db-b", "running.start").exists():
        assert time.monotonic() < deadline, (
            proc.stderr.read() if proc.poll() is not None else "no start"
        )
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert world.host_file("db-b", "running.end").exists(), "the running command was killed"
    assert not world.host_file("db-b", "later").exists()
    summary = world.summary()
    assert summary["status"] == "cancelled"
    assert world.step(summary, "running")["status"] == "succeeded"
    assert world.step(summary, "later")["status"] == "cancelled"


def test_serial_bounds_hosts_at_once(world: World, capsys) -> None:
    """serial: 1 runs a step's hosts one after the other (rolling), in inventory order."""
    world.write_runbook(f"""
        name: rolling
        steps:
          - {{id: roll, hosts: "@target", run: '{stamped("roll", "sleep 0.2")}', serial: 1, undo: 'true'}}
    """)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    assert host_time(world, "db-b", "roll.end") <= host_time(world, "app-b", "roll.start")


def test_max_parallel_bounds_steps_at_once(world: World, capsys) -> None:
    """--max-parallel 1 runs independent steps one at a time, in declaration order."""
    world.write_runbook(f"""
        name: narrow
        steps:
          - {{id: one, hosts: db@target, run: '{stamped("one", "sleep 0.2")}', undo: 'true'}}
          - {{id: two, hosts: app@target, run: '{stamped("two", "sleep 0.2")}', undo: 'true'}}
    """)
    assert world.run(capsys, "failover", "site-b", "--max-parallel", "1")[0] == 0
    assert host_time(world, "db-b", "one.end") <= host_time(world, "app-b", "two.start")


def test_large_output_goes_to_the_log_and_only_a_tail_is_kept(world: World, capsys) -> None:
    """A step printing 5 MB: the log file has all of it; journal and summary keep a tail."""
    world.write_runbook("""
        name: loud
        steps:
          - {id: loud, hosts: db@target, run: 'seq 1 700000; echo THE-END', undo: 'true'}
    """)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    run_dir = world.run_dirs()[-1]
    log = (run_dir / "output" / "loud" / "db-b.log").read_text()
    assert log.startswith("1\n2\n") and log.rstrip().endswith("700000\nTHE-END")
    assert max(len(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()) < 16_000
    tail = world.step(world.summary(), "loud")["hosts"][0]["output_tail"]
    assert tail.rstrip().endswith("THE-END") and len(tail) <= 4096


def test_json_log_lines_carry_run_step_and_host(world: World, capsys) -> None:
    """--log-format json writes one JSON object per line on stderr, with run_id bound."""
    world.write_runbook("""
        name: logs
        steps:
          - {id: s, hosts: db@target, run: 'exit 1', undo: 'true'}
    """)
    code, err = world.run(capsys, "failover", "site-b", "--log-format", "json")
    assert code == 1
    records = [json.loads(line) for line in err.splitlines()]
    run_lines = [r for r in records if "t" in r]  # the run's own events, then its closing line
    assert run_lines and all("run_id" in r for r in [*run_lines, records[-1]])
    failed = [r for r in records if r["event"] == "host_finished"]
    assert failed[0]["step"] == "s" and failed[0]["host"] == "db-b" and failed[0]["rc"] == 1


def test_unexpected_error_writes_a_debug_log_not_a_traceback(tmp_path, capsys, monkeypatch) -> None:
    """An internal error prints one line naming a debug log that holds the traceback."""
    from orchestrator import cli
    from orchestrator.cli import status

    def broken(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(status, "describe", broken)
    with pytest.raises(SystemExit) as exc:
        cli.main(["status", "--state-dir", str(tmp_path)])
    assert exc.value.code == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(tmp_path / "debug.log") in err
    assert "RuntimeError: kaboom" in (tmp_path / "debug.log").read_text()


def test_second_ctrl_c_cancels_running_commands(world: World) -> None:
    """A second Ctrl-C kills the running command on its host; its step is cancelled with
    outcome_unknown, and the run exits 130."""
    import os
    import signal

    world.write_runbook(f"""
        name: cancel2
        steps:
          - {{id: long, hosts: db@target, run: '{stamped("long", "sleep 2")}', undo: 'true'}}
    """)
    proc = world.spawn("failover", "site-b")
    deadline = time.monotonic() + 10
    while not world.host_file("db-b", "long.start").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    step = world.step(world.summary(), "long")
    assert step["status"] == "cancelled" and step["outcome_unknown"] is True
    time.sleep(2.2)
    assert not world.host_file("db-b", "long.end").exists(), "the command outlived the cancel"


def test_a_closed_log_pipe_does_not_fail_the_run(world: World) -> None:
    """`drx failover ... 2>&1 | head -1`: once the reader goes away the run carries on and is
    recorded as it happened."""
    world.write_runbook("""
        name: pipe
        steps:
          - {id: a, hosts: db@target, run: 'sleep 0.2', undo: 'true'}
          - {id: b, hosts: db@target, run: 'touch "$DRX_HOST_DIR/b"', needs: [a], undo: 'true'}
    """)
    proc = world.spawn("failover", "site-b")
    assert proc.stderr is not None and proc.stdout is not None
    proc.stderr.readline()
    proc.stderr.close()
    proc.stdout.close()
    proc.wait(timeout=20)
    assert proc.returncode == 0
    assert world.summary()["status"] == "succeeded"
    assert world.host_file("db-b", "b").exists()
