"""What the operator sees during a run: a live table on a terminal (rich), or one log line per
event (structlog, console or JSON) when not on a terminal. Both read the journal's events."""

from __future__ import annotations

import heapq
import os
import select
import sys
import threading
from collections.abc import Collection, MutableMapping
from types import ModuleType
from typing import Any, ClassVar, TextIO

from orchestrator import slog
from orchestrator.model.units import format_duration
from orchestrator.plan.build import Plan
from orchestrator.record.events import (
    Event,
    HostFinished,
    JournalEvent,
    RtoBudgetAtRisk,
    StepFinished,
    to_json,
)
from orchestrator.record.fold import RunState
from orchestrator.record.journal import Journal, utc_iso
from orchestrator.run.budget import BudgetWatcher
from orchestrator.terminal import printable
from orchestrator.vocab import StepStatus

_QUIET = {Event.POLL, Event.HOST_STARTED, Event.PROBE_POLL}
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
_NOT_LOGGED_CONSOLE = _NOT_LOGGED | {"t"}  # a console line has its own timestamp


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
        fields = printable(" ".join(f"{k}={_text(v)}" for k, v in event.items()))
        name = printable(str(name))
        tag = f"{level:<7}"
        if self.color:
            tag = f"{_LEVEL_COLOR.get(level, '')}{tag}\x1b[0m"
            name = f"\x1b[1m{name}\x1b[0m"
        return f"{stamp} {tag} {name} {fields}".rstrip()


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text) if (" " in text or not text) and isinstance(value, str) else text


class LogSetup:
    """drx's structlog configuration: console lines (``ConsoleLine``) or JSON, on ``stream``.
    Applied when structlog is first imported (``orchestrator.slog``): a run whose step lines
    the log view renders itself does not import structlog at all."""

    def __init__(self, log_format: str, color: bool, stream: TextIO) -> None:
        self.stream = stream
        #: None for JSON until applied (structlog's JSONRenderer)
        self.renderer: Any = None if log_format == "json" else ConsoleLine(color)
        self.processors: list[Any] | None = None  # as handed to structlog, once applied

    def apply(self, structlog: ModuleType) -> None:
        if self.renderer is None:
            self.renderer = structlog.processors.JSONRenderer()
        self.processors = [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            self.renderer,
        ]
        structlog.configure(
            processors=self.processors,
            logger_factory=structlog.PrintLoggerFactory(file=self.stream),
            cache_logger_on_first_use=False,
        )

    def in_force(self) -> bool:
        """Whether this is still the configuration lines are written with (pending, or applied
        and not replaced since)."""
        if self.processors is None:
            return slog.pending() is self
        return slog.structlog().get_config()["processors"] is self.processors


#: what ``configure_logging`` set up last
_SETUP: LogSetup | None = None


def configure_logging(log_format: str, verbose: int) -> None:
    """Configure drx's log lines: console lines or JSON, on stderr (structlog is configured
    when first imported; JSON lines are rendered by structlog, so it is imported now)."""
    global _SETUP
    color = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    _SETUP = LogSetup(log_format, color, sys.stderr)
    slog.configure(_SETUP, now=log_format == "json")


def unconfigure_logging() -> None:
    """Forget drx's configuration (structlog's own, if applied, is the caller's to restore)."""
    global _SETUP
    _SETUP = None
    slog.configure(None)


