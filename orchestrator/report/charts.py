"""Geometry of the HTML report's charts: the run timeline (a Gantt chart) and the RTO trend.

Layout is computed here, in plain numbers, so the SVG templates only place what they are given and
the geometry can be tested without parsing SVG.

The timeline has a lane per step in start order and, inside a lane, a row per host; each host
attempt is a bar, so retries show as separate bars and check polls as ticks on them. Its time axis
always reaches the RTO target. When the target lies far beyond the end of the run, a linear axis
would squeeze the whole run into a sliver, so the axis is broken: the run keeps most of the width,
a visible break mark follows, and a short compressed segment carries the target line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.kinds import kind_of
from orchestrator.record.summary import RunSummary as Run
from orchestrator.record.summary import StepRecord as Step
from orchestrator.report.facts import HistoryPoint, Report, step_order
from orchestrator.report.model import attempt_outcome
from orchestrator.report.units import clock, offset, parse_when, secs
from orchestrator.vocab import StepStatus

WIDTH = 1100
PLOT_X0 = 214.0  # left of it: the step labels
PLOT_X1 = 1060.0  # right of it: room for a duration label
TOP = 58.0  # marker labels (two rows) and the tick labels sit above the lanes
BOTTOM = 26.0
LANE_PAD = 4.0
ROW_SINGLE = 16.0  # bar row height when a step has one host
ROW_MULTI = 13.0  # per-host row height otherwise
NOTE_CHAR_W = 5.9  # average advance of a character of the 10.5 px lane-note font
LABEL_CHARS = 30
AXIS_REPEAT_LANES = 30  # tick labels are repeated after this many lanes
AXIS_REPEAT_H = 16.0
# A target further than this factor beyond the run's end gets a broken axis (see module doc).
BREAK_FACTOR = 1.6
_BREAK_TAIL = 64.0  # width of the compressed segment that carries the target
_BREAK_GAP = 26.0  # width of the break mark between the two segments
_MAX_POLLS_PER_ATTEMPT = 300  # beyond this the ticks are a solid smear anyway
# The trend includes the target line when it is at most this many times the worst measured RTO.
TARGET_IN_TREND = 3.0
_TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


@dataclass(frozen=True)
class Scale:
    """Seconds from the RTO start → x; piecewise linear when the axis is broken."""

    t0: float
    t_split: float  # end of the first segment (== t_end when the axis is not broken)
    t_end: float
    broken: bool

    @property
    def x_split(self) -> float:
        return PLOT_X1 - _BREAK_TAIL - _BREAK_GAP if self.broken else PLOT_X1

    @property
    def x_resume(self) -> float:
        return PLOT_X1 - _BREAK_TAIL if self.broken else PLOT_X1

    def x(self, t: float) -> float:
        """The x of moment ``t`` (seconds from the RTO start), clamped to the plot."""
        if not self.broken or t <= self.t_split:
            span = (self.t_split - self.t0) or 1.0
            frac = (t - self.t0) / span
            return round(PLOT_X0 + max(0.0, min(frac, 1.0)) * (self.x_split - PLOT_X0), 2)
        span = (self.t_end - self.t_split) or 1.0
        frac = (t - self.t_split) / span
        return round(self.x_resume + max(0.0, min(frac, 1.0)) * (PLOT_X1 - self.x_resume), 2)


@dataclass(frozen=True)
class Bar:
    """A rectangle: one host attempt (class "bar"), or the health polling period."""

    x: float
    y: float
    w: float
    h: float
    css: str
    step: str
    host: str
    attempt: int
    title: str
    text: str  # drawn inside the bar when it fits, else ""


@dataclass(frozen=True)
class PollTick:
    """One check poll, drawn as a short vertical tick on its attempt's bar."""

    x: float
    y1: float
    y2: float
    css: str


@dataclass(frozen=True)
class Lane:
    """One step's horizontal band."""

    y: float
    h: float
    step: str
    label: str
    title: str
    css: str
    status: str
    critical: bool
    note: str  # the duration and status after the last bar, or why there is no bar
    note_x: float
    note_anchor: str = "start"
    note_inside: bool = False  # drawn inside the last bar (white) for want of room after it


