"""``drx check --format prometheus``: the card as Prometheus metrics, in the text exposition
format that node_exporter's textfile collector reads (docs/reference.md lists the metrics).

Written with prometheus_client's own exposition (a registry of one collector, rendered by
``generate_latest``) so that names, labels, escaping and types are right by construction."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.report.units import parse_when

if TYPE_CHECKING:
    from orchestrator.cli.check import CheckResult

#: every metric drx check exports (the alert rules shipped in contrib/prometheus use these)
METRICS = (
    "drx_ready",
    "drx_host_up",
    "drx_readiness_check_ok",
    "drx_source_healthy",
    "drx_drift",
    "drx_drift_changes",
    "drx_drill_overdue",
    "drx_last_drill_success_timestamp_seconds",
    "drx_rto_seconds",
    "drx_predicted_rto_seconds",
    "drx_rto_target_seconds",
    "drx_rpo_exposure",
    "drx_rpo_target",
    "drx_check_timestamp_seconds",
    "drx_check_duration_seconds",
)


class _CardCollector(Collector):
    """Yields the metrics of one check, once."""

    def __init__(self, result: CheckResult, now: float) -> None:
        self.result = result
        self.now = now

    def collect(self) -> Iterator[Metric]:
        r, card = self.result, self.result.card
        rb, site = card.runbook, card.site

        def gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["runbook", *(labels or [])])

        m = gauge("drx_ready", "1 when a failover to site would not be refused now", ["site"])
        m.add_metric([rb, site], 1.0 if card.ready else 0.0)
        yield m
        m = gauge("drx_host_up", "1 when drx reached, trusted and used the host", ["site", "host"])
        for h in r.findings.hosts:
            m.add_metric([rb, h.host.site or "control", h.host.name], 1.0 if h.ok else 0.0)
        yield m
        m = gauge(
            "drx_readiness_check_ok",
            "1 when the readiness check held on the host",
            ["check", "host"],
        )
        for p in r.findings.readiness:
            m.add_metric([rb, p.name, p.host], 1.0 if p.ok else 0.0)
        yield m
        if r.findings.health is not None:
            m = gauge("drx_source_healthy", "1 when health held at the active site", ["site"])
            m.add_metric([rb, card.active], 0.0 if r.findings.health else 1.0)
            yield m
        m = gauge("drx_drift", "1 when files or hosts changed since the last good drill", ["site"])
        m.add_metric([rb, site], 1.0 if card.drift else 0.0)
        yield m
        m = gauge("drx_drift_changes", "changes since the last good drill, by kind", ["kind"])
        kinds: dict[str, int] = {}
        for c in card.drift:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        for kind, n in sorted(kinds.items()):
            m.add_metric([rb, kind], float(n))
        yield m
        m = gauge("drx_drill_overdue", "1 when the last good drill is older than drill_every")
        m.add_metric([rb], 1.0 if card.overdue else 0.0)
        yield m
        when = parse_when(card.last_success_at)
        if when is not None:
            m = gauge(
                "drx_last_drill_success_timestamp_seconds",
                "when the last succeeded failover of the runbook finished",
            )
            m.add_metric([rb], when.timestamp())
            yield m
        yield self._rto()
        m = gauge("drx_predicted_rto_seconds", "predicted RTO of a failover to site", ["site"])
        m.add_metric([rb, site], card.predicted_rto_s)
        yield m
        if card.rto_target_s is not None:
            m = gauge("drx_rto_target_seconds", "the runbook's rto_target")
            m.add_metric([rb], card.rto_target_s)
            yield m
        if card.rpo is not None:
            unit = card.rpo.unit
            if card.rpo.value is not None:
                m = gauge(
                    "drx_rpo_exposure",
                    "data a failover would lose if the source were lost now (rpo_probe)",
                    ["site", "unit"],
                )
                m.add_metric([rb, card.active, unit], float(card.rpo.value))
                yield m
            if card.rpo.target is not None:
                m = gauge("drx_rpo_target", "the runbook's rpo_target", ["unit"])
                m.add_metric([rb, unit], float(card.rpo.target))
                yield m
        m = gauge("drx_check_timestamp_seconds", "when this check ran", ["site"])
        m.add_metric([rb, site], self.now)
        yield m
        m = gauge("drx_check_duration_seconds", "how long this check took", ["site"])
        m.add_metric([rb, site], round(card.seconds, 3))
        yield m

    def _rto(self) -> Metric:
        """``drx_rto_seconds``: a summary of the measured RTOs of failovers to site."""
        card = self.result.card
        stats = card.measured
        labels = {"runbook": card.runbook, "site": card.site}
        m = Metric("drx_rto_seconds", "measured RTO of succeeded failovers to site", "summary")
        for q, value in (("0.5", stats.p50_s), ("0.9", stats.p90_s)):
            m.add_sample(
                "drx_rto_seconds",
                {**labels, "quantile": q},
                math.nan if value is None else value,
            )
        m.add_sample("drx_rto_seconds_count", labels, float(stats.count))
        m.add_sample("drx_rto_seconds_sum", labels, stats.sum_s)
        return m


def exposition(result: CheckResult, now: float | None = None) -> str:
    """The metrics page of one check."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_CardCollector(result, time.time() if now is None else now))
    return generate_latest(registry).decode()
