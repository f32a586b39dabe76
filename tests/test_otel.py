"""OpenTelemetry: a run is one trace (run → steps → host attempts → polls) exported over
OTLP/HTTP to a real receiver on loopback (decoded with opentelemetry-proto), the same trace
printed by `drx report --format otlp` (crashed runs too), and a missing collector is harmless."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.drill import World

RUNBOOK = """
    name: traced
    rto_target: 1m
    steps:
      - {id: prep, hosts: db@target, run: 'true', undo: 'true'}
      - id: wait-ready
        kind: check
        hosts: db@target
        run: 'n=$(cat "$DRX_HOST_DIR/n" 2>/dev/null || echo 0); echo $((n+1)) > "$DRX_HOST_DIR/n"; [ $n -ge 2 ]'
        interval: 100ms
        timeout: 10s
        needs: [prep]
      - {id: promote, hosts: '@target', run: 'touch "$DRX_HOST_DIR/promoted"', needs: [wait-ready], undo: 'true'}
"""


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def _exported_spans(receiver: Any, timeout: float = 10.0) -> tuple[dict[str, Any], list[Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        posts = [r for r in receiver.requests() if r["path"] == "/v1/traces"]
        if posts:
            break
        time.sleep(0.05)
    assert len(posts) == 1, posts
    headers = {k.lower(): v for k, v in posts[0]["headers"].items()}
    assert headers.get("content-type") == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(posts[0]["body"])
    (rs,) = request.resource_spans
    resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
    spans = [s for ss in rs.scope_spans for s in ss.spans]
    return resource, spans


def test_a_drill_is_exported_as_one_trace_with_cicd_names(
    world: World, http_receiver, monkeypatch, capsys
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, the run is exported once over OTLP/HTTP: a root span
    with the CICD pipeline attributes and RTO figures, a span per step, a child per host attempt,
    polls under the check's attempt, all in one trace with the journal's times."""
    receiver = http_receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{receiver.base}")
    world.write_runbook(RUNBOOK)
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    summary = world.summary()
    resource, spans = _exported_spans(receiver)
    assert resource["service.name"] == "drx"
    assert len({s.trace_id for s in spans}) == 1
    by_id = {s.span_id: s for s in spans}
    (root,) = [s for s in spans if not s.parent_span_id]
    attrs = _attrs(root)
    assert root.name == "failover traced"
    assert attrs["cicd.pipeline.name"] == "traced"
    assert attrs["cicd.pipeline.run.id"] == summary["run_id"]
    assert attrs["cicd.pipeline.result"] == "success"
    assert attrs["drx.direction"] == "failover" and attrs["drx.target"] == "site-b"
    assert attrs["drx.rto.measured_s"] == summary["rto"]["measured_s"]
    assert attrs["drx.rto.target_s"] == 60.0
    steps = {s.name: s for s in spans if s.parent_span_id == root.span_id and s.name != "health"}
    assert set(steps) == {"prep", "wait-ready", "promote"}
    for name, span in steps.items():
        a = _attrs(span)
        assert a["cicd.pipeline.task.name"] == name
        assert a["cicd.pipeline.task.run.id"] == f"{summary['run_id']}/{name}"
        assert a["cicd.pipeline.task.run.result"] == "success"
    attempts = [s for s in spans if s.parent_span_id in {x.span_id for x in steps.values()}]
    promote_hosts = sorted(
        _attrs(s)["drx.host"] for s in attempts if by_id[s.parent_span_id].name == "promote"
    )
    assert promote_hosts == ["app-b", "db-b"]
    (check_attempt,) = [s for s in attempts if by_id[s.parent_span_id].name == "wait-ready"]
    polls = [s for s in spans if s.parent_span_id == check_attempt.span_id]
    assert [_attrs(p)["drx.poll.ok"] for p in polls] == [False, False, True]
    # times are the journal's: the prep step span starts at wall0 + t of its step_started
    events = world.journal()
    wall0 = events[0]["wall0"]
    started = next(e for e in events if e["event"] == "step_started" and e["step"] == "prep")
    assert abs(steps["prep"].start_time_unix_nano - int((wall0 + started["t"]) * 1e9)) < 2_000
    for s in spans:
        assert root.start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano
        assert s.end_time_unix_nano <= root.end_time_unix_nano


def test_report_format_otlp_prints_the_same_trace_as_otlp_json(
    world: World, http_receiver, monkeypatch, capsys
) -> None:
    """`drx report RUN --format otlp` gives the exported trace as OTLP/JSON: same trace id, same
    span ids and names, hex ids; OTEL_SERVICE_NAME names the service."""
    receiver = http_receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://{receiver.base}/v1/traces")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "dr-drills")
    world.write_runbook(RUNBOOK)
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    resource, exported = _exported_spans(receiver)
    assert resource["service.name"] == "dr-drills"
    run_id = world.summary()["run_id"]
    code, err = world.run(capsys, "report", run_id, "--format", "otlp")
    assert code == 0, err
    doc = json.loads(world.last_stdout)
    spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert {(s["spanId"], s["name"]) for s in spans} == {
        (e.span_id.hex(), e.name) for e in exported
    }
    assert {s["traceId"] for s in spans} == {exported[0].trace_id.hex()}


def test_a_missing_collector_never_fails_or_holds_up_the_drill(
    world: World, monkeypatch, capsys
) -> None:
    """An endpoint nothing listens on: the drill succeeds, one warning says the trace was not
    exported, and drx is done within the bounded export time."""
    from orchestrator.report.otlp import EXPORT_TIMEOUT_S

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    world.write_runbook(RUNBOOK)
    started = time.monotonic()
    code, err = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    assert time.monotonic() - started < EXPORT_TIMEOUT_S + 5
    assert err.count("trace not exported") == 1


def test_a_crashed_run_can_be_printed_as_a_trace(world: World) -> None:
    """A run whose controller was killed mid-step still reads back as a trace: root result
    `error`, the step that was running has its span up to the journal's last event."""
    world.write_runbook("""
        name: crashing
        steps:
          - {id: slow, hosts: db@target, run: 'sleep 30', undo: 'true'}
    """)
    proc = world.spawn("failover", "site-b", "--yes")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            runs = world.run_dirs()
            # the run's directory exists a moment before its journal does
            journal = runs[-1] / "journal.jsonl" if runs else None
            if journal and journal.is_file() and '"host_started"' in journal.read_text():
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "report",
            "-f",
            "otlp",
            "--state-dir",
            str(world.state),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc = json.loads(out)
    spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    root = next(s for s in spans if "parentSpanId" not in s)
    attrs = {a["key"]: a["value"] for a in root["attributes"]}
    assert attrs["cicd.pipeline.result"] == {"stringValue": "error"}
    assert attrs["drx.status"] == {"stringValue": "crashed"}
    slow = next(s for s in spans if s["name"] == "slow")
    assert slow["parentSpanId"] == root["spanId"]
    assert int(slow["endTimeUnixNano"]) >= int(slow["startTimeUnixNano"])
