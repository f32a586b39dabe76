"""Client-side probes (a runbook's ``probes:``): each polled on its own schedule, on threads of its
own, for the whole run — so what clients saw is measured beside drx's own RTO, and a down window
longer than ``max_down`` stops the run (docs/reference.md, "probes").

The scheduler never waits for a probe: the runner starts them once the hosts are connected, asks
:meth:`Probes.why_stopped` (one of the executor's start guards) whether a probe breached, and stops
them before the run's last event. Every poll is journaled; the down windows are folded from the
journal (``record.summary``), so a crashed run is measured the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.model.inventory import Host
from orchestrator.model.templating import render
from orchestrator.plan.build import Plan, ProbePlan
from orchestrator.record.events import (
    ProbeBreached,
    ProbePoll,
)
from orchestrator.record.journal import Journal
from orchestrator.run.executor import check_holds, run_command
from orchestrator.transport.base import CancelToken, Connection

if TYPE_CHECKING:
    import jinja2
else:
    from orchestrator.model.templating import jinja2  # imported when first used

#: how often breaches are looked for between polls: a breach is seen this long after it
#: happens at the most, whatever the probes' intervals
WATCH_S = 0.05


@dataclass
class _Down:
    """One probe's state: which of its hosts are down, and since when the probe is."""

    hosts_down: set[str] = field(default_factory=set)
    since: float | None = None  # run offset of the first failing poll of this window
    breached: bool = False


class Probes:
    """The probes of one run, polling on threads of their own."""

    def __init__(
        self,
        plan: Plan,
        connections: Mapping[str, Connection],
        journal: Journal,
        *,
        stops_run: bool = True,
        on_breach: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan
        self.connections = connections
        self.journal = journal
        #: whether a breach stops the run (not in a rollback or a drill's way home, which have
        #: nowhere better to go: there a breach is recorded only)
        self.stops_run = stops_run
        self.on_breach = on_breach
        self._stop = threading.Event()
        self._cancel = CancelToken()
        self._lock = threading.Lock()
        self._state = {pp.probe.name: _Down() for pp in plan.probes}
        self._threads: list[threading.Thread] = []
        self.breach: str | None = None  # why the run stops, once a probe breached
        #: the start (run offset) of the last finished poll of each probe and host
        self._last: dict[tuple[str, str], float] = {}
        self._polled = threading.Condition(self._lock)

    def start(self) -> None:
        """Start one poller per probe and host, and the breach watcher."""
        for pp in self.plan.probes:
            for host in pp.hosts:
                self._spawn(f"probe-{pp.probe.name}-{host.name}", self._poll_loop, pp, host)
        if any(pp.probe.max_down is not None for pp in self.plan.probes):
            self._spawn("probe-watch", self._watch)

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Stop polling once every poller has finished one poll started after the run's work
        ended — so a window the run's last steps closed is seen closed — bounded by the
        longest interval + poll timeout; then a poll under way is closed."""
        if self._threads:
            now = self.journal.now()
            bound = max(pp.probe.interval + pp.probe.timeout for pp in self.plan.probes)
            keys = [(pp.probe.name, h.name) for pp in self.plan.probes for h in pp.hosts]
            with self._polled:
                self._polled.wait_for(
                    lambda: all(self._last.get(k, -1.0) >= now for k in keys), timeout=bound
                )
        self._stop.set()
        self._cancel.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def why_stopped(self) -> str | None:
        """A start guard of the executor: why nothing new may start (a probe breached)."""
        return self.breach if self.stops_run else None

    # -- polling -----------------------------------------------------------------------------
    def _poll_loop(self, pp: ProbePlan, host: Host) -> None:
        probe, step = pp.probe, pp.probe.as_step()
        conn = self.connections.get(host.name)
        ctx = self.plan.context(host=host)
        command: str | None = None
        problem: str | None = None
        try:
            command = render(probe.run, ctx)
        except jinja2.TemplateError as exc:
            problem = f"template error: {exc}"
        next_at = time.monotonic()
        while not self._stop.is_set():
            t0 = self.journal.now()
            if conn is None or command is None:
                ok, rc, value, duration = False, None, None, 0.0
                error = "unreachable" if conn is None else problem
            else:
                res = run_command(
                    conn,
                    step,
                    command,
                    env={},
                    timeout=probe.timeout,
                    redact=self.plan.redactor,
                    cancel=self._cancel,
                )
                if res.error == "cancelled" and self._stop.is_set():
                    return  # closed by stop(): not a poll
                ok, value = check_holds(step, ctx, res)
                rc, error, duration = res.rc, res.error, res.duration_s
            self.journal.write(
                ProbePoll(
                    probe=probe.name,
                    host=host.name,
                    ok=ok,
                    rc=rc,
                    error=error,
                    value=value,
                    duration_s=round(duration, 6),
                ),
                t0,
            )
            self._note(probe.name, host.name, ok, t0)
            next_at += probe.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - probe.interval)  # no burst after a slow poll

    def _note(self, name: str, host: str, ok: bool, t: float) -> None:
        with self._lock:
            self._last[(name, host)] = t
            self._polled.notify_all()
            state = self._state[name]
            if ok:
                state.hosts_down.discard(host)
                if not state.hosts_down:
                    state.since = None
            else:
                state.hosts_down.add(host)
                if state.since is None:
                    state.since = t

    def _watch(self) -> None:
        limits = {pp.probe.name: pp.probe.max_down for pp in self.plan.probes}
        while not self._stop.wait(WATCH_S):
            now = self.journal.now()
            for name, limit in limits.items():
                with self._lock:
                    state = self._state[name]
                    since = state.since
                    if limit is None or since is None or state.breached:
                        continue
                    if now - since <= limit:
                        continue
                    state.breached = True
                self._breached(name, since, now, limit)

    def _breached(self, name: str, since: float, now: float, limit: float) -> None:
        down = now - since
        message = (
            f"probe '{name}' breached: down {down:.1f}s since {since:.1f}s into the run, "
            f"past its max_down of {limit:g}s"
        )
        self.journal.write(
            ProbeBreached(
                probe=name,
                down_s=round(down, 6),
                since=round(since, 6),
                max_down_s=limit,
                stops_run=self.stops_run,
                message=message,
            ),
            now,
        )
        if self.breach is None:
            self.breach = message
        if self.stops_run and self.on_breach is not None:
            self.on_breach()
