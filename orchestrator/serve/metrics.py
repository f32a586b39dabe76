"""``/metrics`` of ``drx serve``: the runs in the store, read at each scrape (prometheus_client
with a registry of its own, so nothing accumulates between scrapes)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from orchestrator.record.store import Store
from orchestrator.vocab import RunStatus


class RunsCollector:
    """drx_run_in_progress, and per runbook the last run's RTO, target and outcome."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        from orchestrator.record.runs import load_summaries

        summaries = load_summaries(self.store)
        running = GaugeMetricFamily(
            "drx_run_in_progress", "1 while a run holds the lock", labels=["run_id", "runbook"]
        )
        rto = GaugeMetricFamily(
            "drx_last_run_rto_seconds", "Measured RTO of the last run", labels=["runbook"]
        )
        target = GaugeMetricFamily(
            "drx_last_run_rto_target_seconds", "rto_target of the last run", labels=["runbook"]
        )
        ok = GaugeMetricFamily(
            "drx_last_run_succeeded", "1 if the last run succeeded", labels=["runbook"]
        )
        last = {}
        for s in summaries:
            if s.status == RunStatus.RUNNING:
                running.add_metric([s.run_id, s.runbook], 1)
            else:
                last[s.runbook] = s
        for book, s in last.items():
            if s.rto.measured_s is not None:
                rto.add_metric([book], s.rto.measured_s)
            if s.rto.target_s is not None:
                target.add_metric([book], s.rto.target_s)
            ok.add_metric([book], 1 if s.status == RunStatus.SUCCEEDED else 0)
        yield from (running, rto, target, ok)


def exposition(store: Store) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunsCollector(store))
    return generate_latest(registry), CONTENT_TYPE_LATEST
