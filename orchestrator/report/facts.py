"""What a post-drill report says, independent of how it is formatted.

Every renderer (text, Markdown, HTML) shows the same findings in the same words: the outcome, the
RTO and RPO against their targets, the time spent at manual gates, the measured critical path, the
failures with their output, and — on request — a comparison with another run and the RTO history.
Computing them once here keeps the formats from drifting apart and keeps the templates free of
arithmetic.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.errors import ExitCode
from orchestrator.kinds import kind_of
from orchestrator.record.summary import HostRecord as HostResult
from orchestrator.record.summary import ProbeRecord as ProbeFigures
from orchestrator.record.summary import RpoRecord as Rpo
from orchestrator.record.summary import RunSummary as Run
from orchestrator.record.summary import StepRecord as Step
from orchestrator.report.children import ChildFacts, child_facts, site_health
from orchestrator.report.units import (
    delta,
    nbytes,
    nbytes_exact,
    offset,
    parse_when,
    pct,
    secs,
    span,
    tail,
    when,
)
from orchestrator.vocab import Direction, RunStatus, StepStatus

# Lines of output shown per failed host; the full output stays in the run's log files.
TAIL_LINES = 20
#: lines of each host's output shown under "Commands and output"
OUTPUT_TAIL_LINES = 10
#: host entries shown under "Commands and output" (beyond: counted, and in the logs)
OUTPUT_HOSTS = 500

# Below this, a duration difference is noise from scheduling and clocks, not a change.
_NOISE_S = 0.05


# Step statuses in the order a reader scans for trouble.
STATUS_ORDER = (
    StepStatus.FAILED,
    StepStatus.UNKNOWN,
    StepStatus.CANCELLED,
    StepStatus.NOT_RUN,
    StepStatus.SKIPPED,
    StepStatus.SUCCEEDED,
)


@dataclass(frozen=True)
class Verdict:
    """A measured figure against its target, as one sentence.

    ``state`` is "met", "missed", "unmeasured" (no figure; the target was not shown to hold) or
    "no-target" (a figure, but nothing to compare it with).
    """

    state: str
    text: str
    margin: float | None = None  # target - measured; negative when missed


@dataclass(frozen=True)
class Outcome:
    """The run's result in one or two sentences; ``state`` picks the colour."""

    state: str  # succeeded | warning | failed | cancelled | crashed | unknown
    text: str


@dataclass(frozen=True)
class RtoFacts:
    """The RTO of this run and, for a resumed run, the end-to-end RTO the service experienced."""

    label: str
    verdict: Verdict
    basis: str
    end_to_end: Verdict | None
    end_to_end_basis: str | None
    prediction: str | None


@dataclass(frozen=True)
class RpoFacts:
    """The RPO against its target, with where it was captured."""

    verdict: Verdict
    basis: str
    unit: str
    #: the RPO guard in one sentence (None when the runbook sets no rpo_guard), and its state:
    #: held · refused · accepted
    guard: str | None = None
    guard_state: str | None = None


@dataclass(frozen=True)
class Gate:
    """One manual step: how long the operator took and who approved it."""

    step_id: str
    prompt: str
    wait_s: float | None
    approved_by: str | None
    status: str
    critical: bool
    declined_by: str | None = None

    @property
    def approval(self) -> str:
        """Who let the run past this gate, or why nobody did."""
        if self.approved_by:
            return f"approved by {self.approved_by}"
        if self.declined_by:
            return f"declined by {self.declined_by}"
        words: dict[str, str] = {
            StepStatus.NOT_RUN: "not reached",
            StepStatus.SKIPPED: "skipped",
            StepStatus.FAILED: "not approved",
            StepStatus.CANCELLED: "cancelled while waiting",
            StepStatus.UNKNOWN: "outcome unknown",
            StepStatus.RUNNING: "waiting for an answer",
        }
        return words.get(self.status, "approval not recorded")


@dataclass(frozen=True)
class ManualFacts:
    """Time at manual gates against automated time."""

    gates: tuple[Gate, ...]
    total_s: float | None
    on_path_s: float | None
    automated_s: float | None
    share: float | None  # % of the RTO spent waiting at gates on the critical path
    text: str


@dataclass(frozen=True)
class PathRow:
    """One row of the measured critical path: a step, the wait for health, or unattributed time."""

    label: str
    step_id: str | None
    kind: str  # a step kind, or "health" / "gap"
    status: str
    duration_s: float | None
    share: float | None
    offset_s: float | None
    note: str


@dataclass(frozen=True)
class CriticalPath:
    """The chain of steps that determined when the run ended, with each link's share of the RTO."""

    rows: tuple[PathRow, ...]
    basis_s: float | None
    basis_text: str  # what the shares are of, as a sentence
    text: str


@dataclass(frozen=True)
class FailedHost:
    """A host on which a step ended badly, with the tail of its output."""

    host: str
    rc: int | None
    error: str | None
    attempts: int
    tail: str
    tail_lines: int  # lines in the recorded tail (the shown part is at most TAIL_LINES)
    log_path: str
    log_command: str = ""  # the command that prints the full output, wherever the state is
    log_note: str = ""  # the log was cut at output_limit: how much was not kept


@dataclass(frozen=True)
class HostOutput:
    """What one host ran for a step (the command as rendered, secrets masked) and the tail of
    what it printed: the evidence behind the step's status."""

    host: str
    status: str
    rc: int | None
    command: str | None
    tail: str
    tail_lines: int
    log_path: str
    log_command: str = ""
    log_note: str = ""  # the log was cut at output_limit: how much was not kept


