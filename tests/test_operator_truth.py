"""drx tells the operator the truth in every state: a half-done failover is continued or failed
back, never run over; a failover that reverses the last one is a failback; a running run is
reported as running; a declined gate says who declined; a resumed run is judged end to end; and
every sentence of a report is derived from what happened."""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.lab.sshd import free_port
from orchestrator.model.units import format_duration
from tests.drill import World

#: step b fails while "$DRX_HOST_DIR/broken" exists; a changes things before it
RUNBOOK = """
    name: truth
    steps:
      - {id: a, hosts: db@target, run: 'touch "$DRX_HOST_DIR/a"', undo: 'rm -f "$DRX_HOST_DIR/a"'}
      - id: b
        hosts: db@target
        run: '[ ! -e "$DRX_HOST_DIR/broken" ] && touch "$DRX_HOST_DIR/b"'
        undo: 'rm -f "$DRX_HOST_DIR/b"'
        needs: [a]
"""

local = pytest.mark.parametrize("world", ["local"], indirect=True)


def run_ids(world: World) -> list[str]:
    return [d.name for d in world.run_dirs()]


def half_done(world: World, capsys: pytest.CaptureFixture[str]) -> str:
    """A failover that changed a step and then failed; the cause is fixed afterwards."""
    world.write_runbook(RUNBOOK)
    world.host_file("db-b", "broken").touch()
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 1, err
    world.host_file("db-b", "broken").unlink()
    return run_ids(world)[-1]


