"""The runbook: steps with dependencies, health checks, RTO/RPO targets — and its loader.

The loader checks each field (types, durations, kinds, ids) and collects every problem with its
file and line; checks that need the inventory too (selectors, templates, cycles) live in
``plan.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from orchestrator.errors import Problem
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
from orchestrator.model.units import is_size, parse_duration, parse_size
from orchestrator.model.yaml_source import LList, LMap

STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
DEFAULT_TIMEOUT = 600.0
DEFAULT_INTERVAL = 5.0
DEFAULT_RETRY_DELAY = 5.0


class StepKind(StrEnum):
    COMMAND = "command"
    CHECK = "check"
    MANUAL = "manual"
    WAIT = "wait"


class FailbackMode(StrEnum):
    """How ``drx failback`` returns a succeeded failover (see docs/reference.md, "Undo or
    mirror"): the reverse plan of its undos, or the runbook's own steps run the other way."""

    UNDO = "undo"
    MIRROR = "mirror"


class OnFailure(StrEnum):
    ABORT = "abort"
    CONTINUE = "continue"


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
    "always",
    "candidates",
)
UNDO_FIELDS = tuple(
    f for f in STEP_FIELDS if f not in ("id", "undo", "needs", "always", "candidates")
)
HEALTH_FIELDS = ("name", "hosts", "run", "until", "interval", "timeout", "capture", "env")
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
    "failback",
    "reprotect",
)
CAPTURE_KINDS = ("text", "number", "json")
#: the step fields that are durations; each may be a template (see ``Step.duration_templates``)
DURATION_FIELDS = ("timeout", "retry_delay", "interval", "expect", "duration")


@dataclass(frozen=True)
class Step:
    """One step of a runbook (or the undo action of one)."""

    id: str
    name: str
    kind: StepKind = StepKind.COMMAND
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

    def line_of(self, key: str) -> int:
        return self.field_lines.get(key, self.line)

    @property
    def runs_commands(self) -> bool:
        return self.kind in (StepKind.COMMAND, StepKind.CHECK)

    @property
    def hosts_at_run_time(self) -> bool:
        """``hosts`` is a template over earlier steps' results, rendered when the step starts."""
        return any("{{" in h or "{%" in h for h in self.hosts)


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


def _parse_step(
    data: LMap, where: Where, problems: list[Problem], *, undo_of: Step | None = None
) -> Step | None:
    """Build a Step from its mapping; ``undo_of`` is set when parsing an ``undo`` mapping."""
    what = f"the undo of step '{undo_of.id}'" if undo_of else f"step '{where.step or '?'}'"
    f = Fields(data, where, problems, what)
    f.check_known(UNDO_FIELDS if undo_of else STEP_FIELDS)
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
    try:
        kind = StepKind(kind_text)
    except ValueError:
        hint = suggest(kind_text, [k.value for k in StepKind])
        f.error("kind", f"unknown kind '{kind_text}' (command, check, manual, wait)", hint)
        # Go on as the kind that was meant, so that one typo is one error, not a cascade
        # about fields that kind would not need; with no close match, skip those checks.
        meant = closest(kind_text, [k.value for k in StepKind])
        kind, kind_known = (StepKind(meant), True) if meant else (StepKind.COMMAND, False)
    hosts = tuple(f.str_list("hosts"))
    run = f.text("run")
    if not kind_known:
        pass
    elif kind in (StepKind.COMMAND, StepKind.CHECK):
        if not hosts and undo_of is None:
            f.require("hosts")
        if run is None:
            f.require("run")
    elif kind is StepKind.WAIT and "duration" not in data:
        f.error(None, "a wait step needs 'duration'")
    if kind is StepKind.MANUAL and data.get("always") is True:
        f.error(
            "always",
            "a manual step cannot be 'always': cleanup that must run when the run is failing "
            "or cancelled cannot wait for an operator",
        )
    on_failure_text = f.string("on_failure", "abort")
    try:
        on_failure = OnFailure(on_failure_text)
    except ValueError:
        f.error("on_failure", f"on_failure must be abort or continue, not '{on_failure_text}'")
        on_failure = OnFailure.ABORT
    serial = f.integer("serial", None, minimum=1)
    templated = {
        k: data[k]
        for k in DURATION_FIELDS
        if isinstance(data.get(k), str) and ("{{" in data[k] or "{%" in data[k])
    }

    def duration(key: str, default: float | None = None) -> float | None:
        return default if key in templated else f.duration(key, default)

    name = f.text("name") or (undo_of.name and f"undo {undo_of.name}" if undo_of else step_id)
    step = Step(
        id=step_id,
        name=name or step_id,
        kind=kind,
        hosts=hosts or (undo_of.hosts if undo_of else ()),
        run=run,
        needs=tuple(f.str_list("needs")),
        timeout=duration("timeout", DEFAULT_TIMEOUT) or 0.0,
        retries=f.integer("retries", 0),
        retry_delay=duration("retry_delay", DEFAULT_RETRY_DELAY) or 0.0,
        until=f.text("until"),
        interval=duration("interval", DEFAULT_INTERVAL) or 0.0,
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
        always=f.flag("always"),
        candidates=tuple(f.str_list("candidates")),
        duration_templates=templated,
        line=data.line,
        field_lines={k: data.line_of(k) for k in data},
    )
    if step.candidates and not step.hosts_at_run_time:
        f.error(
            "candidates",
            "'candidates' bounds hosts decided at run time, but this step's hosts are fixed",
            "write hosts as a template, e.g. \"{{ steps['find-primary'].value }}\"",
        )
    if undo_of is None and "undo" in data and data["undo"] is not None:
        undo_data = data["undo"]
        line = data.line_of("undo")
        if isinstance(undo_data, str | int | float) and not isinstance(undo_data, bool):
            undo_map = LMap(run=str(undo_data))
            undo_map.line, undo_map.column, undo_map.key_lines = line, 0, {"run": (line, 0)}
        else:
            undo_map = as_mapping(undo_data, where, line, "undo", problems)
        undo = _parse_step(undo_map, where, problems, undo_of=step)
        if undo is not None and not isinstance(undo_data, LMap):
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
    health: list[HealthCheck] = []
    health_list = (
        as_list(top["health"], where, f.line("health"), "'health'", problems)
        if top.get("health") is not None
        else LList()
    )
    health_names: dict[str, int] = {}
    for index, item in enumerate(health_list):
        line = health_list.line_of(index)
        hmap = as_mapping(item, where, line, "a health entry", problems)
        hf = Fields(hmap, Where(file, None), problems, "a health entry")
        hf.check_known(HEALTH_FIELDS)
        hname = hf.text("name") or f"health-{index + 1}"
        if hname in health_names:
            # the name is the id of its polls in the journal and of their output files
            hf.error(
                "name",
                f"duplicate health name '{hname}' (first defined on line {health_names[hname]})",
            )
        health_names.setdefault(hname, hf.line("name"))
        hosts = tuple(hf.str_list("hosts"))
        if not hosts:
            hf.require("hosts")
        run = hf.text("run")
        if run is None:
            hf.require("run")
        health.append(
            HealthCheck(
                name=hname,
                hosts=hosts,
                run=run or "",
                until=hf.text("until"),
                interval=hf.duration("interval", 2.0) or 0.0,
                timeout=hf.duration("timeout", 120.0) or 0.0,
                capture=_capture(hf),
                env=hf.env(),
                line=hmap.line,
                field_lines={k: hmap.line_of(k) for k in hmap},
            )
        )
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
        reprotect=reprotect,
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