@dataclass(frozen=True)
class StepOutput:
    """A step that ran commands, with every host's command and output."""

    step_id: str
    name: str
    status: str
    hosts: tuple[HostOutput, ...]


@dataclass(frozen=True)
class Failure:
    """A step that failed or whose outcome is unknown."""

    step_id: str
    name: str
    kind: str
    status: str
    phrase: str
    error: str | None
    hosts: tuple[FailedHost, ...]


@dataclass(frozen=True)
class StepRow:
    """One line of the per-step table, pre-formatted."""

    step: Step
    status: str
    hosts: str
    attempts: str
    duration: str
    offset: str
    note: str
    critical: bool


@dataclass(frozen=True)
class StepDelta:
    """A step's duration in this run against the compared run."""

    step_id: str
    this_s: float | None
    other_s: float | None
    delta_s: float | None
    this_status: str | None
    other_status: str | None

    @property
    def note(self) -> str:
        if self.this_status is None:
            return f"only in the other run ({self.other_status})"
        if self.other_status is None:
            return f"new in this run ({self.this_status})"
        if self.this_status != self.other_status:
            return f"{self.other_status} → {self.this_status}"
        return ""


@dataclass(frozen=True)
class Comparison:
    """This run against another run of the same runbook."""

    other_run_id: str
    other_started_at: str | None
    other_status: str
    rto_this: float | None
    rto_other: float | None
    rto_delta: float | None
    rto_text: str
    rows: tuple[StepDelta, ...]
    largest_text: str
    path_this: tuple[str, ...]
    path_other: tuple[str, ...]
    path_changed: bool
    path_text: str


@dataclass(frozen=True)
class HistoryPoint:
    """One run in the RTO trend."""

    run_id: str
    started_at: str | None
    status: str
    measured_s: float | None
    target_s: float | None
    met: bool | None
    current: bool
    #: a resumed run's RTO from its original run's start (what the trend plots for it)
    end_to_end_s: float | None = None
    #: the same runbook and direction as the reported run (the trend plots only those)
    comparable: bool = True

    @property
    def plotted_s(self) -> float | None:
        """The RTO the trend plots: end to end for a resumed run, else the measured one."""
        return self.end_to_end_s if self.end_to_end_s is not None else self.measured_s


@dataclass(frozen=True)
class ProbeFact:
    """One probe's observed downtime, shown beside the measured RTO."""

    name: str
    state: str  # "met" (no breach), "missed" (breached)
    text: str
    basis: str


@dataclass(frozen=True)
class Report:
    """Everything a renderer shows, computed once."""

    run: Run
    title: str
    route: str
    exit_meaning: str | None
    outcome: Outcome
    notes: tuple[str, ...]
    rto: RtoFacts
    rpo: RpoFacts | None
    #: why no RPO is reported, when ``rpo`` is None
    rpo_absent: str
    manual: ManualFacts
    path: CriticalPath
    failures: tuple[Failure, ...]
    steps: tuple[StepRow, ...]
    #: each step's rendered commands and output tails, per host (at most OUTPUT_HOSTS entries)
    outputs: tuple[StepOutput, ...]
    #: host entries left out of ``outputs`` (they are in the logs and the evidence bundle)
    outputs_omitted: int
    step_counts: str
    health: str
    comparison: Comparison | None
    history: tuple[HistoryPoint, ...]
    history_text: str | None
    probes: tuple[ProbeFact, ...] = ()
    #: a site plan's children, each judged against its own targets
    children: tuple[ChildFacts, ...] = ()


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 step', '3 steps'."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def target_verdict(
    measured: float | None,
    target: float | None,
    *,
    unmeasured: str,
    show: Callable[[float | None], str] = secs,
    show_measured: Callable[[float | None], str] | None = None,
) -> Verdict:
    """Compare a figure with its target in words: '61.2 s of 900 s target — met with … to spare'.

    The verdict is recomputed from the two numbers rather than taken from the summary's ``met``, so
    the sentence can never contradict the figures it quotes.
    """
    show_measured = show_measured or show
    if measured is None:
        if target is None:
            return Verdict("unmeasured", f"not measured — {unmeasured}")
        return Verdict(
            "unmeasured", f"not measured — {unmeasured}; the {show(target)} target was not met"
        )
    if target is None:
        return Verdict("no-target", f"{show_measured(measured)} (no target set)")
    margin = target - measured
    if measured <= target:
        return Verdict(
            "met",
            f"{show_measured(measured)} of {show(target)} target — met with {show(margin)} to spare",
            margin,
        )
    return Verdict(
        "missed",
        f"{show_measured(measured)} of {show(target)} target — missed by {show(-margin)}",
        margin,
    )


def route(run: Run) -> str:
    """'site-a → site-b': where the service moved from and to in this run."""
    return f"{run.from_site or '?'} → {run.to_site or '?'}"


def _host_detail(host: HostResult, verb: str) -> str:
    reasons = []
    if host.error and not (verb == "timed out" and host.error == "timeout"):
        reasons.append(host.error)
    if host.rc not in (None, 0):
        reasons.append(f"rc {host.rc}")
    return host.host + (f" ({', '.join(reasons)})" if reasons else "")


def cause(step: Step) -> str:
    """What went wrong with a step, in a phrase: 'promote-db timed out on db-b'."""
    bad = [h for h in step.hosts if h.failed]
    if step.status == StepStatus.UNKNOWN or step.outcome_unknown:
        verb = "has an unknown outcome (it was running when the run stopped)"
        bad = [
            h
            for h in step.hosts
            if h.status in (None, StepStatus.UNKNOWN, StepStatus.CANCELLED, StepStatus.FAILED)
        ]
    elif step.error == "timeout" or (bad and all(h.error == "timeout" for h in bad)):
        verb = "timed out"
    else:
        verb = "failed"
    text = f"{step.id} {verb}"
    if bad:
        text += " on " + ", ".join(_host_detail(h, verb) for h in bad)
    if step.error and step.error not in {h.error for h in bad} and verb != "timed out":
        text += f" ({step.error})"
    return text


