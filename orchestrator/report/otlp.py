"""A run as one OpenTelemetry trace, built from its journal (and summary) after the fact.

One code path serves both uses: ``drx report RUN --format otlp`` prints the trace as OTLP/JSON,
and at the end of a run drx exports the same spans over OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set — so a crashed
run can be exported later, and times are the journal's, not a live tracer's.

Spans: the run (root) → a span per step → a span per host attempt → a span per check poll. Names
and attributes follow the OpenTelemetry CICD semantic conventions (``cicd.pipeline.name`` is the
runbook, ``cicd.pipeline.run.id`` the run id, ``cicd.pipeline.task.name`` and
``cicd.pipeline.task.run.id`` the step, ``cicd.pipeline.result`` /
``cicd.pipeline.task.run.result``, ``error.type``), plus ``drx.*`` attributes (direction, sites,
host, attempt, RTO/RPO measured and target). Trace and span ids are derived from the run id, so
exporting a run twice gives the same trace. See README.md, "OpenTelemetry".

The SDK and exporter are imported only here, and only when used (``drx --help`` stays fast).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.record.events import (
    GateAnswered,
    HealthHeld,
    HealthPolling,
    HealthTimeout,
    HostFinished,
    HostStarted,
    JournalEvent,
    Poll,
    RunStarted,
    StepFinished,
    StepStarted,
)
from orchestrator.record.summary import RunSummary
from orchestrator.report.children import child_spans
from orchestrator.vocab import RunStatus, StepKind, StepStatus

#: the instrumentation scope of drx's spans
SCOPE = "drx"
#: the longest the export at the end of a run may take (OTEL_EXPORTER_OTLP_TIMEOUT may lower it)
EXPORT_TIMEOUT_S = 2.0
#: check polls kept per host attempt (a check polled every second for an hour is 3,600 spans)
POLLS_PER_ATTEMPT = 200

_RUN_RESULT: dict[str, str] = {
    RunStatus.SUCCEEDED: "success",
    RunStatus.FAILED: "failure",
    RunStatus.CANCELLED: "cancellation",
    RunStatus.CRASHED: "error",
    RunStatus.RUNNING: "pending",
}
_TASK_RESULT: dict[str, str] = {
    StepStatus.SUCCEEDED: "success",
    StepStatus.FAILED: "failure",
    StepStatus.CANCELLED: "cancellation",
    StepStatus.SKIPPED: "skip",
    StepStatus.UNKNOWN: "error",
}


@dataclass
class SpanData:
    """A span before it becomes an SDK ``ReadableSpan``: times in ns since the epoch."""

    key: str  # unique within the run: the span id is derived from it
    name: str
    start_ns: int
    end_ns: int
    parent: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # error.type; the span's status is ERROR


def _id(run_id: str, key: str, size: int) -> int:
    digest = hashlib.sha256(f"{run_id}\0{key}".encode()).digest()
    return int.from_bytes(digest[:size], "big") or 1


def trace_id(run_id: str) -> int:
    """The run's trace id (the same every time the run is exported)."""
    return _id(run_id, "trace", 16)


