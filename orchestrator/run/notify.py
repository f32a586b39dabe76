"""Notifications: run started, a manual gate waiting, the RTO budget at risk, run finished.

Sent through Apprise (Slack, Teams, ntfy, json:// webhooks… — one URL each) from a thread of
their own, fed by the journal's listeners: the scheduler only puts an event on a queue. An
endpoint that is down, slow or wrong never fails or slows the drill: its failure is a warning
in the log, and when the run ends drx waits for outstanding messages at most ``DRAIN_S``.
Secrets are masked (``***``) in every message and in the URLs the warnings name.
See README.md, "Notifications".
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orchestrator.model.units import format_duration
from orchestrator.record.events import (
    Event,
    GateWaiting,
    JournalEvent,
    RtoBudgetAtRisk,
    RunFinished,
    RunStarted,
)
from orchestrator.record.journal import Journal
from orchestrator.record.summary import RunSummary
from orchestrator.vocab import RunStatus

#: the longest a run's end waits for notifications still being sent
DRAIN_S = 3.0
#: Apprise's connect and read timeouts for each message (URL parameters ``cto``/``rto`` win)
SEND_TIMEOUT_S = 4.0


class Level(StrEnum):
    """How a message is flagged (Apprise's notify types)."""

    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    level: Level = Level.INFO


def message_for(
    event: JournalEvent, summary: Callable[[], RunSummary], where: str
) -> Message | None:
    """The message an event calls for (None: none). ``summary`` builds the run's summary (for
    the finished message); ``where`` says how to get the report."""
    if isinstance(event, RunStarted):
        target = event.rto_target_s
        body = f"run {event.run_id}"
        if target is not None:
            body += f"; RTO target {format_duration(target)}"
        if event.emergency:
            body += "; EMERGENCY"
        return Message(
            f"drx: {event.direction} of {event.runbook} to {event.moves_to} started",
            body,
        )
    if isinstance(event, GateWaiting):
        return Message(
            f"drx: gate '{event.step}' is waiting for an operator",
            f"{event.prompt or event.step}",
            Level.WARNING,
        )
    if isinstance(event, RtoBudgetAtRisk):
        return Message(
            "drx: RTO target at risk",
            f"projected RTO {format_duration(event.projected_s)} vs target "
            f"{format_duration(event.target_s)}",
            Level.WARNING,
        )
    if isinstance(event, RunFinished):
        s = summary()
        rto, rpo = s.rto, s.rpo
        lines = [f"status: {s.status}" + (f" — {s.message}" if s.message else "")]
        headline = rto.headline(s.parent_run)
        if headline is not None:
            lines.append(headline)
        if rpo is not None and rpo.measured is not None:
            value = rpo.measured
            text = f"RPO {value:g} B" if rpo.in_bytes else f"RPO {format_duration(value)}"
            if rpo.met is not None:
                text += " (target met)" if rpo.met else " (target MISSED)"
            lines.append(text)
        lines.append(f"report: {where}")
        level = Level.SUCCESS if s.status == RunStatus.SUCCEEDED else Level.FAILURE
        if s.status == RunStatus.SUCCEEDED and rto.met is False:
            level = Level.WARNING
        return Message(
            f"drx: {s.direction} of {s.runbook} {s.run_id} {s.status}", "\n".join(lines), level
        )
    return None


class Notifier:
    """Sends the run's notifications to ``urls`` from a background thread; attach with
    ``journal.listeners.append(notifier.on_event)``."""

    def __init__(
        self,
        urls: Sequence[str],
        journal: Journal,
        redact: Callable[[str], str],
        where: str,
        warn: Callable[[str], None],
    ) -> None:
        self.urls = list(urls)
        self._journal = journal
        self._redact = redact
        self._where = where
        self._warn = warn
        self._queue: queue.Queue[JournalEvent | None] = queue.Queue()
        self._abandoned = False  # the run has ended and stopped waiting: say nothing more
        self._gates_wait = True  # a gate waits for a person (not under --yes)
        self._thread = threading.Thread(target=self._loop, name="drx-notify", daemon=True)
        self._thread.start()
        self.sent = 0
        self.failed = 0

    WANTED = frozenset(
        {Event.RUN_STARTED, Event.GATE_WAITING, Event.RTO_BUDGET_AT_RISK, Event.RUN_FINISHED}
    )

    def on_event(self, event: JournalEvent) -> None:
        """Journal listener: queue the events that call for a message (never blocks)."""
        if isinstance(event, RunStarted):
            # under --yes every gate is approved the moment it is reached: nobody is waited for
            self._gates_wait = not event.yes
        if isinstance(event, GateWaiting) and not self._gates_wait:
            return
        if event.event in self.WANTED:
            self._queue.put(event)

    def close(self, timeout: float = DRAIN_S) -> None:
        """Wait (at most ``timeout``) for queued messages to go out; then leave the rest."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._say(f"notifications still being sent after {timeout:g}s; not waiting for them")
            self._abandoned = True

    def _say(self, text: str) -> None:
        """A warning in the log; never raises (stderr may be gone), silent once abandoned."""
        if self._abandoned:
            return
        with contextlib.suppress(Exception):
            self._warn(text)

    # --- the sending thread ------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            targets = self._targets()
        except Exception as exc:  # Apprise missing or broken: the drill goes on without
            self._say(f"notifications are off: {exc!r}")
            targets = []
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                message = message_for(event, self._summary, self._where)
            except Exception as exc:  # a message that cannot be built is not worth a drill
                self._say(f"notification for {event.event} not built: {exc}")
                continue
            if message is not None:
                self._send(targets, message)

    def _summary(self) -> RunSummary:
        from orchestrator.record.summary import build_summary

        return build_summary(self._journal.typed_events())

    def _targets(self) -> list[tuple[str, Any]]:
        """One Apprise object per URL, so that each failure can be named."""
        import logging

        import apprise

        # drx says what failed in its own log; Apprise's own lines would bypass it on stderr
        quiet = logging.getLogger("apprise")
        quiet.propagate = False
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
        targets = []
        for url in self.urls:
            ap = apprise.Apprise()
            if not ap.add(_with_timeouts(url)):
                self._say(f"notify: not a notification URL Apprise knows: {self._redact(url)}")
                continue
            targets.append((url, ap))
        return targets

    def _send(self, targets: list[tuple[str, Any]], message: Message) -> None:
        import apprise

        title, body = self._redact(message.title), self._redact(message.body)
        kind = {
            Level.INFO: apprise.NotifyType.INFO,
            Level.SUCCESS: apprise.NotifyType.SUCCESS,
            Level.WARNING: apprise.NotifyType.WARNING,
            Level.FAILURE: apprise.NotifyType.FAILURE,
        }[message.level]
        for url, ap in targets:
            started = time.monotonic()
            try:
                ok = ap.notify(body=body, title=title, notify_type=kind)
            except Exception as exc:
                ok = False
                self._say(f"notify {self._redact(url)}: {exc}")
            if ok:
                self.sent += 1
            else:
                self.failed += 1
                self._say(
                    f"notification '{title}' to {self._redact(url)} failed "
                    f"after {time.monotonic() - started:.1f}s"
                )


def _with_timeouts(url: str) -> str:
    """Bound each send: Apprise's ``cto``/``rto`` (connect/read timeouts) unless the URL sets
    them."""
    extra = [
        f"{key}={SEND_TIMEOUT_S:g}" for key in ("cto", "rto") if f"{key}=" not in url.split("?")[-1]
    ]
    if not extra or "://" not in url:
        return url
    return url + ("&" if "?" in url else "?") + "&".join(extra)


def start(
    urls: Sequence[str], journal: Journal, redact: Callable[[str], str], where: str
) -> Notifier | None:
    """A notifier listening to ``journal`` (None when there is no URL)."""
    if not urls:
        return None
    from orchestrator import slog

    def warn(text: str) -> None:
        slog.structlog().get_logger("drx").warning(redact(text))

    notifier = Notifier(urls, journal, redact, where, warn)
    for event in journal.typed_events():  # run_started was written before the notifier existed
        notifier.on_event(event)
    journal.listeners.append(notifier.on_event)
    return notifier
