"""The runbook: steps with dependencies, health checks, RTO/RPO targets — and its loader.

The loader checks each field (types, durations, kinds, ids) and collects every problem with its
file and line; checks that need the inventory too (selectors, templates, cycles) live in
``plan.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from orchestrator.bulk import slot_init
from orchestrator.errors import Problem
from orchestrator.kinds import KINDS, kind_of, own_fields
from orchestrator.kinds import names as kind_names
from orchestrator.kinds.base import DEFAULT_TIMEOUT
from orchestrator.model.fields import (
    Fields,
    Located,
    Where,
    as_list,
    as_mapping,
    closest,
    load_document,
    suggest,
)
from orchestrator.model.names import NAME_RULE, bad_name
from orchestrator.model.units import is_size, parse_duration, parse_size
from orchestrator.model.yaml_source import LList, LMap
from orchestrator.transport.base import DEFAULT_OUTPUT_LIMIT
from orchestrator.vocab import StepKind as StepKind

STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
DEFAULT_INTERVAL = 5.0
#: the shortest pause between polls: shorter ones would hammer the hosts (over SSH, a session
#: a poll) and are refused
MIN_INTERVAL = 0.05
DEFAULT_RETRY_DELAY = 5.0


class FailbackMode(StrEnum):
    """How ``drx failback`` returns a succeeded failover (see docs/reference.md, "Undo or
    mirror"): the reverse plan of its undos, or the runbook's own steps run the other way."""

    UNDO = "undo"
    MIRROR = "mirror"


class OnFailure(StrEnum):
    ABORT = "abort"
    CONTINUE = "continue"


class RunbookOnFailure(StrEnum):
    """What a failover that fails (or is cancelled) does next: stop where it is, or roll back."""

    STOP = "stop"
    ROLLBACK = "rollback"


class Mode(StrEnum):
    """Whether a run is part of a drill (``drx drill``) or real; steps may run in one only."""

    DRILL = "drill"
    REAL = "real"


#: a built-in kind's name → its member (so ``step.kind is StepKind.X`` holds for them)
_BUILT_IN = {k.value: k for k in StepKind}

STEP_FIELDS = (
    "id",
    "name",
    "kind",
    "hosts",
    "run",
    "undo",
    "needs",
    "timeout",
    "retries",
    "retry_delay",
    "until",
    "interval",
    "capture",
    "when",
    "on_failure",
    "serial",
    "expect",
    "prompt",
    "duration",
    "env",
    "idempotent",
    "sudo",
    "only",
    "runbook",
    "vars",
    "always",
    "candidates",
)
#: a field beyond these is one a registered kind owns (orchestrator/kinds/)
_BUILT_IN_FIELDS = frozenset(STEP_FIELDS)
UNDO_FIELDS = tuple(
    f
    for f in STEP_FIELDS
    if f not in ("id", "undo", "needs", "runbook", "vars", "always", "candidates")
)
HEALTH_FIELDS = ("name", "hosts", "run", "until", "interval", "timeout", "capture", "env")
#: a readiness entry is a health entry that may also run through sudo (a database's own checks)
READINESS_FIELDS = (*HEALTH_FIELDS, "sudo")
#: the RPO probe: one read-only command whose number is the data at risk now (docs/reference.md)
RPO_PROBE_FIELDS = ("hosts", "run", "capture", "timeout", "env", "sudo")
RUNBOOK_FIELDS = (
    "name",
    "notify",
    "description",
    "rto_target",
    "rpo_target",
    "rpo_step",
    "rpo_guard",
    "failback_rpo_step",
    "rto_start",
    "vars",
    "health",
    "steps",
    "readiness",
    "rpo_probe",
    "drill_every",
    "on_failure",
    "probes",
    "output_limit",
    "failback",
    "reprotect",
)
PROBE_FIELDS = ("name", "hosts", "run", "until", "capture", "interval", "timeout", "max_down")
DEFAULT_PROBE_INTERVAL = 1.0
DEFAULT_PROBE_TIMEOUT = 5.0
CAPTURE_KINDS = ("text", "number", "json")
#: the step fields that are durations; each may be a template (see ``Step.duration_templates``)
DURATION_FIELDS = ("timeout", "retry_delay", "interval", "expect", "duration")


@dataclass(frozen=True, slots=True)  # slots: a 100,000-step runbook holds 100,000 of them
class Step:
    """One step of a runbook (or the undo action of one)."""

    id: str
    name: str
    kind: str = StepKind.COMMAND  # a StepKind, or the name of a kind registered beside them
    hosts: tuple[str, ...] = ()
    run: str | None = None
    undo: Step | None = None
    needs: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    retries: int = 0
    retry_delay: float = DEFAULT_RETRY_DELAY
    until: str | None = None
    interval: float = DEFAULT_INTERVAL
    capture: str | None = None
    when: str | None = None
    on_failure: OnFailure = OnFailure.ABORT
    serial: int | None = None
    expect: float | None = None
    prompt: str | None = None
    duration: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False
    sudo: bool | str = False  # True: as root; a name: as that user
    only: Mode | None = None  # runs only in drills / only outside them
    #: cleanup: runs once its needs finished in any state, also when the run is failing,
    #: aborting or was stopped by a first Ctrl-C
    always: bool = False
    #: selectors bounding what ``hosts`` decided at run time may resolve to (none: every host
    #: of the run's two sites)
    candidates: tuple[str, ...] = ()
    #: duration fields written as templates (field → text): those that use only variables are
    #: rendered when the plan is built, the others when the step starts
    duration_templates: dict[str, str] = field(default_factory=dict, compare=False)
    line: int = 0
    field_lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    runbook: str | None = None  # kind: runbook: the child runbook's path, as written
    vars: dict[str, Any] = field(default_factory=dict)  # kind: runbook: the child's overrides
    #: the values of fields a kind registered beside the built-in ones takes (orchestrator/kinds/)
    options: Mapping[str, Any] | None = None

    def line_of(self, key: str) -> int:
        return self.field_lines.get(key, self.line)

    @property
    def runs_commands(self) -> bool:
        return kind_of(self.kind).runs_commands

    @property
    def hosts_at_run_time(self) -> bool:
        """``hosts`` is a template over earlier steps' results, rendered when the step starts."""
        return any("{{" in h or "{%" in h for h in self.hosts)


# built once per step of a runbook: set slot by slot, not through object.__setattr__
Step.__init__ = slot_init(Step)  # type: ignore[method-assign]


@dataclass(frozen=True)
class HealthCheck:
    """One entry of ``health``: polled like a ``check`` step."""

    name: str
    hosts: tuple[str, ...]
    run: str
    until: str | None = None
    interval: float = 2.0
    timeout: float = 120.0
    capture: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    line: int = 0
    field_lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    sudo: bool | str = False  # readiness entries and the rpo_probe only

    def line_of(self, key: str) -> int:
        return self.field_lines.get(key, self.line)

    def as_step(self) -> Step:
        """The check step that polls this health entry."""
        return Step(
            id=f"health:{self.name}",
            name=self.name,
            kind=StepKind.CHECK,
            hosts=self.hosts,
            run=self.run,
            until=self.until,
            interval=self.interval,
            timeout=self.timeout,
            capture=self.capture,
            env=self.env,
            sudo=self.sudo,
            line=self.line,
            field_lines=self.field_lines,
        )


@dataclass(frozen=True)
class Probe:
    """One entry of ``probes``: a client-side check polled for the whole run, on its own
    schedule, to measure the downtime clients saw (docs/reference.md, "probes")."""

    name: str
    hosts: tuple[str, ...]
    run: str
    until: str | None = None
    capture: str | None = None
    interval: float = DEFAULT_PROBE_INTERVAL
    timeout: float = DEFAULT_PROBE_TIMEOUT  # per poll
    max_down: float | None = None  # a down window longer than this breaches
    line: int = 0
    field_lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, key: str) -> int:
        return self.field_lines.get(key, self.line)

    def as_step(self) -> Step:
        """A check step with this probe's command (what one poll runs)."""
        return Step(
            id=f"probe:{self.name}",
            name=self.name,
            kind=StepKind.CHECK,
            hosts=self.hosts,
            run=self.run,
            until=self.until,
            interval=self.interval,
            timeout=self.timeout,
            capture=self.capture,
            line=self.line,
            field_lines=self.field_lines,
        )