def _outcome(run: Run, rto: RtoFacts) -> Outcome:
    direction = run.direction.capitalize()
    moved = f"{direction} {route(run)}"
    broken = [s for s in run.steps if s.broke]
    never = [
        s
        for s in run.steps
        if s.status in (StepStatus.NOT_RUN, StepStatus.CANCELLED) and not s.outcome_unknown
    ]
    if run.is_running:
        return Outcome(RunStatus.RUNNING, f"{moved} is still running: {_so_far(run)}")
    if run.status == RunStatus.SUCCEEDED:
        health = run.health
        if health is not None and (health.held_at or health.held_offset_s is not None):
            reached = f"health held at {run.to_site}"
        else:
            reached = "every step finished"
        text = f"{moved} succeeded: {reached}"
        verdict = rto.verdict
        if rto.end_to_end is not None and run.rto.end_to_end_s is not None:
            # a resumed run: the outage the service had runs from the original run's start
            verdict = rto.end_to_end
            text += (
                f" {secs(run.rto.end_to_end_s)} after the start of the original run "
                f"{run.parent_run} (the RTO end to end)"
            )
        elif run.rto.measured_s is not None:
            text += f" {secs(run.rto.measured_s)} after the RTO start"
        state: str = RunStatus.SUCCEEDED
        if verdict.state == "met":
            text += f", within the {secs(run.rto.target_s)} RTO target."
        elif verdict.state == "missed":
            text += f", but the RTO target was missed by {secs(-(verdict.margin or 0.0))}."
            state = "warning"
        else:
            text += "."
        if verdict is not rto.verdict and run.rto.measured_s is not None:
            text += f" This resumed run's own part took {secs(run.rto.measured_s)}."
        if broken:
            text += (
                f" {plural(len(broken), 'step')} failed without stopping the run: "
                + "; ".join(cause(s) for s in broken)
                + "."
            )
            state = "warning"
        return Outcome(state, text)
    if run.status == RunStatus.FAILED:
        reasons = [cause(s) for s in broken]
        if not reasons and run.health is not None and run.health.timed_out:
            polls = run.health.polls
            suffix = f" (gave up after {plural(polls, 'poll')})" if polls is not None else ""
            reasons.append(f"health never held at {run.to_site}{suffix}")
        text = (
            f"{moved} failed: " + ("; ".join(reasons) if reasons else "see the steps below") + "."
        )
        if never:
            text += f" {plural(len(never), 'step')} did not run."
        if run.rto.measured_s is None:
            text += f" The service was not shown to be restored at {run.to_site}."
        return Outcome(RunStatus.FAILED, text)
    if run.status == RunStatus.CANCELLED:
        text = f"{moved} was cancelled by the operator."
        unknown = [s for s in run.steps if s.outcome_unknown or s.status == StepStatus.UNKNOWN]
        if never:
            text += f" {plural(len(never), 'step')} never started."
        if unknown:
            text += " Outcome unknown (interrupted mid-command): " + ", ".join(
                s.id for s in unknown
            )
            text += "."
        return Outcome(RunStatus.CANCELLED, text)
    if run.status == RunStatus.CRASHED:
        unknown = [s for s in run.steps if s.status == StepStatus.UNKNOWN or s.outcome_unknown]
        text = (
            f"{moved} did not finish: the controller stopped mid-run and this report was "
            "reconstructed from the journal."
        )
        if unknown:
            text += " Outcome unknown: " + ", ".join(s.id for s in unknown) + "."
        text += f" Continue it with `drx resume {run.run_id}` or undo it with `drx failback`."
        return Outcome(RunStatus.CRASHED, text)
    return Outcome("unknown", f"{moved}: status {run.status!r}.")


def _so_far(run: Run) -> str:
    """A running run in a sentence: its steps so far, elapsed time and projected RTO."""
    done = [s for s in run.steps if s.status not in (StepStatus.NOT_RUN, StepStatus.RUNNING)]
    now = [s.id for s in run.steps if s.status == StepStatus.RUNNING]
    text = f"{len(done)} of {plural(len(run.steps), 'step')} finished"
    text += f", {', '.join(now)} running" if now else ""
    progress = run.progress
    if progress is not None and progress.elapsed_s is not None:
        text += f"; {secs(progress.elapsed_s)} since it started"
    if progress is not None and progress.as_of:
        text += f" (as of {when(progress.as_of)})"
    return text + ". " + _projection(run) + " Nothing is judged until it ends."


def _projection(run: Run) -> str:
    progress = run.progress
    if progress is None or progress.rto_elapsed_s is None:
        return "The RTO clock has not started yet."
    text = f"The RTO clock has run {secs(progress.rto_elapsed_s)}"
    if progress.projected_rto_s is not None:
        text += f"; projected RTO {secs(progress.projected_rto_s)}"
    else:
        text += "; no projected RTO (the plan had no prediction)"
    if run.rto.target_s is not None:
        text += f"; the target is {secs(run.rto.target_s)}"
    return text + "."