class LogView:
    """One log line per meaningful journal event (the non-terminal view)."""

    def __init__(
        self, plan: Plan, journal: Journal, verbose: int, budget: BudgetWatcher, json_lines: bool
    ):
        # A line a step's start and end, thousands in a big run: while drx's own configuration
        # is in force, they are rendered by its renderer and written here, the same line
        # structlog would write, without its per-call dispatch (~10 of a line's ~17 µs) and
        # without importing it. JSON lines are for machines: every line names its run; a
        # console line need not.
        self._render: Any = None
        self.log: Any = None
        setup = _SETUP
        if setup is not None and setup.in_force() and setup.renderer is not None:
            self._render, self._stream = setup.renderer, setup.stream
            self._bound = {"run_id": plan.run_id} if json_lines else {}
            self._write_lock = threading.Lock()
        else:
            log = slog.structlog().get_logger("drx")
            # bound once here: the lazy logger ``get_logger`` returns re-binds on every line
            self.log = log.bind(run_id=plan.run_id) if json_lines else log.bind()
        self.json_lines = json_lines
        self.verbose = verbose
        self.budget = budget
        self.last_comment: str | None = None  # typed after the last answer (y COMMENT)
        journal.listeners.append(self.on_event)

    def on_event(self, event: JournalEvent) -> None:
        kind = event.event
        if kind in _QUIET and self.verbose < 2:
            return
        if (
            isinstance(event, HostFinished)
            and event.status == StepStatus.SUCCEEDED
            and self.verbose < 1
        ):
            return
        level = "info"
        output = ""
        if isinstance(event, HostFinished):
            if event.status != StepStatus.SUCCEEDED:
                level = "warning"
                output = " | ".join((event.output_tail or "").strip().splitlines()[-3:])
        elif kind in (
            Event.RTO_BUDGET_AT_RISK,
            Event.RUN_ABORTING,
            Event.HEALTH_TIMEOUT,
            Event.PROBE_BREACHED,
        ):
            level = "warning"
        elif isinstance(event, StepFinished) and event.status == StepStatus.FAILED:
            level = "error"
        # fields are picked once the event is known to be logged (most are not)
        skip = _NOT_LOGGED if self.json_lines else _NOT_LOGGED_CONSOLE
        fields = {k: v for k, v in to_json(event).items() if v is not None and k not in skip}
        if output:
            fields["output"] = output
        if self._render is None:
            getattr(self.log, level)(kind, **fields)
            return
        # what structlog's processors make of it: context, fields, event, level, timestamp
        line = self._render(
            None,
            level,
            {**self._bound, **fields, "event": kind, "level": level, "timestamp": utc_iso()},
        )
        with self._write_lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def ask(self, step_id: str, prompt: str) -> bool:
        answer, self.last_comment = ask_reply(f"{step_id}: {prompt}")
        return answer

    def close(self) -> None:
        """Nothing to tear down: every line is already written."""


#: what a gate accepts as an answer
YES = ("y", "yes")
NO = ("n", "no")
ANSWER_HINT = "answer y, yes, n or no"


#: shown with a gate's question
ANSWER_FORMAT = "[y/n]"  # "y COMMENT" also approves, recording the comment


def parse_answer(text: str) -> bool | None:
    """True for y/yes, False for n/no (any case, surrounding blanks ignored), else None."""
    return parse_reply(text)[0]


def parse_reply(text: str) -> tuple[bool | None, str | None]:
    """A gate's answer and the comment typed after it, for the record: ``y checked with the
    DBA`` approves with that comment (``yes: …`` and ``yes, …`` too)."""
    word, _, rest = text.strip().partition(" ")
    word = word.rstrip(":,").lower()
    comment = rest.strip().lstrip(":,").strip() or None
    if word in YES:
        return True, comment
    if word in NO:
        return False, comment
    return None, None


def ask_line(question: str) -> bool:
    """Ask on the terminal, line by line, until the answer is y, yes, n or no (end of input
    declines)."""
    return ask_reply(question)[0]


def ask_reply(question: str) -> tuple[bool, str | None]:
    """``ask_line``, also returning the comment typed after the answer."""
    while True:
        try:
            answer, comment = parse_reply(input(f"{question} {ANSWER_FORMAT}: "))
        except EOFError:
            return False, None
        if answer is not None:
            return answer, comment
        print(ANSWER_HINT, file=sys.stderr)