@dataclass
class Runbook:
    path: str
    name: str
    description: str
    steps: list[Step]
    health: list[HealthCheck]
    vars: dict[str, Any]
    rto_target: float | None = None
    rpo_target: float | None = None  # seconds, or bytes when rpo_is_bytes
    rpo_is_bytes: bool = False
    rpo_step: str | None = None
    #: refuse to start any step that needs the rpo_step while its value exceeds rpo_target
    #: (Patroni's maximum_lag_on_failover); ``--accept-data-loss`` lets the run through
    rpo_guard: bool = False
    #: ``undo-<step>``: the failback step whose captured value is a failback's RPO (the guard
    #: then applies to failbacks too); None: a failback measures no RPO
    failback_rpo_step: str | None = None
    rto_start: str | None = None
    field_lines: dict[str, int] = field(default_factory=dict)
    #: notification URLs (templates) for run start, gates, RTO at risk and run end
    notify: list[Located] = field(default_factory=list)
    #: checks ``drx check`` runs once (at the sites their selectors name), beside health
    readiness: list[HealthCheck] = field(default_factory=list)
    #: the data at risk now (seconds or bytes, as rpo_target), for ``drx check``'s card
    rpo_probe: HealthCheck | None = None
    #: a succeeded failover older than this makes ``drx check`` report the drill overdue
    drill_every: float | None = None
    #: a failover that fails or is cancelled: stop there, or roll back what it did
    on_failure: RunbookOnFailure = RunbookOnFailure.STOP
    probes: list[Probe] = field(default_factory=list)

    @property
    def has_undo(self) -> bool:
        """Whether any step has an undo (else a rollback has nothing to do)."""
        return any(s.undo is not None for s in self.steps)

    #: a site plan: its children by id (model/siteplan.py), outermost first; empty otherwise
    children: dict[str, Any] = field(default_factory=dict)

    def file_of(self, step_id: str | None) -> str:
        """The file a step was written in: a child's steps are in the child's file."""
        if step_id and self.children and "/" in step_id:
            child = self.children.get(step_id.removeprefix("undo-").rpartition("/")[0])
            if child is not None:
                return str(child.path)
        return self.path

    #: the most one attempt of a step on one host writes to its output log (bytes)
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    failback: FailbackMode = FailbackMode.UNDO
    #: what makes the old site a replica of the new one again: the first phase of a mirrored
    #: failback (outside its RTO), or a run of its own (``drx reprotect``)
    reprotect: list[Step] = field(default_factory=list)

    def step(self, step_id: str) -> Step:
        return self.by_id[step_id]

    @property
    def by_id(self) -> dict[str, Step]:
        return {s.id: s for s in self.steps}

    def line_of(self, key: str) -> int:
        return self.field_lines.get(key, 1)