def _yes_note(run: Run) -> str:
    """What --yes did in this run: the gates it approved, said of those it reached only."""
    gates = [s for s in run.steps if kind_of(s.kind).gate]
    approved = [
        s
        for s in gates
        if s.approved_via == "--yes"
        or (s.approved_via is None and s.status == StepStatus.SUCCEEDED and not s.carried_from)
    ]
    if len(approved) == len(gates):
        return "Every manual gate was approved in advance with --yes."
    rest = [s for s in gates if s not in approved]
    left = ", ".join(
        f"{s.id} ({_status_words(s.status)}{' yet' if s.status == 'not_run' and run.is_running else ''})"
        for s in rest
    )
    if not approved:
        return f"--yes was given, but it approved no manual gate: {left}."
    return (
        f"--yes approved {plural(len(approved), 'manual gate')} in advance "
        f"({', '.join(s.id for s in approved)}); not by it: {left}."
    )


def _status_words(status: str) -> str:
    words: dict[str, str] = {
        StepStatus.NOT_RUN: "not reached",
        StepStatus.SUCCEEDED: "approved before this run",
        StepStatus.CANCELLED: "cancelled while waiting",
        StepStatus.RUNNING: "waiting for an answer",
    }
    return words.get(status, status.replace("_", " "))


def _notes(run: Run) -> tuple[str, ...]:
    notes = []
    if run.is_mirror and run.reversed_run:
        notes.append(
            f"This failback (mode mirror) reverses failover run {run.reversed_run} "
            f"({run.target} → {run.source}) by running the runbook's steps the other way, "
            f"from {run.source} to {run.target}."
        )
        phase = run.reprotect
        if phase is not None and phase.carried_from:
            notes.append(
                f"Its reprotect phase was carried from run {phase.carried_from} "
                "(drx reprotect), not run again."
            )
        elif phase is not None and phase.duration_s is not None:
            notes.append(
                f"Its reprotect phase took {span(phase.duration_s)} before the RTO "
                "started (not part of it)."
            )
    elif run.is_failback and run.reversed_run:
        notes.append(
            f"This failback reverses failover run {run.reversed_run} "
            f"({run.source} → {run.target}), undoing its steps in reverse dependency order."
        )
    if run.is_resumed:
        carried = [s for s in run.steps if s.carried_from]
        notes.append(
            f"This run continues run {run.resumes or run.parent_run}; "
            f"{plural(len(carried), 'step')} that had succeeded there "
            f"{'was' if len(carried) == 1 else 'were'} carried over, not re-run."
        )
    if run.drill_id is not None:
        leg = "failover leg" if run.drill_id == run.run_id else "way home"
        notes.append(
            f"Part of drill {run.drill_id} (the {leg}): templates saw mode 'drill', and steps "
            "with 'only: real' were skipped."
        )
    if run.rollback:
        notes.append(
            "A rollback: the failover it reverses did not succeed (it failed, was cancelled or a "
            "probe breached), and what it did was undone at once."
        )
    spooled = [f"{h.host} ({s.id})" for s in run.steps for h in s.hosts if h.reattached]
    if spooled:
        notes.append(
            "Outcomes read from the hosts' spools (the command outlived the controller that "
            f"started it; not re-run): {', '.join(spooled)}."
        )
    if run.emergency:
        notes.append(
            "Emergency mode: the source health check was skipped, and failures of steps confined "
            "to the source site were recorded without stopping the run."
        )
    if run.yes and any(kind_of(s.kind).gate for s in run.steps):
        notes.append(_yes_note(run))
    # answers from another terminal or the web page (docs/reference.md, "Control from another
    # terminal"): who did what, and what they said
    for s in run.steps:
        if s.status == StepStatus.DONE_BY_HAND and s.message:
            notes.append(f"Step {s.id} was {s.message} (it did not run).")
        elif kind_of(s.kind).gate and s.message and s.message.startswith("declined by"):
            notes.append(f"Gate {s.id} was {s.message}.")
    if run.status == RunStatus.CANCELLED and run.message and " via " in run.message:
        notes.append(f"The run was {run.message}.")
    return tuple(notes)


def rto_facts(run: Run) -> RtoFacts:
    """The RTO verdict(s) of a run, with how they were measured."""
    rto = run.rto
    if run.health is not None:
        health_word = f"health holding at {run.to_site}"
    elif rto.measured_s is not None or run.status == RunStatus.SUCCEEDED:
        health_word = "the end of the last step"
    else:
        # The summary does not say whether the runbook has a health check: stay generic.
        health_word = f"the service being restored at {run.to_site}"
    if run.status in (RunStatus.CANCELLED, RunStatus.CRASHED):
        reason = f"the run was {run.status} before the service was restored"
    elif run.health is not None and run.health.timed_out:
        reason = f"health never held at {run.to_site}"
    elif run.status == RunStatus.FAILED:
        reason = f"the run failed before the service was restored at {run.to_site}"
    else:
        reason = f"the run ended before {health_word}"
    verdict = target_verdict(rto.measured_s, rto.target_s, unmeasured=reason)
    if run.is_running:  # never judged while it runs
        verdict = Verdict(
            RunStatus.RUNNING, "not measured yet: the run is still running. " + _projection(run)
        )
    start = rto.start_step or next(iter(run.critical_path), None)
    since = f"the start of {start}" if start else "the first step"
    label, basis = "RTO", f"measured from {since} to {health_word}"
    if rto.measured_s is None:  # how it would have been measured: nothing was
        basis = ("will be " if run.is_running else "would be ") + basis
    end_to_end = end_to_end_basis = None
    if run.is_resumed:
        label = "RTO of this run"
        basis = f"measured from this run's own first step to {health_word}"
        if rto.measured_s is not None and rto.end_to_end_s is not None:
            # the target judges the outage end to end, not the part after the resume
            verdict = Verdict(
                "no-target",
                f"{secs(rto.measured_s)}: the part after the resume (the target is judged "
                "end to end)",
            )
        end_to_end = target_verdict(
            rto.end_to_end_s,
            rto.target_s,
            unmeasured=f"the original run's start is not recorded ({reason})"
            if rto.measured_s is not None
            else reason,
        )
        end_to_end_basis = (
            f"measured from the start of the original run (continued from {run.parent_run}) "
            f"to {health_word}: the outage the service actually had"
        )
    prediction = None
    if rto.predicted_s == 0:
        # a plan whose steps have neither history nor `expect` predicts 0 s: it had no figure
        prediction = "The plan had no prediction (no step had history or an expect)."
    elif rto.predicted_s is not None and rto.measured_s is not None:
        diff = rto.measured_s - rto.predicted_s
        if abs(diff) < _NOISE_S:
            prediction = f"The plan predicted {secs(rto.predicted_s)}; the run took as long."
        else:
            word = "more" if diff > 0 else "less"
            prediction = f"The plan predicted {secs(rto.predicted_s)}; the run took {secs(abs(diff))} {word}."
    elif rto.predicted_s is not None:
        prediction = f"The plan predicted {secs(rto.predicted_s)}."
    return RtoFacts(label, verdict, basis, end_to_end, end_to_end_basis, prediction)