def span_data(summary: RunSummary, events: Sequence[JournalEvent]) -> list[SpanData]:
    """The run's spans from its journal events; the summary gives outcome, RTO and RPO."""
    if not events:
        return []
    start = events[0]
    wall0 = float((start.wall0 if isinstance(start, RunStarted) else None) or 0.0)

    def ns(t: float) -> int:
        return int((wall0 + float(t)) * 1e9)

    last_t = float(events[-1].t)
    steps: dict[str, SpanData] = {}
    attempts: dict[tuple[str, str], SpanData] = {}
    polls: dict[tuple[str, str], int] = {}
    spans: list[SpanData] = []
    health: SpanData | None = None
    for e in events:
        t = float(e.t)
        if isinstance(e, StepStarted):
            sid = e.step
            span = SpanData(
                f"step/{sid}",
                sid,
                ns(t),
                ns(last_t),
                "run",
                {
                    "cicd.pipeline.task.name": sid,
                    "cicd.pipeline.task.run.id": f"{summary.run_id}/{sid}",
                    "drx.step.kind": str(e.kind or StepKind.COMMAND),
                    "drx.step.wave": int(e.wave or 0),
                },
            )
            steps[sid] = span
            spans.append(span)
        elif isinstance(e, StepFinished) and e.step in steps:
            span = steps[e.step]
            span.end_ns = ns(t)
            status = str(e.status or StepStatus.UNKNOWN)
            span.attributes["cicd.pipeline.task.run.result"] = _TASK_RESULT.get(status, "error")
            span.attributes["drx.step.status"] = status
            span.attributes["drx.step.attempts"] = int(e.attempts or 0)
            if status in (StepStatus.FAILED, StepStatus.UNKNOWN):
                span.error = str(e.error or status)
        elif isinstance(e, HostStarted) and not (e.step or "").startswith("health:"):
            sid, host, attempt = e.step or "", str(e.host), int(e.attempt or 1)
            parent = steps.get(sid)
            span = SpanData(
                f"attempt/{sid}/{host}/{attempt}",
                f"{sid} on {host}",
                ns(t),
                ns(last_t),
                parent.key if parent else "run",
                {
                    "cicd.pipeline.task.name": sid,
                    "drx.host": host,
                    "drx.attempt": attempt,
                },
            )
            attempts[(sid, host)] = span
            spans.append(span)
        elif isinstance(e, HostFinished) and (e.step or "", str(e.host)) in attempts:
            span = attempts[(e.step or "", str(e.host))]
            span.end_ns = ns(t)
            status = str(e.status or StepStatus.UNKNOWN)
            span.attributes["drx.host.status"] = status
            if e.rc is not None:
                span.attributes["drx.rc"] = int(e.rc)
            if status != StepStatus.SUCCEEDED:
                span.error = str(e.error or status)
        elif isinstance(e, Poll) and (e.step or "", str(e.host)) in attempts:
            key = (e.step or "", str(e.host))
            polls[key] = polls.get(key, 0) + 1
            if polls[key] > POLLS_PER_ATTEMPT:
                continue
            parent_span = attempts[key]
            duration = float(e.duration_s or 0.0)
            spans.append(
                SpanData(
                    f"{parent_span.key}/poll/{polls[key]}",
                    f"poll {e.step}",
                    ns(t),  # a poll event is written at the poll's start
                    ns(t + duration),
                    parent_span.key,
                    {"drx.poll": polls[key], "drx.poll.ok": bool(e.ok)},
                )
            )
        elif isinstance(e, HealthPolling):
            health = SpanData(
                "health",
                "health",
                ns(t),
                ns(last_t),
                "run",
                {"drx.site": str(e.site or "")},
            )
            spans.append(health)
        elif isinstance(e, HealthHeld | HealthTimeout) and health is not None:
            health.end_ns = ns(t)
            health.attributes["drx.health.held"] = isinstance(e, HealthHeld)
            if isinstance(e, HealthTimeout):
                health.error = "health_timeout"
        elif isinstance(e, GateAnswered) and e.step in steps:
            answer = "approved" if e.approved else "declined"
            for name, value in (
                (f"drx.gate.{answer}_by", e.by),
                (f"drx.gate.{answer}_via", e.via),
                ("drx.gate.comment", e.comment),
            ):
                if value:
                    steps[e.step].attributes[name] = str(value)
    for probe in summary.probes:  # a span per down window: the downtime clients saw
        for index, (w0, w1) in enumerate(probe.windows, start=1):
            start_t = float(w0 or 0.0)
            end_t = float(w1) if w1 is not None else last_t
            spans.append(
                SpanData(
                    f"probe/{probe.name}/{index}",
                    f"probe {probe.name} down",
                    ns(start_t),
                    ns(max(end_t, start_t)),
                    "run",
                    {
                        "drx.probe": probe.name,
                        "drx.probe.window": index,
                        "drx.probe.down_s": round(end_t - start_t, 3),
                        "drx.probe.open": w1 is None,
                    },
                    error=(
                        "probe_breached"
                        if probe.max_down_s is not None and end_t - start_t > probe.max_down_s
                        else None
                    ),
                )
            )
    end_t = last_t
    root = SpanData("run", f"{summary.direction} {summary.runbook}", ns(0.0), ns(end_t), None)
    root.attributes.update(_run_attributes(summary))
    if summary.status not in (RunStatus.SUCCEEDED, RunStatus.RUNNING):
        root.error = summary.status if summary.status != RunStatus.FAILED else RunStatus.FAILED
    return [root, *child_spans(summary.children, spans)]