def _capture(f: Fields) -> str | None:
    value: str | None = f.string("capture")
    if value is None or value in CAPTURE_KINDS:
        return value
    try:
        pattern = re.compile(value)
    except re.error as exc:
        f.error(
            "capture", f"capture '{value}' is neither text/number/json nor a valid regex: {exc}"
        )
        return None
    if pattern.groups < 1:
        f.error(
            "capture",
            f"capture regex '{value}' has no group",
            "wrap the part to keep in ( ), or use text/number/json",
        )
        return None
    return value


SUDO_USER = r"^[a-z_][a-z0-9_-]*[$]?$"  # a POSIX user name


def _sudo(f: Fields) -> bool | str:
    """``sudo``: true (run as root), false, or the name of the user to run as."""
    value = f.data.get("sudo")
    if isinstance(value, str):
        if re.match(SUDO_USER, value):
            return value
        f.error("sudo", f"field 'sudo' must be true, false or a user name, not {value!r}")
        return False
    return f.flag("sudo")


def _interval(f: Fields, default: float) -> float:
    """A poll interval, refused (naming the line) when under ``MIN_INTERVAL``."""
    interval = f.duration("interval", default) or 0.0
    if interval < MIN_INTERVAL and f.data.get("interval") is not None:
        f.error(
            "interval",
            f"field 'interval' must be at least 50ms, not {f.data['interval']!r}: every poll "
            "runs the command again on each host",
        )
        return default
    return interval


def _only(f: Fields) -> Mode | None:
    """``only``: drill or real (the step runs in that mode alone)."""
    text = f.string("only")
    if text is None:
        return None
    try:
        return Mode(text)
    except ValueError:
        f.error(
            "only",
            f"only must be drill or real, not '{text}'",
            suggest(text, [m.value for m in Mode]),
        )
        return None