def rpo_facts(run: Run) -> RpoFacts | None:
    """The RPO verdict of a run; None when the run measures no RPO (no ``rpo_step``, or a
    failback: only a failover measures what data was lost)."""
    rpo = run.rpo
    if rpo is None or (rpo.step is None and rpo.measured is None):
        return None
    where = f"captured by {rpo.step}" if rpo.step else "captured by the runbook's rpo_step"
    missing = f"{rpo.step or 'the rpo_step'} captured no value"
    guard, state = _guard_sentence(rpo)
    if rpo.unit == "bytes":
        verdict = target_verdict(
            rpo.measured,
            rpo.target,
            unmeasured=missing,
            show=nbytes,
            show_measured=nbytes_exact,
        )
        return RpoFacts(
            verdict, f"data not yet replicated, in bytes, {where}", "bytes", guard, state
        )
    verdict = target_verdict(rpo.measured, rpo.target, unmeasured=missing)
    return RpoFacts(verdict, f"data-loss window in seconds, {where}", "s", guard, state)


def _guard_sentence(rpo: Rpo) -> tuple[str | None, str | None]:
    """The RPO guard's outcome in words: who let what through, or what it held back."""
    guard = rpo.guard
    if guard is None:
        return None, None
    show = nbytes_exact if rpo.unit == "bytes" else secs
    target = show(rpo.target) if rpo.target is not None else "the target"
    if not guard.tripped:
        return f"RPO guard on: the measured RPO was within {target}; nothing held back.", "held"
    if guard.accepted:
        loss = show(guard.accepted_loss) if guard.accepted_loss is not None else "an unmeasured"
        return (
            f"RPO guard tripped, and the operator accepted the data loss (--accept-data-loss): "
            f"{loss} against a target of {target}.",
            "accepted",
        )
    blocked = ", ".join(guard.blocked) if guard.blocked else "no step"
    return (
        f"RPO guard tripped: the measured RPO exceeds {target}, so {blocked} never started "
        "(--accept-data-loss lets the run through).",
        "refused",
    )


def rpo_absent(run: Run) -> str:
    """Why a run reports no RPO (every format says the same)."""
    if run.direction == Direction.FAILBACK and not run.is_mirror:
        return "this failback measures no RPO (the runbook sets no failback_rpo_step it ran)"
    return "the runbook sets no rpo_step"


def _manual(run: Run) -> ManualFacts:
    gates = tuple(
        Gate(
            step_id=s.id,
            prompt=s.prompt or s.name,
            wait_s=s.manual_wait_s if s.manual_wait_s is not None else s.duration_s,
            approved_by=s.approver,
            status=s.status,
            critical=s.id in run.critical,
            declined_by=s.decliner,
        )
        for s in run.steps
        if kind_of(s.kind).gate
    )
    if not gates:
        return ManualFacts((), run.manual_wait_s, None, None, None, "No manual gates in this run.")
    reached = [g for g in gates if g.status not in (StepStatus.NOT_RUN, StepStatus.SKIPPED)]
    if not reached:
        text = f"{plural(len(gates), 'manual gate')}, none reached"
        text += " yet." if run.is_running else "."
        return ManualFacts(gates, None, None, None, None, text)
    known = [g.wait_s for g in reached if g.wait_s is not None]
    total = run.manual_wait_s if run.manual_wait_s is not None else (sum(known) if known else None)
    on_path = sum(g.wait_s or 0.0 for g in gates if g.critical)
    measured = run.rto.measured_s
    automated = max(measured - on_path, 0.0) if measured is not None else None
    share = on_path / measured * 100 if measured else None
    text = f"{secs(total)} waiting at {plural(len(reached), 'manual gate')}"
    if len(reached) < len(gates):
        text += f" ({len(gates) - len(reached)} more not reached)"
    if run.yes:
        text += ", all approved by --yes"
    if measured is not None:
        text += (
            f"; {secs(on_path, human=False)} of it on the critical path ({pct(share)} of the RTO)."
            f" Automated time: {secs(automated, human=False)} ({pct(100 - (share or 0.0))})."
        )
    else:
        text += "."
    return ManualFacts(gates, total, on_path, automated, share, text)


def _inside_rto(step: Step) -> float | None:
    """How much of ``step`` ran inside the RTO window (offsets count from the RTO start: with
    ``rto_start``, steps before it start at negative offsets)."""
    if step.duration_s is None:
        return None
    if step.start_offset_s is None or step.start_offset_s >= 0:
        return step.duration_s
    return max(0.0, step.start_offset_s + step.duration_s)