@local
def test_a_failover_after_a_half_done_one_is_refused_with_the_ways_on(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failover while the last one stopped half-way exits 2, runs nothing, names the run and
    both ways on (resume RUN, failback RUN) and no --emergency; status prints the same."""
    stopped = half_done(world, capsys)
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 2, err
    assert run_ids(world) == [stopped]
    assert f"failover {stopped} failed half-way" in err
    assert f"drx resume {stopped}" in err and f"drx failback {stopped}" in err
    assert "--emergency" not in err
    assert world.run(capsys, "status")[0] == 0
    out = world.last_stdout
    assert f"drx resume {stopped}" in out and f"drx failback {stopped}" in out
    # the way on named works, and the refusal is gone once it did
    code, err = world.run(capsys, "failback", stopped)
    assert code == 0, err
    assert world.run(capsys, "status")[0] == 0
    assert "next, one of" not in world.last_stdout
    assert world.run(capsys, "failover", "site-b")[0] == 0


@local
def test_emergency_is_offered_only_when_the_source_cannot_be_reached(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the source's hosts unreachable, the refusal also offers resume --emergency."""
    stopped = half_done(world, capsys)
    doc = yaml.safe_load(world.inventory.read_text())
    dead = free_port("127.0.0.1")  # nothing listens there: connections are refused
    for host in doc["sites"]["site-a"]["hosts"].values():
        host.update(transport="ssh", port=dead, user="nobody")
    world.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 2, err
    assert f"drx resume {stopped}" in err and "--emergency" in err
    assert "db-a" in err and run_ids(world) == [stopped]


@local
def test_a_failover_that_reverses_the_last_one_needs_force(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Right after a succeeded failover to B, a failover back to A is refused (exit 2) saying
    it reverses that run and that drx failback is the command; --force runs it."""
    world.write_runbook(RUNBOOK)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    first = run_ids(world)[-1]
    code, err = world.run(capsys, "failover", "site-a")
    assert code == 2, err
    assert f"reverses the last failover, {first}" in err and "drx failback" in err
    assert run_ids(world) == [first]
    code, err = world.run(capsys, "failover", "site-a", "--force")
    assert code == 0, err
    assert world.summary()["target"] == "site-a"


@local
def test_a_declined_gate_records_who_declined_how_and_why(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """'n COMMENT' at the terminal: the journal, summary and every report say who declined the
    gate (user@host), how (terminal) and the comment."""
    from tests.test_gates import RUNBOOK as GATED
    from tests.test_gates import _read_until, _spawn_on_pty, _wait

    world.write_runbook(GATED)
    pid, fd = _spawn_on_pty(world)
    _read_until(fd, "Proceed to site-b?")
    os.write(fd, b"n the DBA says the replica is behind\r")
    assert _wait(pid, fd) == 1
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    answered = next(e for e in world.journal() if e["event"] == "gate_answered")
    assert (answered["approved"], answered["by"], answered["via"]) == (False, who, "terminal")
    assert answered["comment"] == "the DBA says the replica is behind"
    gate = world.step(world.summary(), "approve")
    assert gate["declined_by"] == who and gate["approved_by"] is None
    for fmt in ("text", "md", "html"):
        code, err = world.run(capsys, "report", "--format", fmt)
        assert code == 0, err
        assert f"declined by {who} (terminal)" in world.last_stdout, fmt
        assert "the DBA says the replica is behind" in world.last_stdout, fmt


@local
@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({"kind": "check", "interval": "0s"}, False),
        ({"kind": "check", "interval": 0}, False),
        ({"kind": "check", "interval": "10ms"}, False),
        ({"kind": "check", "interval": 0.04}, False),
        ({"kind": "check", "interval": "50ms"}, True),
        ({"kind": "check", "interval": "1s"}, True),
        ({"serial": 0}, False),
        ({"serial": 1}, True),
    ],
)
def test_the_schema_agrees_with_the_validator(
    world: World, capsys: pytest.CaptureFixture[str], change: dict[str, object], valid: bool
) -> None:
    """A poll interval under 50ms and serial: 0 are refused by drx validate (exit 2, file:line)
    and by the JSON Schema; the values at the bounds pass both."""
    import jsonschema

    from orchestrator.model.schema import runbook_schema

    step = {"id": "s", "hosts": "db@target", "run": "true", "undo": "true", **change}
    doc = {"name": "bounds", "steps": [step]}
    world.runbook.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, err = world.run(capsys, "validate")
    assert code == (0 if valid else 2), err
    key = next(iter(k for k in change if k != "kind"))
    if not valid:
        assert f"{world.runbook}:" in err and key in err
    errors = list(jsonschema.Draft202012Validator(runbook_schema()).iter_errors(doc))
    assert (errors == []) is valid, errors


@local
def test_a_manual_step_with_hosts_draws_a_warning(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manual step that names hosts runs nothing on them: validate warns, naming the line."""
    world.write_runbook("""
        name: gate-hosts
        steps:
          - id: ask
            kind: manual
            hosts: db@target
    """)
    code, err = world.run(capsys, "validate")
    assert code == 0, err
    assert f"{world.runbook}:6: warning: step 'ask'" in err and "'hosts'" in err


@local
def test_a_failed_run_report_says_only_what_happened(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failover run with --yes that fails before its gate: no report format claims that --yes
    approved every gate, that health polling stopped, or that the RTO was measured."""
    world.write_runbook("""
        name: failing
        health:
          - {name: up, hosts: control, run: 'true'}
        steps:
          - {id: a, hosts: db@target, run: 'false', undo: 'true'}
          - {id: gate, kind: manual, needs: [a]}
    """)
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 1, err
    for fmt in ("text", "md", "html"):
        assert world.run(capsys, "report", "--format", fmt)[0] == 0
        out = world.last_stdout
        assert "Every manual gate was approved" not in out, fmt
        assert "approved no manual gate" in out and "gate (not reached)" in out, fmt
        assert "polling stopped after 0 polls" not in out, fmt
        assert "Not polled: the run stopped before the health check." in out, fmt
        assert "would be measured from the start of a" in out, fmt


@local
def test_a_resumed_run_headlines_the_rto_end_to_end(
    world: World, capsys: pytest.CaptureFixture[str], http_receiver: Any
) -> None:
    """After a resume, the closing line, the notification, the report's Outcome and objectives,
    drx runs and drx status give the end-to-end RTO first and the resumed part second."""
    from tests.test_notify import _wait_for

    receiver = http_receiver()
    world.write_runbook(RUNBOOK.replace("name: truth", "name: truth\n    rto_target: 1h"))
    world.host_file("db-b", "broken").touch()
    assert world.run(capsys, "failover", "site-b")[0] == 1
    first = run_ids(world)[-1]
    world.host_file("db-b", "broken").unlink()
    time.sleep(0.6)  # the operator looks into it: the outage goes on
    hook = f"json://{receiver.base}/hook"
    code, err = world.run(capsys, "resume", "--notify", hook)
    assert code == 0, err
    rto = world.summary()["rto"]
    e2e, part, target = (
        format_duration(rto[k]) for k in ("end_to_end_s", "measured_s", "target_s")
    )
    headline = f"measured RTO {e2e} end to end from the start of {first} (target {target}: met)"
    assert f"{headline}; the resumed part {part}" in err
    end = _wait_for(receiver, "/hook", 2)[-1]["message"]
    assert f"{headline}; the resumed part {part}" in end
    assert world.run(capsys, "report")[0] == 0
    out = world.last_stdout
    outcome = " ".join(out[out.index("Outcome") : out.index("Objectives")].split())
    assert f"after the start of the original run {first} (the RTO end to end)" in outcome
    assert "This resumed run's own part took" in outcome
    assert out.index("RTO (e2e)") < out.index("RTO (run)")
    assert "the part after the resume" in out
    assert world.run(capsys, "runs")[0] == 0
    assert f"{e2e} e2e (resumed part {part})" in world.last_stdout.splitlines()[-1]


@local
def test_critical_path_shares_are_of_the_rto_window(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """With rto_start, a step that ran before the clock started has no share and is marked as
    outside the RTO; the shares of the rest add up to at most 100 %."""
    world.write_runbook("""
        name: clocked
        rto_start: go
        steps:
          - {id: prepare, hosts: db@target, run: 'sleep 0.4', undo: 'true'}
          - {id: go, hosts: db@target, run: 'sleep 0.2', undo: 'true', needs: [prepare]}
    """)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    from orchestrator.record.summary import RunSummary
    from orchestrator.report.facts import build
    from orchestrator.report.model import for_report

    path = build(for_report(RunSummary.from_dict(world.summary()))).path
    rows = {r.step_id: r for r in path.rows if r.step_id}
    assert rows["prepare"].share is None and "before the RTO clock" in rows["prepare"].note
    assert sum(r.share or 0.0 for r in path.rows) <= 100.5
    assert world.run(capsys, "report")[0] == 0
    assert "before the RTO clock started" in world.last_stdout


@local
def test_a_running_run_is_reported_as_running_in_every_format(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a run holds the lock, drx report says it is running — steps so far, elapsed time,
    projected RTO (from the history of an earlier drill) — in every format, and judges nothing:
    no finish time, no missed target, no failed or unknown step."""
    world.write_runbook("""
        name: slow
        rto_target: 1h
        steps:
          - {id: a, hosts: db@target, run: 'true', undo: 'true'}
          - id: hold
            hosts: db@target
            run: 'while [ ! -e "$DRX_HOST_DIR/go" ]; do sleep 0.05; done'
            undo: 'true'
            needs: [a]
    """)
    world.host_file("db-b", "go").touch()
    assert world.run(capsys, "failover", "site-b")[0] == 0
    assert world.run(capsys, "failback", "--yes")[0] == 0
    world.host_file("db-b", "go").unlink()
    proc = world.spawn("failover", "site-b")
    try:
        deadline = time.monotonic() + 60
        while not any(
            e["event"] == "host_started" and e["step"] == "hold"
            for e in (world.journal() if len(run_ids(world)) == 3 else [])
        ):
            assert time.monotonic() < deadline and proc.poll() is None, "the run never got going"
            time.sleep(0.05)
        outs = {}
        for fmt in ("text", "md", "html", "json", "junit"):
            code, err = world.run(capsys, "report", "--format", fmt)
            assert code == 0, err
            outs[fmt] = world.last_stdout
    finally:
        world.host_file("db-b", "go").touch()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    doc = json.loads(outs["json"])
    assert doc["status"] == "running" and doc["finished_at"] is None
    assert doc["progress"]["elapsed_s"] > 0 and doc["progress"]["projected_rto_s"] is not None
    assert world.step(doc, "hold")["status"] == "running"
    # what the page says, not its style sheet or markup
    outs["html"] = re.sub(
        r"<style.*?</style>|<script.*?</script>|<[^>]+>", " ", outs["html"], flags=re.S
    )
    for fmt in ("text", "md", "html"):
        text = " ".join(outs[fmt].split())
        assert "is still running: 1 of 2 steps finished, hold running" in text, fmt
        assert "projected RTO" in text and "Nothing is judged until it ends." in text, fmt
        assert "so far" in text, fmt
        for false in ("Finished", "took", "not met", "missed", "unknown", "polling stopped"):
            assert false not in text, (fmt, false)
    junit = outs["junit"]
    assert 'failures="0"' in junit and 'errors="0"' in junit and "still running" in junit


@local
def test_resume_of_a_changed_runbook_shows_the_change_and_needs_yes(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A runbook edited since the run stopped: resume refuses (exit 2, nothing run) naming the
    file and its sha256 before and now; with --yes it goes on and warns the same."""
    import hashlib

    stopped = half_done(world, capsys)
    before = hashlib.sha256(world.runbook.read_bytes()).hexdigest()
    world.write_runbook(RUNBOOK.replace("name: truth", "name: truth\n    description: fixed"))
    now = hashlib.sha256(world.runbook.read_bytes()).hexdigest()
    code, err = world.run(capsys, "resume", stopped)
    assert code == 2, err
    assert f"runbook {world.runbook}: sha256 {before[:12]}… → {now[:12]}…" in err
    assert "--yes" in err and run_ids(world) == [stopped]
    code, err = world.run(capsys, "resume", stopped, "--yes")
    assert code == 0, err
    assert f"sha256 {before[:12]}… → {now[:12]}…" in err


@local
def test_nothing_to_resume_says_what_would_be_and_where_drx_looked(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no run to resume, resume says what makes a run resumable, the absolute state
    directory it looked in, and what it found there."""
    world.write_runbook(RUNBOOK)
    code, err = world.run(capsys, "resume")
    assert code == 2
    assert f"nothing to resume for runbook 'truth' in {world.state.resolve()}" in err
    assert "failed, was cancelled or crashed" in err and "no runs at all" in err
    assert world.run(capsys, "failover", "site-b")[0] == 0
    code, err = world.run(capsys, "resume")
    assert code == 2
    assert f"run {run_ids(world)[-1]} succeeded" in err and "crashed runs can be resumed" in err


@local
def test_logs_and_bundle_take_the_common_options_and_bundle_paths_are_portable(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """logs and bundle accept --log-format, -v, -r and -i like every command; no bundle path
    holds a ':'; reports name the command that prints a full log, never a '<state-dir>'."""
    import tarfile

    world.write_runbook("""
        name: portable
        health:
          - {name: up, hosts: control, run: 'true'}
        steps:
          - {id: a, hosts: db@target, run: 'echo hello; false', undo: 'true', on_failure: continue}
    """)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    run_id = run_ids(world)[-1]
    # health output kept under output/health:NAME/ (as drx logs finds it)
    kept = world.state / "runs" / run_id / "output" / "health:up"
    kept.mkdir()
    (kept / "control.log").write_text("ok\n")
    common = ["--log-format", "json", "-v", "-r", str(world.runbook), "-i", str(world.inventory)]
    code, err = world.run(capsys, "logs", "latest", "a", *common)
    assert code == 0, err
    assert world.last_stdout == "hello\n"
    target = tmp_path / "evidence.tar.gz"
    code, err = world.run(capsys, "bundle", "-o", str(target), *common)
    assert code == 0, err
    with tarfile.open(target) as tar:
        names = tar.getnames()
    assert not [n for n in names if ":" in n], names
    assert f"drx-{run_id}/output/_health/up/control.log" in names
    for fmt in ("text", "md", "html"):
        assert world.run(capsys, "report", "--format", fmt)[0] == 0
        assert (
            "<state-dir>" not in world.last_stdout and "&lt;state-dir&gt;" not in world.last_stdout
        )
        assert f"drx logs {run_id} a db-b" in world.last_stdout, fmt


@local
def test_plan_says_so_when_no_gate_is_on_the_critical_path_and_suggests_the_site(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plan whose gate waits beside the critical path says there is no gate on it (not
    'operator at gates 0 s (gates on the critical path)'); a site in the wrong case is named."""
    world.write_runbook("""
        name: beside
        steps:
          - {id: slow, hosts: db@target, run: 'true', undo: 'true', expect: 5s}
          - {id: ask, kind: manual}
          - {id: quick, hosts: db@target, run: 'true', undo: 'true', expect: 1s, needs: [ask]}
    """)
    assert world.run(capsys, "plan", "site-b")[0] == 0
    assert "no gate on the critical path" in world.last_stdout
    assert "(gates on the critical path)" not in world.last_stdout
    code, err = world.run(capsys, "plan", "SITE-B")
    assert code == 2 and "did you mean 'site-b'?" in err


@local
def test_a_failback_names_the_way_it_moved_the_service_in_junit_and_otlp(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failback's junit properties and OTLP run attributes say it moved the service from
    site-b to site-a, beside the failover's source and target it keeps."""
    world.write_runbook(RUNBOOK)
    assert world.run(capsys, "failover", "site-b")[0] == 0
    assert world.run(capsys, "failback", "--yes")[0] == 0
    assert world.run(capsys, "report", "--format", "junit")[0] == 0
    assert '<property name="moved" value="from site-b to site-a" />' in world.last_stdout
    assert world.run(capsys, "report", "--format", "otlp")[0] == 0
    trace = json.loads(world.last_stdout)
    spans = trace["resourceSpans"][0]["scopeSpans"][0]["spans"]
    root = next(s for s in spans if not s.get("parentSpanId"))
    attrs = {a["key"]: next(iter(a["value"].values())) for a in root["attributes"]}
    assert attrs["drx.moved"] == "from site-b to site-a"
    assert (attrs["drx.moved_from"], attrs["drx.moved_to"]) == ("site-b", "site-a")


@local
def test_emergency_is_offered_when_only_the_source_cannot_be_reached(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failover whose pre-flight cannot reach the source's hosts (only those) is refused
    naming them and offering --emergency; with --emergency it runs."""
    world.write_runbook("""
        name: lost
        steps:
          - {id: freeze, hosts: db@source, run: 'true', undo: 'true', on_failure: continue}
          - {id: promote, hosts: db@target, run: 'true', undo: 'true', needs: [freeze]}
    """)
    doc = yaml.safe_load(world.inventory.read_text())
    dead = free_port("127.0.0.1")
    for host in doc["sites"]["site-a"]["hosts"].values():
        host.update(transport="ssh", port=dead, user="nobody")
    world.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, err = world.run(capsys, "failover", "site-b")
    assert code == 2, err
    assert "is at the source, site-a" in err and "--emergency" in err and "db-a" in err
    assert world.run(capsys, "failover", "site-b", "--emergency")[0] == 0


@local
def test_failback_takes_the_run_as_resume_does_and_keeps_run_as_an_alias(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """drx failback RUN and drx failback --run RUN name the same run; two different runs are a
    usage error (exit 2, nothing run)."""
    stopped = half_done(world, capsys)
    code, err = world.run(capsys, "failback", stopped, "--run", "20200101T000000.000Z-x")
    assert code == 2 and "two runs given" in err
    assert run_ids(world) == [stopped]
    code, err = world.run(capsys, "failback", stopped, "--run", stopped, "--dry-run")
    assert code == 0, err
    code, err = world.run(capsys, "failback", "--run", stopped)
    assert code == 0, err
    assert world.summary()["reverses"] == stopped