_Known = tuple[tuple[str, ...], frozenset[str], frozenset[str]]
_KNOWN: dict[tuple[bool, tuple[str, ...]], _Known] = {}


def _known_fields(undo: bool) -> _Known:
    """The fields a step (``undo``: an undo mapping) may have, in the order hints list them and
    as a set, and the fields some kind owns: computed once per set of registered kinds, not
    for each of 10,000 steps."""
    owned = tuple(own_fields())
    known = _KNOWN.get((undo, owned))
    if known is None:
        allowed = (UNDO_FIELDS if undo else STEP_FIELDS) + tuple(
            k for k in owned if k not in _BUILT_IN_FIELDS
        )
        known = _KNOWN[(undo, owned)] = (allowed, frozenset(allowed), frozenset(owned))
    return known


def _parse_step(
    data: LMap, where: Where, problems: list[Problem], *, undo_of: Step | None = None
) -> Step | None:
    """Build a Step from its mapping; ``undo_of`` is set when parsing an ``undo`` mapping."""
    what = f"the undo of step '{undo_of.id}'" if undo_of else f"step '{where.step or '?'}'"
    f = Fields(data, where, problems, what)
    allowed, allowed_set, kind_fields = _known_fields(undo_of is not None)
    if not allowed_set.issuperset(data):
        f.check_known(allowed)
    if undo_of is None:
        step_id = f.text("id")
        if step_id is None:
            if data.get("id") is None:  # a wrong type was reported by f.text already
                f.error(None, "missing required field 'id' in step")
            step_id = f"<step at line {data.line}>"
        elif not STEP_ID.match(step_id):
            f.error(
                "id",
                f"invalid step id '{step_id}'",
                "ids are lower-case letters, digits, '-' and '_', starting with a letter or digit",
            )
    else:
        step_id = undo_of.id
    kind_text = f.string("kind", "command")
    kind_known = True
    if kind_text not in KINDS:
        listed = kind_names(listed_only=True)
        hint = suggest(kind_text, kind_names())
        f.error("kind", f"unknown kind '{kind_text}' ({', '.join(listed)})", hint)
        # Go on as the kind that was meant, so that one typo is one error, not a cascade
        # about fields that kind would not need; with no close match, skip those checks.
        meant = closest(kind_text, kind_names())
        kind_text, kind_known = (meant, True) if meant else ("command", False)
    kind: str = _BUILT_IN.get(kind_text, kind_text)
    rules = kind_of(kind)
    hosts = tuple(f.str_list("hosts"))
    run = f.text("run")
    if kind_known:
        rules.check_fields(f, data, undo=undo_of is not None)
    if undo_of is None and not kind_fields.isdisjoint(data):
        for other in KINDS.values():
            for key in other.own_fields if other is not rules else ():
                if key in data:
                    f.error(key, f"'{key}' belongs to a kind: {other.name} step only")
    on_failure_text = f.string("on_failure", "abort")
    try:
        on_failure = OnFailure(on_failure_text)
    except ValueError:
        f.error("on_failure", f"on_failure must be abort or continue, not '{on_failure_text}'")
        on_failure = OnFailure.ABORT
    serial = f.integer("serial", None, minimum=1)
    only = _only(f)
    templated = {
        k: data[k]
        for k in DURATION_FIELDS
        if isinstance(data.get(k), str) and ("{{" in data[k] or "{%" in data[k])
    }

    def duration(key: str, default: float | None = None) -> float | None:
        return default if key in templated else f.duration(key, default)

    name = f.text("name") or (undo_of.name and f"undo {undo_of.name}" if undo_of else step_id)
    key_lines = data.key_lines
    step = Step(
        id=step_id,
        name=name or step_id,
        kind=kind,
        hosts=hosts or (undo_of.hosts if undo_of else ()),
        run=run,
        needs=tuple(f.str_list("needs")),
        timeout=duration("timeout", rules.default_timeout) or 0.0,
        retries=f.integer("retries", 0),
        retry_delay=duration("retry_delay", DEFAULT_RETRY_DELAY) or 0.0,
        until=f.text("until"),
        interval=DEFAULT_INTERVAL if "interval" in templated else _interval(f, DEFAULT_INTERVAL),
        capture=_capture(f),
        when=f.text("when"),
        on_failure=on_failure,
        serial=serial,
        expect=duration("expect"),
        prompt=f.text("prompt"),
        duration=duration("duration"),
        env=f.env(),
        idempotent=f.flag("idempotent"),
        sudo=_sudo(f),
        only=only,
        always=f.flag("always"),
        candidates=tuple(f.str_list("candidates")),
        duration_templates=templated,
        line=data.line,
        field_lines=(
            dict(key_lines)
            if key_lines.keys() == data.keys()
            else {k: key_lines.get(k, data.line) for k in data}
        ),
        **rules.own_values(f),
    )
    if step.candidates and not step.hosts_at_run_time:
        f.error(
            "candidates",
            "'candidates' bounds hosts decided at run time, but this step's hosts are fixed",
            "write hosts as a template, e.g. \"{{ steps['find-primary'].value }}\"",
        )
    if undo_of is None and "undo" in data and data["undo"] is not None and kind_known:
        undo_data = data["undo"]
        line = data.line_of("undo")
        if isinstance(undo_data, str | int | float) and not isinstance(undo_data, bool):
            undo_map = LMap(run=str(undo_data))
            undo_map.line, undo_map.column, undo_map.key_lines = line, 0, {"run": line}
        else:
            undo_map = as_mapping(undo_data, where, line, "undo", problems)
        undo = _parse_step(undo_map, where, problems, undo_of=step)
        if undo is not None and not isinstance(undo_data, LMap) and undo.sudo != step.sudo:
            # A command string runs as the step itself does (its sudo); a mapping says for itself.
            undo = _replace(undo, sudo=step.sudo)
        if (
            undo is not None
            and undo.kind is StepKind.COMMAND
            and "hosts" not in undo_map
            and undo.hosts != step.hosts
        ):
            # An undo command runs on the same hosts as the step it undoes.
            undo = _replace(undo, hosts=step.hosts)
        object.__setattr__(step, "undo", undo)
    return step