def _critical_path(run: Run) -> CriticalPath:
    basis = run.rto.measured_s
    basis_text = f"Shares are of the RTO ({span(basis)})."
    clock = run.progress.rto_elapsed_s if run.progress is not None else None
    if basis is None and clock is not None:
        basis = clock
        basis_text = (
            f"The run is still running: shares are of the {span(basis)} on the RTO clock so far."
        )
    if basis is None:
        ends = [s.end_offset_s for s in run.steps if s.started and s.end_offset_s is not None]
        basis = max(ends) if ends else None
        basis_text = (
            f"No RTO was measured: shares are of the {span(basis)} from the RTO start to the "
            "end of the last step."
            if basis is not None
            else "No RTO was measured and no step started."
        )
    rows: list[PathRow] = []
    counted = 0.0
    last_end: float | None = None
    for step_id in run.critical_path:
        step = run.by_id.get(step_id)
        if step is None:
            rows.append(PathRow(step_id, step_id, "?", "?", None, None, None, "not in the steps"))
            continue
        notes = []
        share = None
        inside = _inside_rto(step)
        if step.carried_from:
            notes.append("carried over: ran in the earlier run, outside this RTO")
        elif inside is not None and inside <= 0.0:
            notes.append("before the RTO clock started (rto_start), outside this RTO")
        elif inside is not None:
            counted += inside
            share = inside / basis * 100 if basis else None
            if inside < (step.duration_s or 0.0) - _NOISE_S:
                notes.append(f"started before the RTO clock: {span(inside)} of it counted")
        if kind_of(step.kind).gate:
            notes.append("manual gate")
        if step.attempts and step.attempts > 1:
            notes.append(f"{step.attempts} attempts")
        if step.end_offset_s is not None and step.started:
            last_end = step.end_offset_s
        rows.append(
            PathRow(
                step.id,
                step.id,
                step.kind,
                step.status,
                step.duration_s,
                share,
                step.start_offset_s,
                "; ".join(notes),
            )
        )
    health = run.health
    if health is not None and health.held_offset_s is not None and last_end is not None:
        wait = health.held_offset_s - last_end
        if wait > _NOISE_S:
            counted += wait
            polls = f"{plural(health.polls, 'poll')}" if health.polls is not None else ""
            rows.append(
                PathRow(
                    "health checks until held",
                    None,
                    "health",
                    StepStatus.SUCCEEDED,
                    wait,
                    wait / basis * 100 if basis else None,
                    last_end,
                    polls,
                )
            )
    if run.rto.measured_s is not None and rows:
        gap = run.rto.measured_s - counted
        if gap > _NOISE_S:
            rows.append(
                PathRow(
                    "between steps (scheduling)",
                    None,
                    "gap",
                    "",
                    gap,
                    gap / run.rto.measured_s * 100,
                    None,
                    "",
                )
            )
    steps_on_path = [r for r in rows if r.step_id]
    if not steps_on_path:
        text = "No critical path was recorded."
    else:
        text = f"{plural(len(steps_on_path), 'step')}: " + " → ".join(
            r.step_id or "" for r in steps_on_path
        )
    return CriticalPath(tuple(rows), basis, basis_text, text)


def _log_path(run: Run, step: Step, host: str) -> str:
    return f"runs/{run.run_id}/output/{step.id}/{host}.log"


def _log_note(host: HostResult) -> str:
    """Said beside the log's path when its last attempt printed past ``output_limit``."""
    if not host.output_cut:
        return ""
    return f" (cut at the runbook's output_limit: {host.output_cut:,} bytes not kept)"


def _outputs(run: Run) -> tuple[tuple[StepOutput, ...], int]:
    """Every step that ran on hosts, in start order, with each host's command and output tail;
    past OUTPUT_HOSTS host entries the rest are counted, not shown (a 10,000-step report stays
    readable; the full output is in the logs)."""
    steps: list[StepOutput] = []
    shown = omitted = 0
    for step in sorted(
        run.steps, key=lambda s: (s.start_offset_s is None, s.start_offset_s or 0.0)
    ):
        if not step.hosts or step.carried_from:
            continue
        hosts = []
        for host in step.hosts:
            if shown >= OUTPUT_HOSTS:
                omitted += 1
                continue
            shown += 1
            text, total = tail(host.output_tail, OUTPUT_TAIL_LINES)
            hosts.append(
                HostOutput(
                    host=host.host,
                    status=host.status or step.status,
                    rc=host.rc,
                    command=host.command,
                    tail=text,
                    tail_lines=total,
                    log_path=_log_path(run, step, host.host),
                    log_command=f"drx logs {run.run_id} {step.id} {host.host}",
                    log_note=_log_note(host),
                )
            )
        if hosts:
            steps.append(StepOutput(step.id, step.name, step.status, tuple(hosts)))
    return tuple(steps), omitted


def _failures(run: Run) -> tuple[Failure, ...]:
    failures = []
    for step in run.steps:
        if not step.broke:
            continue
        hosts = []
        for host in step.hosts:
            if not (host.failed or step.outcome_unknown or step.status == StepStatus.UNKNOWN):
                continue
            text, total = tail(host.output_tail, TAIL_LINES)
            hosts.append(
                FailedHost(
                    host=host.host,
                    rc=host.rc,
                    error=host.error,
                    attempts=len(host.attempts),
                    tail=text,
                    tail_lines=total,
                    log_path=_log_path(run, step, host.host),
                    log_command=f"drx logs {run.run_id} {step.id} {host.host}",
                    log_note=_log_note(host),
                )
            )
        failures.append(
            Failure(
                step.id, step.name, step.kind, step.status, cause(step), step.error, tuple(hosts)
            )
        )
    return tuple(failures)