class LiveView:
    """A rich live table on the terminal: each step's status, hosts, elapsed, and the RTO clock
    against the target with the projected RTO.

    It keeps drawing while a gate asks (the question and what is typed are part of the view,
    read key by key), so the RTO clock never freezes at a prompt; it fits the terminal (finished
    steps are folded into counts when the table would not fit, running ones always show); and
    steps carried over from the run being resumed show as carried.
    """

    ICON: ClassVar[dict[str, str]] = {
        "pending": "·",
        StepStatus.RUNNING: "▶",
        StepStatus.SUCCEEDED: "✔",
        StepStatus.FAILED: "✘",
        StepStatus.SKIPPED: "↷",
        StepStatus.CANCELLED: "■",
        StepStatus.NOT_RUN: "–",
        "waiting": "?",
        "carried": "↺",
    }
    STYLE: ClassVar[dict[str, str]] = {
        StepStatus.RUNNING: "cyan",
        StepStatus.SUCCEEDED: "green",
        StepStatus.FAILED: "red",
        StepStatus.SKIPPED: "dim",
        StepStatus.CANCELLED: "yellow",
        StepStatus.NOT_RUN: "dim",
        "waiting": "magenta",
        "carried": "dim green",
    }
    #: rows shown first when the table must be folded (lower shows first)
    _PRIORITY: ClassVar[dict[str, int]] = {
        "waiting": 0,
        StepStatus.RUNNING: 0,
        StepStatus.FAILED: 1,
        StepStatus.CANCELLED: 2,
        "pending": 3,
    }

    def __init__(
        self,
        plan: Plan,
        journal: Journal,
        budget: BudgetWatcher,
        *,
        carried: Collection[str] = (),
        console: Any = None,
    ):
        from rich.console import Console
        from rich.live import Live

        self.plan = plan
        self.journal = journal
        self.budget = budget
        self.console = console or Console(stderr=True)
        self.state: dict[str, dict[str, Any]] = {
            sid: {
                "status": "carried" if sid in carried else "pending",
                "t0": None,
                "t1": None,
                "hosts": {},
                "seq": -1,
            }
            for sid in plan.steps
        }
        self._seq = 0
        self.run = RunState()  # the journal so far; rows are drawn from it
        self.t_start: float | None = None
        self.t_end: float | None = None
        self.phase = "steps"
        self.messages: list[str] = []
        self.question: dict[str, str] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tty: tuple[int, list[Any]] | None = None
        self.live = Live(
            self.render(),
            console=self.console,
            auto_refresh=False,
            transient=False,
        )
        self.live.__enter__()
        self.last_comment: str | None = None  # typed after the last answer (y COMMENT)
        self._withdrawn: set[str] = set()  # gates answered elsewhere
        self._thread = threading.Thread(target=self._tick, name="live-view", daemon=True)
        self._thread.start()
        journal.listeners.append(self.on_event)

    def _tick(self) -> None:
        # One thread draws, four times a second, whatever else is happening (a gate asking).
        while not self._stop.wait(0.25):
            self.live.update(self.render(), refresh=True)

    def on_event(self, e: JournalEvent) -> None:
        with self._lock:
            step = self.run.apply(e)
            row = self.state.get(step.id) if step is not None else None
            if step is not None and row is not None:
                if isinstance(e, StepFinished):
                    self._seq += 1
                    row["seq"] = self._seq
                if isinstance(e, HostFinished):
                    row["hosts"][e.host] = e.status
                status = "carried" if step.carried_from is not None else step.status
                row.update(status=status, t0=step.t0, t1=step.t1)
            if self.t_start is None:
                self.t_start = self.run.first_step_t
            if self.run.phase == "held":
                self.t_end, self.phase = self.run.held_t, "held"
            elif self.run.phase == "health":
                self.phase = "health"
            if isinstance(e, RtoBudgetAtRisk):
                self.messages.append(
                    f"RTO at risk: projected {format_duration(e.projected_s)} "
                    f"> target {format_duration(e.target_s)}"
                )

    # -- drawing ---------------------------------------------------------------------------------
    def _visible(self, budget: int) -> tuple[list[str], dict[str, int]]:
        """The steps to show in ``budget`` rows (plan order) and counts of the folded ones."""
        ids = list(self.state)
        if len(ids) <= budget:
            return ids, {}
        state, priority = self.state, self._PRIORITY
        # running and waiting first, then failed, pending in plan order, then the most
        # recently finished (the few rows a screen holds: no full sort of every step)
        ranked = heapq.nsmallest(
            max(budget, 0),
            enumerate(ids),
            key=lambda item: (
                priority.get(state[item[1]]["status"], 4),
                -state[item[1]]["seq"],
                item[0],
            ),
        )
        shown = {sid for _, sid in ranked}
        folded: dict[str, int] = {}
        for sid in ids:
            if sid not in shown:
                status = self.state[sid]["status"]
                folded[status] = folded.get(status, 0) + 1
        return [sid for sid in ids if sid in shown], folded

    def _counts(self) -> str:
        counts: dict[str, int] = {}
        for st in self.state.values():
            counts[st["status"]] = counts.get(st["status"], 0) + 1
        done = sum(counts.get(k, 0) for k in (StepStatus.SUCCEEDED, "carried", StepStatus.SKIPPED))
        parts = [f"{done}/{len(self.state)} done"]
        for status in (
            StepStatus.RUNNING,
            "waiting",
            StepStatus.FAILED,
            StepStatus.CANCELLED,
            "pending",
            "carried",
        ):
            if counts.get(status):
                parts.append(f"{counts[status]} {status}")
        return " · ".join(parts)

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now = self.journal.now()
        height = self.console.size.height
        with self._lock:
            messages = list(self.messages[-2:])
            question = dict(self.question) if self.question else None
            # header, table heading, RTO line, messages, question, fold line, and the line the
            # cursor rests on: whatever is left is for step rows
            asking = 0
            if question:  # a long question wraps: it takes the rows it needs
                text = f"? {question['step']}: {question['prompt']} {ANSWER_FORMAT} "
                width = max(self.console.size.width, 20)
                asking = -(-(len(text) + len(question["typed"]) + 30) // width)
            fixed = 4 + len(messages) + asking + 1
            visible, folded = self._visible(height - fixed)
            if folded:
                visible, folded = self._visible(height - fixed - 1)
            table = Table(box=None, expand=False, pad_edge=False)
            table.add_column("", width=1)
            table.add_column("step", overflow="ellipsis", no_wrap=True, max_width=40)
            table.add_column("kind", style="dim")
            table.add_column("hosts")
            table.add_column("elapsed", justify="right")
            for sid in visible:
                st = self.state[sid]
                status = st["status"]
                ps = self.plan.steps[sid]
                hosts = ps.hosts
                done = sum(1 for v in st["hosts"].values() if v == StepStatus.SUCCEEDED)
                host_text = f"{done}/{len(hosts)}" if hosts else ""
                if st["t0"] is not None:
                    elapsed = (st["t1"] if st["t1"] is not None else now) - st["t0"]
                    el = format_duration(elapsed)
                else:
                    el = "carried" if status == "carried" else ""
                style = self.STYLE.get(status, "")
                table.add_row(
                    Text(self.ICON.get(status, "?"), style=style),
                    Text(sid, style=style),
                    str(ps.kind),
                    host_text,
                    el,
                )
            counts = self._counts()
            t_start, t_end, phase = self.t_start, self.t_end, self.phase
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
        parts: list[Any] = [
            Text(
                f"drx {self.plan.direction} → {self.plan.to_site}  {counts}  ({self.plan.run_id})",
                style="bold",
                overflow="ellipsis",
                no_wrap=True,
            ),
            table,
        ]
        if folded:
            text = ", ".join(f"{n} {status}" for status, n in folded.items())
            parts.append(Text(f"  … {text} not shown", style="dim"))
        parts.append(line)
        parts.extend(Text(m, style="bold red", overflow="ellipsis", no_wrap=True) for m in messages)
        if question:
            ask = Text(
                f"? {question['step']}: {question['prompt']} {ANSWER_FORMAT} ", style="bold magenta"
            )
            ask.append(question["typed"], style="bold")
            if question.get("hint"):
                ask.append(f"  ({question['hint']})", style="yellow")
            parts.append(ask)
        return Group(*parts)

    # -- gates -----------------------------------------------------------------------------------
    def ask(self, step_id: str, prompt: str) -> bool:
        """Ask a gate's question inside the view, reading the terminal key by key (no echo),
        while the view keeps drawing. y/yes approves, n/no declines; end of input declines."""
        import termios
        import tty

        fd = sys.stdin.fileno()
        self._withdrawn.discard(step_id)
        saved = termios.tcgetattr(fd)
        with self._lock:
            self.question = {"step": step_id, "prompt": prompt, "typed": "", "hint": ""}
            self._tty = (fd, saved)
        tty.setcbreak(fd)  # keys one at a time, no echo; Ctrl-C still interrupts
        try:
            while not self._stop.is_set() and step_id not in self._withdrawn:
                if not select.select([fd], [], [], 0.1)[0]:
                    continue
                key = os.read(fd, 1).decode(errors="ignore")
                answer = self._key(key)
                if answer is not None:
                    return answer
            return False
        finally:
            self._restore_tty()
            with self._lock:
                self.question = None
            self.live.update(self.render(), refresh=True)

    def withdraw(self, step_id: str) -> None:
        """The gate was answered elsewhere (drx approve/deny, the web page): stop asking."""
        self._withdrawn.add(step_id)

    def _key(self, key: str) -> bool | None:
        """Take one key of the answer; the answer once Enter is pressed on a valid one."""
        with self._lock:
            q = self.question
            assert q is not None
            if key in ("\r", "\n"):
                answer, self.last_comment = parse_reply(q["typed"])
                if answer is None:
                    q.update(typed="", hint=ANSWER_HINT)
                return answer
            if key == "\x04" and not q["typed"]:  # Ctrl-D: end of input declines
                return False
            if key in ("\x7f", "\x08"):
                q["typed"] = q["typed"][:-1]
            elif key.isprintable():
                q.update(typed=(q["typed"] + key)[-500:], hint="")  # room for a comment
            return None

    def _restore_tty(self) -> None:
        import termios

        with self._lock:
            saved, self._tty = self._tty, None
        if saved is not None:
            termios.tcsetattr(saved[0], termios.TCSADRAIN, saved[1])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._restore_tty()
        self.live.update(self.render(), refresh=True)
        self.live.__exit__(None, None, None)


def attach_output(plan: Plan, journal: Journal, opts: Any, budget: BudgetWatcher) -> Any:
    """The view for this run: live on a terminal, log lines otherwise (through the logging the
    command line configured: orchestrator.cli.edge)."""
    use_live = (
        opts.interactive
        and opts.log_format == "console"
        and sys.stderr.isatty()
        and os.environ.get("TERM") != "dumb"
    )
    if use_live:
        return LiveView(plan, journal, budget, carried=set(opts.carried))
    return LogView(plan, journal, opts.verbose, budget, opts.log_format == "json")