def _replace(step: Step, **changes: Any) -> Step:
    from dataclasses import replace

    return replace(step, **changes)


def _probes(f: Fields, where: Where, problems: list[Problem]) -> list[Probe]:
    """The runbook's ``probes``: each needs ``run``; ``max_down`` no shorter than ``interval``
    (a window is only ever seen one interval at a time)."""
    top = f.data
    if top.get("probes") is None:
        return []
    items = as_list(top["probes"], where, f.line("probes"), "'probes'", problems)
    probes: list[Probe] = []
    names: dict[str, int] = {}
    for index, item in enumerate(items):
        pmap = as_mapping(item, where, items.line_of(index), "a probe", problems)
        pf = Fields(pmap, Where(where.file, None), problems, "a probe")
        pf.check_known(PROBE_FIELDS)
        name = pf.text("name") or f"probe-{index + 1}"
        if (message := bad_name("probe", name)) is not None:
            pf.error("name", message, NAME_RULE)
        elif name in names:
            pf.error("name", f"duplicate probe name '{name}' (first defined on line {names[name]})")
        names.setdefault(name, pf.line("name"))
        run = pf.text("run")
        if run is None:
            pf.error(None, f"probe '{name}' has no 'run': a probe needs a command to poll")
        interval = pf.duration("interval", DEFAULT_PROBE_INTERVAL) or DEFAULT_PROBE_INTERVAL
        max_down = pf.duration("max_down")
        if max_down is not None and max_down < interval:
            pf.error(
                "max_down",
                f"probe '{name}': max_down ({max_down:g}s) is shorter than its interval "
                f"({interval:g}s); a down window is seen one poll at a time",
                "raise max_down to at least the interval, or poll more often",
            )
        probes.append(
            Probe(
                name=name,
                hosts=tuple(pf.str_list("hosts")) or ("control",),
                run=run or "",
                until=pf.text("until"),
                capture=_capture(pf),
                interval=interval,
                timeout=pf.duration("timeout", DEFAULT_PROBE_TIMEOUT) or DEFAULT_PROBE_TIMEOUT,
                max_down=max_down,
                line=pmap.line,
                field_lines={k: pmap.line_of(k) for k in pmap},
            )
        )
    return probes