def _hosts_text(step: Step) -> str:
    if not step.hosts:
        return kind_of(step.kind).hosts_label
    bad = [h for h in step.hosts if h.failed]
    if len(step.hosts) <= 3:
        return ", ".join(h.host + (" ✗" if h.failed else "") for h in step.hosts)
    text = f"{len(step.hosts)} hosts"
    return text + (f", {len(bad)} failed" if bad else "")


def _step_note(step: Step) -> str:
    notes = []
    if step.carried_from:
        notes.append(f"carried from {step.carried_from}")
    spooled = [h.host for h in step.hosts if h.reattached]
    if spooled:
        notes.append(f"from the spool on {', '.join(spooled)}")
    if step.error:
        notes.append(step.error)
    if step.outcome_unknown:
        notes.append("outcome unknown")
    if kind_of(step.kind).gate and step.approved_by:
        who = step.approver
        waited = f" after {secs(step.manual_wait_s)}" if step.manual_wait_s else ""
        notes.append(f"approved by {who}{waited}")
    if kind_of(step.kind).gate and step.declined_by:
        waited = f" after {secs(step.manual_wait_s)}" if step.manual_wait_s else ""
        notes.append(f"declined by {step.decliner}{waited}")
    retried = [h.host for h in step.hosts if len(h.attempts) > 1]
    if retried:
        notes.append("retried on " + ", ".join(retried[:3]) + (" …" if len(retried) > 3 else ""))
    if step.value is not None and not isinstance(step.value, dict | list):
        text = str(step.value)
        notes.append("value " + (text if len(text) <= 40 else text[:39] + "…"))
    return "; ".join(notes)


def step_order(run: Run) -> list[Step]:
    """Steps in the order they started: carried-over steps (they ran before this run) first, then
    this run's steps by start time, then those that never started, each group in plan order."""
    carried = [s for s in run.steps if s.carried_from]
    started = sorted((s for s in run.steps if s.started), key=lambda s: s.start_offset_s or 0.0)
    rest = [s for s in run.steps if not s.started and not s.carried_from]
    return carried + started + rest


def _step_rows(run: Run) -> tuple[StepRow, ...]:
    rows = []
    for step in step_order(run):
        attempts = step.attempts
        if attempts is None and step.hosts:
            attempts = max(len(h.attempts) for h in step.hosts)
        status: str = step.status
        if step.carried_from:
            status += " (carried)"
        rows.append(
            StepRow(
                step=step,
                status=status,
                hosts=_hosts_text(step),
                attempts=str(attempts)
                if attempts and step.status not in (StepStatus.NOT_RUN,)
                else "—",
                duration=secs(step.duration_s),
                offset=offset(step.start_offset_s if step.started else None),
                note=_step_note(step),
                critical=step.id in run.critical,
            )
        )
    return tuple(rows)


def _step_counts(run: Run) -> str:
    counts = Counter[str](s.status for s in run.steps)
    ordered = [f"{counts[s]} {s.replace('_', ' ')}" for s in STATUS_ORDER if counts.get(s)]
    ordered += [f"{n} {s}" for s, n in counts.items() if s not in STATUS_ORDER]
    if not run.steps:
        return "No steps."
    return f"{plural(len(run.steps), 'step')}: " + ", ".join(ordered) + "."


def _health(run: Run) -> str:
    health = run.health
    if run.is_running and (health is None or not health.polls):
        return "Not polled yet: the run is still running."
    if health is None:
        if run.status == RunStatus.SUCCEEDED:
            return "No health check in this run: the RTO ends when the last step ends."
        return "Not polled: the run stopped before the health check."
    polls = f"{plural(health.polls, 'poll')}" if health.polls is not None else "polls not recorded"
    if health.held_at or health.held_offset_s is not None:
        at = when(health.held_at) if health.held_at else "time not recorded"
        return f"Held at {run.to_site} at {at} ({offset(health.held_offset_s)}) after {polls}."
    if health.timed_out:
        return f"Never held at {run.to_site}: gave up after {polls}."
    if not health.polls:
        return "Not polled: the run stopped before the health check."
    return f"Not confirmed at {run.to_site}: polling stopped after {polls}."