@dataclass(frozen=True)
class Tick:
    """An axis tick with its label."""

    x: float
    label: str


@dataclass(frozen=True)
class Marker:
    """A vertical line across all lanes: the RTO target, health holding, the RTO end."""

    x: float
    css: str
    label: str
    label_y: float
    anchor: str  # "start" | "end"


@dataclass(frozen=True)
class Timeline:
    """Everything the SVG template draws for the run timeline."""

    width: int
    height: float
    plot_x0: float
    plot_x1: float
    plot_y0: float
    plot_y1: float
    lanes: tuple[Lane, ...]
    bars: tuple[Bar, ...]
    polls: tuple[PollTick, ...]
    health: Bar | None
    ticks: tuple[Tick, ...]
    markers: tuple[Marker, ...]
    break_x: float | None  # where the axis break mark goes, when broken
    axis_rows: tuple[float, ...]  # baselines of the tick labels repeated inside long charts
    caption: str


def _nice_step(span: float, count: int = 9) -> float:
    raw = span / count
    return next((s for s in _TICK_STEPS if s >= raw), _TICK_STEPS[-1] * math.ceil(raw / 14400))


def _tick_label(t: float, step: float) -> str:
    if step >= 60:
        return clock(t) if t else "0"
    if step < 1:
        return f"{t:.1f} s"
    return f"{t:g} s"