def _parse_steps(f: Fields, key: str, seen: dict[str, int]) -> list[Step]:
    """The list of steps under ``key`` (``steps`` or ``reprotect``); ids are unique across
    both (``seen``: id → line)."""
    top, where, problems = f.data, f.where, f.problems
    file = where.file
    if top.get(key) is None:
        return []
    steps: list[Step] = []
    steps_list = as_list(top[key], where, f.line(key), f"'{key}'", problems)
    for index, item in enumerate(steps_list):
        line = steps_list.line_of(index)
        step_map = as_mapping(item, where, line, "a step", problems)
        step_id = step_map.get("id") if isinstance(step_map.get("id"), str) else None
        step = _parse_step(step_map, Where(file, step_id), problems)
        if step is None:
            continue
        if step.id in seen:
            problems.append(
                Where(file, step.id).problem(
                    step.line_of("id"),
                    f"duplicate step id '{step.id}' (first defined on line {seen[step.id]})",
                )
            )
            continue
        seen[step.id] = step.line_of("id")
        steps.append(step)
    return steps


def parse_runbook(path: str | Path) -> tuple[Runbook | None, list[Problem]]:
    """Load a runbook, returning it (None if unusable) and every problem found in it alone."""
    f, where, problems = load_document(path, "runbook")
    if f is None:
        return None, problems
    top, file = f.data, where.file
    f.check_known(RUNBOOK_FIELDS)
    name = f.text("name")
    if name is None:
        f.require("name")
    rto_target = f.duration("rto_target")
    rpo_target: float | None = None
    rpo_is_bytes = False
    if top.get("rpo_target") is not None:
        raw = top["rpo_target"]
        if is_size(raw):
            rpo_target, rpo_is_bytes = float(parse_size(raw)), True
        else:
            try:
                rpo_target = parse_duration(raw)
            except ValueError:
                f.error(
                    "rpo_target",
                    f"bad rpo_target {raw!r}: use a duration (30s, 5m) or a size (0B, 16MB)",
                )
    output_limit = DEFAULT_OUTPUT_LIMIT
    if top.get("output_limit") is not None:
        raw = top["output_limit"]
        if is_size(raw) and parse_size(raw) >= 1024:
            output_limit = parse_size(raw)
        else:
            f.error(
                "output_limit",
                f"bad output_limit {raw!r}: use a size of at least 1KB (64MB, 1GB)",
            )
    seen: dict[str, int] = {}
    if top.get("steps") is None:
        f.error(None, "missing required field 'steps' in the runbook")
    steps = _parse_steps(f, "steps", seen)
    forward = set(seen)
    reprotect = _parse_steps(f, "reprotect", seen)
    for step in reprotect:
        for need in step.needs:
            if need in forward:
                f.problems.append(
                    Where(file, step.id).problem(
                        step.line_of("needs"),
                        f"reprotect step '{step.id}' needs '{need}', a step of 'steps': the "
                        "reprotect phase runs before them (a reprotect step may need only "
                        "other reprotect steps)",
                    )
                )
    health = _checks(f, "health", HEALTH_FIELDS, "a health entry", problems)
    readiness = _checks(f, "readiness", READINESS_FIELDS, "a readiness entry", problems)
    on_failure_text = f.string("on_failure", "stop")
    try:
        on_failure = RunbookOnFailure(on_failure_text)
    except ValueError:
        f.error(
            "on_failure",
            f"on_failure (of the runbook) must be stop or rollback, not '{on_failure_text}'",
            suggest(on_failure_text, [m.value for m in RunbookOnFailure]),
        )
        on_failure = RunbookOnFailure.STOP
    runbook = Runbook(
        path=file,
        name=name or Path(file).stem,
        description=f.text("description") or "",
        steps=steps,
        health=health,
        vars=dict(f.mapping("vars")),
        rto_target=rto_target,
        rpo_target=rpo_target,
        rpo_is_bytes=rpo_is_bytes,
        rpo_step=f.text("rpo_step"),
        rpo_guard=f.flag("rpo_guard"),
        failback_rpo_step=f.text("failback_rpo_step"),
        rto_start=f.text("rto_start"),
        field_lines={k: top.line_of(k) for k in top},
        notify=f.located_list("notify"),
        readiness=readiness,
        rpo_probe=_rpo_probe(f, problems),
        drill_every=f.duration("drill_every"),
        on_failure=on_failure,
        probes=_probes(f, where, problems),
        output_limit=output_limit,
        reprotect=reprotect,
    )
    if runbook.rpo_probe is not None and rpo_target is None and top.get("rpo_target") is None:
        f.error(
            "rpo_probe",
            "rpo_probe needs rpo_target: the target says whether its value is seconds or bytes",
        )
    mode_text = f.string("failback", "undo")
    try:
        runbook.failback = FailbackMode(mode_text)
    except ValueError:
        f.error(
            "failback",
            f"failback must be undo or mirror, not '{mode_text}'",
            suggest(mode_text, [m.value for m in FailbackMode]),
        )
    if runbook.rpo_guard:
        missing = [k for k in ("rpo_step", "rpo_target") if top.get(k) is None]
        if missing:
            f.error(
                "rpo_guard",
                f"rpo_guard needs {' and '.join(missing)}: the guard compares the rpo_step's "
                "value with rpo_target",
            )
    back = runbook.failback_rpo_step
    if back is not None:
        undone = back.removeprefix("undo-")
        with_undo = [s.id for s in steps if s.undo is not None]
        if not back.startswith("undo-") or undone not in with_undo:
            f.error(
                "failback_rpo_step",
                f"failback_rpo_step must name the undo of a step that has one, as "
                f"'undo-<step id>', not '{back}'",
                suggest(back, [f"undo-{s}" for s in with_undo]),
            )
    for key in ("rpo_step", "rto_start"):
        ref = getattr(runbook, key)
        if ref is not None and ref not in forward:
            f.error(key, f"{key} names unknown step '{ref}'", suggest(ref, forward))
    return runbook, problems


