"""What the operator sees during a run: a live table on a terminal (rich), or one log line per
event (structlog, console or JSON) when not on a terminal. Both read the journal's events."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, ClassVar

import structlog

from orchestrator.model.units import format_duration
from orchestrator.plan.build import Plan
from orchestrator.record.events import Event
from orchestrator.record.journal import Journal, utc_iso
from orchestrator.run.budget import BudgetWatcher

_QUIET = {Event.POLL, Event.HOST_STARTED}
_NOT_LOGGED = {
    "event",
    "ts",
    "steps",
    "output_tail",
    "stdout",
    "host_order",
    "wall0",
    "health_names",
    "parent_start_wall",
    "unreachable",
}


_LEVEL_COLOR = {"warning": "\x1b[33m", "error": "\x1b[31;1m", "info": "\x1b[32m"}


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["timestamp"] = utc_iso()
    return event


class ConsoleLine:
    """``2026-11-26T17:45:00.123Z info    step_finished step=promote-db status=succeeded``:
    one short line per event. (structlog's ConsoleRenderer pads, sorts and styles every line;
    at thousands of steps that cost ~0.2 ms a step.)"""

    def __init__(self, color: bool):
        self.color = color

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> str:
        name = event.pop("event", "")
        level = event.pop("level", "info")
        stamp = event.pop("timestamp", "")
        fields = " ".join(f"{k}={_text(v)}" for k, v in event.items())
        tag = f"{level:<7}"
        if self.color:
            tag = f"{_LEVEL_COLOR.get(level, '')}{tag}\x1b[0m"
            name = f"\x1b[1m{name}\x1b[0m"
        return f"{stamp} {tag} {name} {fields}".rstrip()


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text) if (" " in text or not text) and isinstance(value, str) else text


def configure_logging(log_format: str, verbose: int) -> None:
    """Configure structlog once: console lines or JSON, on stderr."""
    color = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    renderer: Any = (
        structlog.processors.JSONRenderer() if log_format == "json" else ConsoleLine(color)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class LogView:
    """One log line per meaningful journal event (the non-terminal view)."""

    def __init__(
        self, plan: Plan, journal: Journal, verbose: int, budget: BudgetWatcher, json_lines: bool
    ):
        log = structlog.get_logger("drx")
        # JSON lines are for machines: every line names its run; a console line need not
        self.log = log.bind(run_id=plan.run_id) if json_lines else log
        self.json_lines = json_lines
        self.verbose = verbose
        self.budget = budget
        journal.listeners.append(self.on_event)

    def on_event(self, e: dict[str, Any]) -> None:
        kind = e["event"]
        if kind in _QUIET and self.verbose < 2:
            return
        fields = {
            k: v
            for k, v in e.items()
            if k not in _NOT_LOGGED and v is not None and (self.json_lines or k != "t")
        }
        level = "info"
        if kind == Event.HOST_FINISHED:
            if e.get("status") == "succeeded" and self.verbose < 1:
                return
            if e.get("status") != "succeeded":
                level = "warning"
                tail = (e.get("output_tail") or "").strip().splitlines()[-3:]
                if tail:
                    fields["output"] = " | ".join(tail)
        elif kind in (Event.RTO_BUDGET_AT_RISK, Event.RUN_ABORTING, Event.HEALTH_TIMEOUT):
            level = "warning"
        elif kind == Event.STEP_FINISHED and e.get("status") == "failed":
            level = "error"
        getattr(self.log, level)(kind, **fields)

    def pause(self) -> Callable[[], None]:
        return lambda: None

    def close(self) -> None:
        """Nothing to tear down: every line is already written."""


class LiveView:
    """A rich live table on the terminal: each step's status, hosts, elapsed, and the RTO clock
    against the target with the projected RTO."""

    ICON: ClassVar[dict[str, str]] = {
        "pending": "·",
        "running": "▶",
        "succeeded": "✔",
        "failed": "✘",
        "skipped": "↷",
        "cancelled": "■",
        "not_run": "–",
        "waiting": "?",
    }
    STYLE: ClassVar[dict[str, str]] = {
        "running": "cyan",
        "succeeded": "green",
        "failed": "red",
        "skipped": "dim",
        "cancelled": "yellow",
        "not_run": "dim",
        "waiting": "magenta",
    }

    def __init__(self, plan: Plan, journal: Journal, budget: BudgetWatcher):
        from rich.console import Console
        from rich.live import Live

        self.plan = plan
        self.journal = journal
        self.budget = budget
        self.console = Console(stderr=True)
        self.state: dict[str, dict[str, Any]] = {
            sid: {"status": "pending", "t0": None, "t1": None, "hosts": {}} for sid in plan.steps
        }
        self.t_start: float | None = None
        self.t_end: float | None = None
        self.phase = "steps"
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self.live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False)
        self.live.__enter__()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()
        journal.listeners.append(self.on_event)

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            self.live.update(self.render())

    def on_event(self, e: dict[str, Any]) -> None:
        kind, sid = e["event"], e.get("step")
        with self._lock:
            st = self.state.get(sid) if sid else None
            if kind == Event.STEP_STARTED and st is not None:
                st.update(status="running", t0=e["t"])
                if self.t_start is None:
                    self.t_start = e["t"]
            elif kind == Event.STEP_FINISHED and st is not None:
                st.update(status=e["status"], t1=e["t"])
            elif kind == Event.STEP_CARRIED and st is not None:
                st.update(status="succeeded", carried=True)
            elif kind == Event.HOST_FINISHED and st is not None:
                st["hosts"][e["host"]] = e.get("status")
            elif kind == Event.GATE_WAITING and st is not None:
                st["status"] = "waiting"
            elif kind == Event.HEALTH_POLLING:
                self.phase = "health"
            elif kind == Event.HEALTH_HELD:
                self.t_end = e["t"]
                self.phase = "held"
            elif kind == Event.RTO_BUDGET_AT_RISK:
                self.messages.append(
                    f"RTO at risk: projected {format_duration(e['projected_s'])} "
                    f"> target {format_duration(e['target_s'])}"
                )

    def render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        now = self.journal.now()
        table = Table(box=None, expand=False, pad_edge=False)
        table.add_column("", width=1)
        table.add_column("step")
        table.add_column("kind", style="dim")
        table.add_column("hosts")
        table.add_column("elapsed", justify="right")
        with self._lock:
            for sid, st in self.state.items():
                status = st["status"]
                ps = self.plan.steps[sid]
                hosts = ps.hosts
                done = sum(1 for v in st["hosts"].values() if v == "succeeded")
                host_text = f"{done}/{len(hosts)}" if hosts else ""
                if st["t0"] is not None:
                    elapsed = (st["t1"] if st["t1"] is not None else now) - st["t0"]
                    el = format_duration(elapsed)
                else:
                    el = "carried" if st.get("carried") else ""
                style = self.STYLE.get(status, "")
                table.add_row(
                    Text(self.ICON.get(status, "?"), style=style),
                    Text(sid, style=style),
                    ps.kind.value,
                    host_text,
                    el,
                )
            t_start, t_end, phase = self.t_start, self.t_end, self.phase
            messages = list(self.messages[-3:])
        rto = 0.0 if t_start is None else ((t_end if t_end is not None else now) - t_start)
        target = self.plan.runbook.rto_target
        line = Text(f"RTO {format_duration(rto)}")
        if target:
            line.append(f" / target {format_duration(target)}")
            proj = self.budget.projection
            if proj is not None and phase != "held":
                style = "bold red" if proj > target else "green"
                line.append(f"  projected {format_duration(proj)}", style=style)
        line.append(f"   [{phase}]", style="dim")
        from rich.console import Group

        parts: list[Any] = [
            Text(
                f"drx {self.plan.direction} → {self.plan.to_site}  ({self.plan.run_id})",
                style="bold",
            ),
            table,
            line,
        ]
        parts.extend(Text(m, style="bold red") for m in messages)
        return Group(*parts)

    def pause(self) -> Callable[[], None]:
        """Stop drawing (a gate asks a question); the returned callable resumes."""
        self.live.update(self.render(), refresh=True)
        self.live.stop()
        return self.live.start

    def close(self) -> None:
        self._stop.set()
        self.live.update(self.render())
        self.live.__exit__(None, None, None)


def attach_output(plan: Plan, journal: Journal, opts: Any, budget: BudgetWatcher) -> Any:
    """The view for this run: live on a terminal, log lines otherwise."""
    configure_logging(opts.log_format, opts.verbose)
    use_live = (
        opts.interactive
        and opts.log_format == "console"
        and sys.stderr.isatty()
        and os.environ.get("TERM") != "dumb"
    )
    if use_live:
        return LiveView(plan, journal, budget)
    return LogView(plan, journal, opts.verbose, budget, opts.log_format == "json")