def _run_attributes(s: RunSummary) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "cicd.pipeline.name": s.runbook,
        "cicd.pipeline.run.id": s.run_id,
        "cicd.pipeline.result": _RUN_RESULT.get(s.status, "error"),
        "drx.direction": s.direction,
        "drx.source": s.source,
        "drx.target": s.target,
        "drx.site": s.site,
        # where this run moved the service (a failback keeps the failover's source/target)
        "drx.moved_from": s.source if s.site == s.target else s.target,
        "drx.moved_to": s.site,
        "drx.moved": f"from {s.source if s.site == s.target else s.target} to {s.site}",
        "drx.status": s.status,
        "drx.emergency": s.emergency,
    }
    optional: dict[str, Any] = {
        "drx.parent_run": s.parent_run,
        "drx.failback_mode": s.failback_mode,
        "drx.rto.measured_s": s.rto.measured_s,
        "drx.rto.target_s": s.rto.target_s,
        "drx.rto.met": s.rto.met,
        "drx.rto.end_to_end_s": s.rto.end_to_end_s,
        "drx.runbook.sha256": s.runbook_sha256,
        "drx.inventory.sha256": s.inventory_sha256,
        "drx.message": s.message,
        "drx.drill_id": s.drill_id,
        "drx.rollback": True if s.rollback else None,
    }
    if s.rpo is not None:
        unit = "bytes" if s.rpo.in_bytes else "s"
        optional[f"drx.rpo.measured_{unit}"] = s.rpo.measured
        optional[f"drx.rpo.target_{unit}"] = s.rpo.target
        optional["drx.rpo.met"] = s.rpo.met
    attrs.update({k: v for k, v in optional.items() if v is not None})
    return attrs


def readable_spans(summary: RunSummary, events: Sequence[JournalEvent]) -> list[Any]:
    """The run's spans as OpenTelemetry SDK ``ReadableSpan`` objects, ready for any exporter."""
    from opentelemetry import trace as trace_api
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Status, StatusCode

    from orchestrator import __version__

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create
    attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "drx"}
    resource = Resource.create({**attrs, "service.version": __version__})
    scope = InstrumentationScope(SCOPE, __version__)
    tid = trace_id(summary.run_id)
    data = span_data(summary, events)

    def context(key: str) -> Any:
        return trace_api.SpanContext(
            trace_id=tid,
            span_id=_id(summary.run_id, key, 8),
            is_remote=False,
            trace_flags=trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED),
        )

    spans = []
    for d in data:
        attributes = dict(d.attributes)
        status = Status(StatusCode.UNSET)
        if d.error:
            attributes["error.type"] = d.error
            status = Status(StatusCode.ERROR, d.error)
        elif d.parent is None or "cicd.pipeline.task.run.result" in attributes:
            status = Status(StatusCode.OK)
        spans.append(
            ReadableSpan(
                name=d.name,
                context=context(d.key),
                parent=context(d.parent) if d.parent else None,
                resource=resource,
                attributes=attributes,
                kind=trace_api.SpanKind.INTERNAL,
                status=status,
                start_time=d.start_ns,
                end_time=max(d.end_ns, d.start_ns),
                instrumentation_scope=scope,
            )
        )
    return spans


def otlp_json(summary: RunSummary, events: Sequence[JournalEvent]) -> str:
    """The run's trace as an OTLP/JSON ``ExportTraceServiceRequest`` (what a collector's
    ``/v1/traces`` takes with ``Content-Type: application/json``)."""
    import base64
    import json

    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    doc = MessageToDict(encode_spans(readable_spans(summary, events)), use_integers_for_enums=True)
    # OTLP/JSON differs from the protobuf JSON mapping: ids are hex, not base64
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(doc, indent=2) + "\n"


def export(summary: RunSummary, events: Sequence[JournalEvent]) -> str | None:
    """Export the run's trace over OTLP/HTTP to the endpoint the environment names; returns
    None, or why it failed. Bounded by ``EXPORT_TIMEOUT_S``: a missing collector never holds a
    drill up, and never fails it."""
    import logging

    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import SpanExportResult
    except ImportError as exc:  # pragma: no cover - a broken installation
        return f"OpenTelemetry is not installed: {exc}"
    # drx reports a failed export in its own words; the exporter's log lines would bypass it
    for name in ("opentelemetry", "urllib3"):
        quiet = logging.getLogger(name)
        quiet.propagate = False
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
    timeout = EXPORT_TIMEOUT_S
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        value = os.environ.get(name)
        if value:
            with contextlib.suppress(ValueError):
                timeout = min(timeout, float(value) / 1000.0)  # milliseconds
            break
    exporter = OTLPSpanExporter(timeout=timeout)
    try:
        result = exporter.export(readable_spans(summary, events))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            exporter.shutdown()  # type: ignore[no-untyped-call]
    if result is not SpanExportResult.SUCCESS:
        return f"the collector at {getattr(exporter, '_endpoint', '?')} did not take it"
    return None