def _check_entry(hmap: LMap, hf: Fields, name: str, *, sudo: bool) -> HealthCheck:
    """One entry of ``health`` or ``readiness`` (or the rpo_probe), its fields checked."""
    hosts = tuple(hf.str_list("hosts"))
    if not hosts:
        hf.require("hosts")
    run = hf.text("run")
    if run is None:
        hf.require("run")
    return HealthCheck(
        name=name,
        hosts=hosts,
        run=run or "",
        until=hf.text("until"),
        interval=_interval(hf, 2.0),
        timeout=hf.duration("timeout", 120.0) or 0.0,
        capture=_capture(hf),
        env=hf.env(),
        line=hmap.line,
        field_lines={k: hmap.line_of(k) for k in hmap},
        sudo=_sudo(hf) if sudo else False,
    )


def _checks(
    f: Fields, key: str, allowed: tuple[str, ...], what: str, problems: list[Problem]
) -> list[HealthCheck]:
    """The ``health`` (or ``readiness``) list: entries named uniquely (``<key>-N`` by default)."""
    top, where = f.data, f.where
    items = (
        as_list(top[key], where, f.line(key), f"'{key}'", problems)
        if top.get(key) is not None
        else LList()
    )
    found: list[HealthCheck] = []
    names: dict[str, int] = {}
    for index, item in enumerate(items):
        hmap = as_mapping(item, where, items.line_of(index), what, problems)
        hf = Fields(hmap, Where(where.file, None), problems, what)
        hf.check_known(allowed)
        hname = hf.text("name") or f"{key}-{index + 1}"
        if (message := bad_name(key, hname)) is not None:
            hf.error("name", message, NAME_RULE)
        elif hname in names:
            # the name is the id of its polls in the journal and of their output files
            hf.error(
                "name", f"duplicate {key} name '{hname}' (first defined on line {names[hname]})"
            )
        names.setdefault(hname, hf.line("name"))
        found.append(_check_entry(hmap, hf, hname, sudo="sudo" in allowed))
    return found


def _rpo_probe(f: Fields, problems: list[Problem]) -> HealthCheck | None:
    """``rpo_probe``: hosts + run (+ capture, default number; timeout, default 10s; env; sudo)."""
    if f.data.get("rpo_probe") is None:
        return None
    pmap = as_mapping(f.data["rpo_probe"], f.where, f.line("rpo_probe"), "rpo_probe", problems)
    pf = Fields(pmap, Where(f.where.file, None), problems, "rpo_probe")
    pf.check_known(RPO_PROBE_FIELDS)
    probe = _check_entry(pmap, pf, "rpo_probe", sudo=True)
    return _replace_check(
        probe, capture=probe.capture or "number", timeout=pf.duration("timeout", 10.0) or 0.0
    )


def _replace_check(check: HealthCheck, **changes: Any) -> HealthCheck:
    from dataclasses import replace

    return replace(check, **changes)