def _truncate(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scale(run: Run, ends: list[float], starts: list[float]) -> Scale:
    t0 = min([0.0, *starts])
    data_end = max(
        [
            *ends,
            *(x for x in (run.rto.measured_s,) if x is not None),
            *(x for x in ((run.health.held_offset_s if run.health else None),) if x is not None),
            t0 + 1.0,
        ]
    )
    target = run.rto.target_s
    if target is not None and target > 0 and target > data_end * BREAK_FACTOR:
        return Scale(t0, t0 + (data_end - t0) * 1.04, target * 1.03, True)
    end = max(data_end, target or 0.0)
    return Scale(t0, t0 + (end - t0) * 1.03, t0 + (end - t0) * 1.03, False)


def _step_bars(
    run: Run, step: Step, scale: Scale, y: float, row_h: float
) -> tuple[list[Bar], list[PollTick]]:
    """The bars (and poll ticks) of one step, a row per host from ``y``."""
    bars: list[Bar] = []
    polls: list[PollTick] = []
    critical = " critical" if step.id in run.critical else ""
    if not step.hosts:
        # Manual gates and waits run on no host: one bar for the step itself.
        if step.start_offset_s is None:
            return bars, polls
        outcome = {
            StepStatus.SUCCEEDED: "ok",
            StepStatus.FAILED: "failed",
            StepStatus.CANCELLED: "cancelled",
            StepStatus.RUNNING: "running",
        }.get(step.status, StepStatus.UNKNOWN)
        x = scale.x(step.start_offset_s)
        w = max(scale.x(step.start_offset_s + (step.duration_s or 0.0)) - x, 2.0)
        if kind_of(step.kind).gate:
            if step.approver:
                answer = f"approved by {step.approver}"
            else:
                answer = f"declined by {step.decliner}" if step.decliner else "not approved"
            wait = step.manual_wait_s if step.manual_wait_s is not None else step.duration_s
            title = (
                f"{step.id}: waited {secs(wait)} for an operator from {offset(step.start_offset_s)}; "
                f"{answer}"
            )
        else:
            title = (
                f"{step.id}: {step.kind} {secs(step.duration_s)} from {offset(step.start_offset_s)}"
            )
        bars.append(
            Bar(
                x,
                y + 1,
                w,
                row_h - 2,
                f"bar {step.kind} {outcome}{critical}",
                step.id,
                "",
                1,
                title,
                "",
            )
        )
        return bars, polls
    for row, host in enumerate(step.hosts):
        top = y + row * row_h + 1
        height = row_h - 2
        for attempt in host.attempts:
            if attempt.start_offset_s is None:
                continue
            status = attempt_outcome(host, attempt)
            x = scale.x(attempt.start_offset_s)
            w = max(scale.x(attempt.start_offset_s + (attempt.duration_s or 0.0)) - x, 2.0)
            retry = " retry" if attempt.n > 1 else ""
            detail = [
                f"{status}",
                f"{secs(attempt.duration_s)} from {offset(attempt.start_offset_s)}",
            ]
            if attempt.rc is not None:
                detail.append(f"rc {attempt.rc}")
            if attempt.error and attempt.error != status:
                detail.append(attempt.error)
            if attempt.polls:
                detail.append(f"{len(attempt.polls)} polls")
            title = (
                f"{step.id} on {host.host}: attempt {attempt.n} of {len(host.attempts)} — "
                + ", ".join(detail)
            )
            # ~5.6 px per character at the bar's font size; only label bars that can hold it.
            text = host.host if w > len(host.host) * 5.6 + 8 and height >= 11 else ""
            bars.append(
                Bar(
                    x,
                    top,
                    w,
                    height,
                    f"bar {step.kind} {status}{retry}{critical}",
                    step.id,
                    host.host,
                    attempt.n,
                    title,
                    text,
                )
            )
            for poll in attempt.polls[-_MAX_POLLS_PER_ATTEMPT:]:
                if poll.start_offset_s is None:
                    continue
                polls.append(
                    PollTick(
                        scale.x(poll.start_offset_s),
                        top - 1,
                        top + height + 1,
                        "poll ok" if poll.ok else "poll",
                    )
                )
    return bars, polls


def _place_note(note: str, bars: Sequence[Bar], scale: Scale) -> dict[str, Any]:
    """Where a lane's note goes: after its last bar if there is room before the axis break or
    the chart's edge, else inside that bar, else before the lane's first bar."""
    if not bars:
        return {"note_x": PLOT_X0 + 4, "note_anchor": "start", "note_inside": False}
    last = max(bars, key=lambda b: b.x + b.w)
    right = last.x + last.w
    need = len(note) * NOTE_CHAR_W
    limit = scale.x_split - 4 if scale.broken else WIDTH - 4
    if right + 4 + need <= limit:
        return {"note_x": right + 4, "note_anchor": "start", "note_inside": False}
    if last.w >= need + 8:
        return {"note_x": right - 4, "note_anchor": "end", "note_inside": True}
    first = min(b.x for b in bars)
    return {"note_x": first - 4, "note_anchor": "end", "note_inside": False}


def _lane_note(step: Step) -> str:
    if step.carried_from:
        return f"carried from {step.carried_from}"
    if not step.started:
        return step.status.replace("_", " ")
    note = secs(step.duration_s)
    if step.status != StepStatus.SUCCEEDED:
        note += f" · {step.error or step.status}"
    return note


def timeline(report: Report) -> Timeline:
    """Lay out the Gantt chart of ``report``'s run: the time scale, a lane per step (and one
    for health), the axis ticks, the RTO markers and the caption."""
    run = report.run
    steps = step_order(run)
    starts, ends = _time_span(steps)
    scale = _scale(run, ends, starts)
    lanes, bars, polls, axis_rows, y = _step_lanes(run, steps, scale)
    health_bar, health_lane = _health_lane(run, scale, y, max(ends, default=None))
    if health_lane is not None:
        lanes.append(health_lane)
        y += health_lane.h
    for lane, probe_bars in _probe_lanes(run, scale, y, max(ends, default=0.0)):
        lanes.append(lane)
        bars += probe_bars
        y += lane.h
    ticks, markers = _ticks_and_markers(run, scale)
    return Timeline(
        width=WIDTH,
        height=y + BOTTOM,
        plot_x0=PLOT_X0,
        plot_x1=PLOT_X1,
        plot_y0=TOP,
        plot_y1=y,
        lanes=tuple(lanes),
        bars=tuple(bars),
        polls=tuple(polls),
        health=health_bar,
        ticks=tuple(ticks),
        markers=tuple(markers),
        break_x=(scale.x_split + scale.x_resume) / 2 if scale.broken else None,
        axis_rows=tuple(axis_rows),
        caption=_caption(steps, scale),
    )


def _time_span(steps: Sequence[Step]) -> tuple[list[float], list[float]]:
    """Every start and end offset the chart must show (steps and host attempts)."""
    starts: list[float] = []
    ends: list[float] = []
    for step in steps:
        if not step.started:
            continue
        starts.append(step.start_offset_s or 0.0)
        if step.end_offset_s is not None:
            ends.append(step.end_offset_s)
        for host in step.hosts:
            for attempt in host.attempts:
                if attempt.start_offset_s is not None:
                    starts.append(attempt.start_offset_s)
                    ends.append(attempt.end_offset_s or attempt.start_offset_s)
    return starts, ends


def _step_lanes(
    run: Run, steps: Sequence[Step], scale: Scale
) -> tuple[list[Lane], list[Bar], list[PollTick], list[float], float]:
    """A lane per step, a row per host in it, a bar per attempt; (lanes, bars, poll ticks,
    the y of repeated axis rows, the y below the last lane)."""
    lanes: list[Lane] = []
    bars: list[Bar] = []
    polls: list[PollTick] = []
    y = TOP
    axis_rows: list[float] = []
    for index, step in enumerate(steps):
        if index and index % AXIS_REPEAT_LANES == 0:
            # Long charts repeat the time labels in a gap row so every lane is near an axis.
            axis_rows.append(y + AXIS_REPEAT_H - 4)
            y += AXIS_REPEAT_H
        rows = max(len(step.hosts), 1)
        row_h = ROW_SINGLE if rows == 1 else ROW_MULTI
        height = rows * row_h + 2 * LANE_PAD
        step_bars, step_polls = (
            _step_bars(run, step, scale, y + LANE_PAD, row_h) if step.started else ([], [])
        )
        bars += step_bars
        polls += step_polls
        css = f"lane {step.status}" + (" critical" if step.id in run.critical else "")
        css += " odd" if index % 2 else ""
        note = _lane_note(step)
        lanes.append(
            Lane(
                y=y,
                h=height,
                step=step.id,
                label=_truncate(step.id),
                title=f"{step.id} — {step.name} ({step.kind}, {step.status}, "
                f"{secs(step.duration_s)})",
                css=css,
                status=step.status,
                critical=step.id in run.critical,
                note=note,
                **_place_note(note, step_bars, scale),
            )
        )
        y += height
    return lanes, bars, polls, axis_rows, y


def _health_lane(
    run: Run, scale: Scale, y: float, last_end: float | None
) -> tuple[Bar | None, Lane | None]:
    """The wait for health at the new site, after the last step, as a bar in a lane of its
    own (none when health never held or no step ran)."""
    health = run.health
    if health is None or health.held_offset_s is None or last_end is None:
        return None, None
    start = min(last_end, health.held_offset_s)
    polls_text = f"{health.polls} polls" if health.polls is not None else "polls"
    x = scale.x(start)
    bar = Bar(
        x,
        y + LANE_PAD + 1,
        max(scale.x(health.held_offset_s) - x, 2.0),
        ROW_SINGLE - 2,
        "health-wait",
        "",
        "",
        0,
        f"health at {run.to_site}: {polls_text} until it held at {offset(health.held_offset_s)}",
        "",
    )
    note = f"held {offset(health.held_offset_s)} · {polls_text}"
    lane = Lane(
        y=y,
        h=ROW_SINGLE + 2 * LANE_PAD,
        step="",
        label=f"health @ {run.to_site}",
        title=f"health checks at {run.to_site} after the last step",
        css="lane health",
        status=StepStatus.SUCCEEDED,
        critical=False,
        note=note,
        **_place_note(note, [bar], scale),
    )
    return bar, lane


def _probe_lanes(run: Run, scale: Scale, y: float, last_end: float) -> list[tuple[Lane, list[Bar]]]:
    """A lane per probe, a bar per down window (a window still open at the end runs to the end
    of the chart)."""
    shift = run.rto_shift_s
    out = []
    for probe in run.probes:
        bars = []
        for start, end in probe.spans:
            t0 = start - shift
            t1 = (end - shift) if end is not None else max(last_end, t0)
            x = scale.x(t0)
            closed = f"until {offset(t1)}" if end is not None else "still down at the end"
            bars.append(
                Bar(
                    x,
                    y + LANE_PAD + 1,
                    max(scale.x(t1) - x, 2.0),
                    ROW_SINGLE - 2,
                    "probe-down" + (" breached" if probe.breached else ""),
                    f"probe:{probe.name}",
                    "",
                    0,
                    f"probe '{probe.name}' down from {offset(t0)} {closed} ({secs(t1 - t0)})",
                    "",
                )
            )
        note = f"down {secs(probe.down_s)}" + (" · breached" if probe.breached else "")
        lane = Lane(
            y=y,
            h=ROW_SINGLE + 2 * LANE_PAD,
            step=f"probe:{probe.name}",
            label=f"probe {probe.name}",
            title=f"probe '{probe.name}': {probe.polls} polls, {probe.failed_polls} failed",
            css="lane probe",
            status=StepStatus.FAILED if probe.breached else StepStatus.SUCCEEDED,
            critical=False,
            note=note,
            **_place_note(note, bars, scale),
        )
        out.append((lane, bars))
    return out


def _ticks_and_markers(run: Run, scale: Scale) -> tuple[list[Tick], list[Marker]]:
    """Time labels along the axis; the RTO target and the moment the RTO ended."""
    step_size = _nice_step(scale.t_split - scale.t0)
    ticks = []
    t = math.floor(scale.t0 / step_size) * step_size
    while t <= scale.t_split + 1e-9:
        if t >= scale.t0 - 1e-9:
            ticks.append(Tick(scale.x(t), _tick_label(round(t, 3), step_size)))
        t += step_size
    markers = []
    target = run.rto.target_s
    if target is not None:
        x = scale.x(target)
        if scale.broken:
            ticks.append(Tick(x, _tick_label(target, 60 if target >= 120 else 1)))
        markers.append(_marker(x, "rto-target", f"RTO target {secs(target)}", 30.0))
    health = run.health
    if health is not None and health.held_offset_s is not None:
        markers.append(
            _marker(
                scale.x(health.held_offset_s),
                "health-held",
                f"health held {offset(health.held_offset_s)}",
                14.0,
            )
        )
    elif run.rto.measured_s is not None:
        markers.append(
            _marker(scale.x(run.rto.measured_s), "rto-end", f"RTO {secs(run.rto.measured_s)}", 14.0)
        )
    return ticks, markers


def _caption(steps: Sequence[Step], scale: Scale) -> str:
    carried = sum(1 for s in steps if s.carried_from)
    never = sum(1 for s in steps if not s.started and not s.carried_from)
    caption = (
        "Time from the RTO start (+0 s): one lane per step in start order, one bar per host "
        "attempt."
    )
    if scale.broken:
        caption += " The axis is broken after the run's end so that the RTO target fits."
    if carried:
        caption += f" {carried} step(s) ran in an earlier run and were carried over."
    if never:
        caption += f" {never} step(s) did not start; their lanes are empty."
    return caption


def _marker(x: float, css: str, label: str, label_y: float) -> Marker:
    # Labels near the right edge are drawn leftwards so they stay inside the chart.
    anchor = "end" if x > PLOT_X1 - 170 else "start"
    return Marker(x, css, label, label_y, anchor)


@dataclass(frozen=True)
class TrendPoint:
    """One run in the RTO trend chart."""

    x: float
    y: float
    css: str
    title: str


@dataclass(frozen=True)
class Trend:
    """Everything the SVG template draws for the RTO trend over earlier runs."""

    width: int
    height: int
    x0: float
    x1: float
    y0: float
    y1: float
    points: tuple[TrendPoint, ...]
    line: str  # SVG path data through the measured points
    target: str  # SVG path data of the (possibly changing) target, as steps
    y_ticks: tuple[tuple[float, str], ...]
    x_labels: tuple[tuple[float, str], ...]
    target_note: str  # why no target line is drawn, when it is not


def _short_date(point: HistoryPoint, index: int, fmt: str = "%m-%d %H:%M") -> str:
    moment = parse_when(point.started_at)
    return moment.strftime(fmt) if moment else f"#{index + 1}"


#: width of one character of the trend's axis labels (10.5 px font) and the space between labels
LABEL_CHAR_PX = 6.6
LABEL_GAP_PX = 10.0


def _spaced_labels(
    xs: Sequence[float], labels: Sequence[str], current: Sequence[bool], left: float, right: float
) -> tuple[tuple[float, str], ...]:
    """The x labels that fit without overlapping (centred on their points): this run's label
    first, then from the oldest on, each kept only if it clears every label already kept."""
    kept: list[tuple[float, float, int]] = []  # (left edge, right edge, index)

    def fits(i: int) -> tuple[float, float] | None:
        half = len(labels[i]) * LABEL_CHAR_PX / 2
        lo, hi = xs[i] - half, xs[i] + half
        if lo < left or hi > right:
            return None
        if any(lo < k_hi + LABEL_GAP_PX and hi > k_lo - LABEL_GAP_PX for k_lo, k_hi, _ in kept):
            return None
        return lo, hi

    order = [i for i, c in enumerate(current) if c] + [i for i, c in enumerate(current) if not c]
    for i in order:
        edges = fits(i)
        if edges is not None:
            kept.append((*edges, i))
    return tuple((xs[i], labels[i]) for _, _, i in sorted(kept, key=lambda k: k[2]))


def trend(points: Sequence[HistoryPoint]) -> Trend | None:
    """Lay out the RTO trend of the measured runs of the same runbook and direction (a resumed
    run at its end-to-end RTO); None when fewer than two such runs exist."""
    points = [p for p in points if p.comparable and p.plotted_s is not None]
    if len(points) < 2:
        return None
    width, height = 720, 230
    x0, x1, y0, y1 = 62.0, width - 48.0, 16.0, height - 40.0
    measured = [p.plotted_s for p in points if p.plotted_s is not None]
    targets = [p.target_s for p in points if p.target_s is not None]
    # A target far above every measured RTO would flatten the trend into the x axis: then the
    # chart keeps the runs' own range and says that the target lies above it.
    peak = max(measured, default=0.0)
    show_targets = bool(targets) and (not peak or max(targets) <= peak * TARGET_IN_TREND)
    values = measured + (targets if show_targets else [])
    top = max(values, default=1.0) * 1.12 or 1.0
    step = _nice_step(top, 5)
    top = math.ceil(top / step) * step

    def y_of(value: float) -> float:
        return round(y1 - value / top * (y1 - y0), 2)

    gap = (x1 - x0) / (len(points) - 1)
    xs = [round(x0 + i * gap, 2) for i in range(len(points))]
    out = []
    line = []
    for i, (x, point) in enumerate(zip(xs, points, strict=True)):
        value = point.plotted_s
        assert value is not None
        y = y_of(value)
        missed = point.target_s is not None and value > point.target_s
        css = "point missed" if missed else ("point met" if point.target_s is not None else "point")
        line.append(f"{'L' if i else 'M'}{x},{y}")
        figure = secs(value) + (" end to end" if point.end_to_end_s is not None else "")
        if point.current:
            css += " current"
        target = f" (target {secs(point.target_s)})" if point.target_s is not None else ""
        out.append(TrendPoint(x, y, css, f"{point.run_id}: RTO {figure}{target}, {point.status}"))
    target_path = []
    previous: float | None = None
    for i, (x, point) in enumerate(zip(xs, points, strict=True)):
        if point.target_s is None or not show_targets:
            previous = None
            continue
        ty = y_of(point.target_s)
        left = x - gap / 2 if i else x
        right = x + gap / 2 if i < len(points) - 1 else x
        target_path.append(f"{'M' if previous is None else 'L'}{left},{ty}")
        target_path.append(f"L{right},{ty}")
        previous = ty
    y_ticks = []
    tick = 0.0
    while tick <= top + 1e-9:
        y_ticks.append((y_of(tick), _tick_label(tick, step)))
        tick += step
    labels = [_short_date(p, i) for i, p in enumerate(points)]
    if len(set(labels)) < len(labels):  # drills minutes apart
        labels = [_short_date(p, i, "%H:%M:%S") for i, p in enumerate(points)]
    x_labels = _spaced_labels(xs, labels, [p.current for p in points], x0 - 40, x1 + 40)
    return Trend(
        width=width,
        height=height,
        x0=x0,
        x1=x1,
        y0=y0,
        y1=y1,
        points=tuple(out),
        line=" ".join(line),
        target=" ".join(target_path),
        y_ticks=tuple(y_ticks),
        x_labels=x_labels,
        target_note=""
        if show_targets or not targets
        else f"The RTO target ({secs(max(targets))}) lies above the chart's range.",
    )