def _compare(run: Run, other: Run) -> Comparison:
    rows = []
    seen = set()
    for step in step_order(run):
        seen.add(step.id)
        before = other.by_id.get(step.id)
        other_s = before.duration_s if before else None
        diff = (
            step.duration_s - other_s
            if step.duration_s is not None and other_s is not None
            else None
        )
        rows.append(
            StepDelta(
                step.id,
                step.duration_s,
                other_s,
                diff,
                step.status,
                before.status if before else None,
            )
        )
    rows += [
        StepDelta(s.id, None, s.duration_s, None, None, s.status)
        for s in other.steps
        if s.id not in seen
    ]
    this_rto, other_rto = run.rto.measured_s, other.rto.measured_s
    rto_delta = this_rto - other_rto if this_rto is not None and other_rto is not None else None
    if rto_delta is None:
        rto_text = f"RTO {secs(this_rto)} in this run, {secs(other_rto)} in {other.run_id}."
    else:
        trend = (
            "no change" if abs(rto_delta) < _NOISE_S else ("slower" if rto_delta > 0 else "faster")
        )
        rto_text = (
            f"RTO {secs(this_rto)} against {secs(other_rto)} in {other.run_id}: "
            f"{delta(rto_delta)} ({trend})."
        )
    movers = sorted(
        (r for r in rows if r.delta_s is not None and abs(r.delta_s) >= _NOISE_S),
        key=lambda r: -abs(r.delta_s or 0.0),
    )[:3]
    largest = (
        "Largest changes: " + ", ".join(f"{r.step_id} {delta(r.delta_s)}" for r in movers) + "."
        if movers
        else "No step changed duration noticeably."
    )
    path_this, path_other = tuple(run.critical_path), tuple(other.critical_path)
    changed = path_this != path_other
    if not path_other:
        path_text = f"The other run recorded no critical path ({other.run_id})."
        changed = False
    elif not changed:
        path_text = "The critical path is unchanged: " + " → ".join(path_this) + "."
    else:
        joined = [s for s in path_this if s not in path_other]
        left = [s for s in path_other if s not in path_this]
        path_text = (
            f"The critical path changed: it was {' → '.join(path_other) or '(none)'}; "
            f"it is now {' → '.join(path_this) or '(none)'}."
        )
        if joined:
            path_text += " Joined: " + ", ".join(joined) + "."
        if left:
            path_text += " Left: " + ", ".join(left) + "."
        if not joined and not left:
            path_text += " Same steps, in a different order."
    return Comparison(
        other_run_id=other.run_id,
        other_started_at=other.started_at,
        other_status=other.status,
        rto_this=this_rto,
        rto_other=other_rto,
        rto_delta=rto_delta,
        rto_text=rto_text,
        rows=tuple(rows),
        largest_text=largest,
        path_this=path_this,
        path_other=path_other,
        path_changed=changed,
        path_text=path_text,
    )


def _history(run: Run, earlier: Sequence[Run]) -> tuple[HistoryPoint, ...]:
    runs = [r for r in earlier if r.run_id != run.run_id] + [run]
    starts = [parse_when(r.started_at) for r in runs]
    known = [moment for moment in starts if moment is not None]
    if len(known) == len(runs):
        # Reporting an older run against later history must not draw it as the latest point.
        order = sorted(range(len(runs)), key=lambda i: known[i])
        runs = [runs[i] for i in order]
    return tuple(
        HistoryPoint(
            r.run_id,
            r.started_at,
            r.status,
            r.rto.measured_s,
            r.rto.target_s,
            target_verdict(r.rto.measured_s, r.rto.target_s, unmeasured="").state == "met",
            r is run,
            r.rto.end_to_end_s,
            (r.runbook, r.direction) == (run.runbook, run.direction),
        )
        for r in runs
    )


def _history_text(points: Sequence[HistoryPoint]) -> str | None:
    if len(points) < 2:
        return None
    measured = [p.measured_s for p in points if p.measured_s is not None]
    text = f"{plural(len(points), 'run')} of this runbook"
    if measured:
        text += (
            f": RTO median {secs(statistics.median(measured))}, best {secs(min(measured))}, "
            f"worst {secs(max(measured))}"
        )
    with_target = [p for p in points if p.target_s is not None]
    if with_target:
        met = sum(1 for p in with_target if p.met)
        text += f"; {met} of {len(with_target)} met the target"
    unmeasured = len(points) - len(measured)
    if unmeasured:
        text += f"; {unmeasured} without a measured RTO"
    return text + "."


def build(run: Run, *, compare: Run | None = None, history: Sequence[Run] = ()) -> Report:
    """Compute every finding of the report for ``run``."""
    rto = rto_facts(run)
    points = _history(run, history) if history else ()
    outputs, omitted = _outputs(run)
    return Report(
        run=run,
        title=f"{run.runbook} — {run.direction} {route(run)}",
        route=route(run),
        exit_meaning=_exit_meaning(run.exit_code),
        outcome=_outcome(run, rto),
        notes=_notes(run),
        rto=rto,
        rpo=rpo_facts(run),
        rpo_absent=rpo_absent(run),
        manual=_manual(run),
        path=_critical_path(run),
        failures=_failures(run),
        steps=_step_rows(run),
        outputs=outputs,
        outputs_omitted=omitted,
        step_counts=_step_counts(run),
        health=site_health(run.children, run.steps, run.health is None) or _health(run),
        comparison=_compare(run, compare) if compare is not None else None,
        history=points,
        history_text=_history_text(points),
        probes=tuple(probe_fact(p, run) for p in run.probes),
        children=child_facts(run.children, [s.id for s in run.steps]),
    )


def probe_fact(probe: ProbeFigures, run: Run) -> ProbeFact:
    """'observed downtime 4.2 s in 2 windows (longest 3.1 s) beside the measured RTO 9 s'."""
    windows = len(probe.spans)
    text = f"observed downtime {secs(probe.down_s)}"
    if windows:
        text += f" in {plural(windows, 'window')} (longest {secs(probe.longest_down_s)})"
    if run.rto.measured_s is not None:
        text += f", beside the measured RTO of {secs(run.rto.measured_s)}"
    if probe.breached:
        text += f"; BREACHED its max_down of {secs(probe.max_down_s)}"
    every = f" every {secs(probe.interval_s)}" if probe.interval_s is not None else ""
    basis = (
        f"probe '{probe.name}' polled{every} for the whole run: {plural(probe.polls, 'poll')}, "
        f"{probe.failed_polls} failed; down from a failing poll to the next passing one"
    )
    return ProbeFact(probe.name, "missed" if probe.breached else "met", text, basis)


def _exit_meaning(code: int | None) -> str | None:
    """What an exit code means, spelled out next to the code in every report."""
    try:
        return ExitCode(code).meaning if code is not None else None
    except ValueError:
        return None
