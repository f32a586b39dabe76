"""Site plans: a runbook some of whose steps are other runbooks (``kind: runbook``).

A site plan is expanded here, at load time, into one runbook of ordinary steps, so the planner,
the executor, the journal and the reports need to know nothing new: every step of a child joins
the parent's DAG as ``<id>/<child-step>`` (nested: ``a/b/step``), and each child's ``health``
becomes check steps ``<id>/health:<name>`` that need every step of that child (the child's RTO
ends when they first hold). What the steps alone cannot say — which child a step belongs to, its
variables, targets and file — is kept in :class:`Child` records on ``Runbook.children``.
Semantics: docs/reference.md, "Site plans".
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from orchestrator.errors import Problem
from orchestrator.model import templating
from orchestrator.model.fields import Where
from orchestrator.model.runbook import FailbackMode, Runbook, Step, StepKind, parse_runbook
from orchestrator.model.templating import StepsView

MAX_DEPTH = 8
HEALTH_PREFIX = "health:"


@dataclass
class Child:
    """One ``kind: runbook`` step of a site plan, expanded: the child runbook and its scope."""

    id: str  # the namespace of its steps: "db", nested "site-a/db"
    runbook: Runbook  # the child as written (its own steps, local ids)
    path: str
    sha256: str
    vars: dict[str, Any]  # the child's vars merged with the including step's overrides
    parent: str | None  # the enclosing child's id; None: the site plan's own step
    line: int  # the kind: runbook step's line in the including file
    steps: list[str] = field(default_factory=list)  # its own steps, namespaced
    health: list[str] = field(default_factory=list)  # its health check steps, namespaced
    every: list[str] = field(default_factory=list)  # every step under it (nested children too)

    @property
    def name(self) -> str:
        return self.runbook.name

    @property
    def prefix(self) -> str:
        return f"{self.id}/"

    def ns(self, local: str | None) -> str | None:
        return None if local is None else self.prefix + local


def child_of(runbook: Runbook, step_id: str | None) -> Child | None:
    """The innermost child a (namespaced) step belongs to; None for the site plan's own."""
    if not step_id or not runbook.children or "/" not in step_id:
        return None
    child: Child | None = runbook.children.get(step_id.removeprefix("undo-").rpartition("/")[0])
    return child


def is_child_health(step_id: str) -> bool:
    return step_id.rpartition("/")[2].startswith(HEALTH_PREFIX) and "/" in step_id


# -- loading ------------------------------------------------------------------------------------


def load_runbook(path: str | Path) -> tuple[Runbook | None, list[Problem]]:
    """Load a runbook; a site plan comes back expanded (its children's steps in its DAG), with
    every problem of every file it includes."""
    runbook, problems = parse_runbook(path)
    if runbook is None or not any(s.kind is StepKind.RUNBOOK for s in runbook.steps):
        return runbook, problems
    includes = {s.id for s in runbook.steps if s.kind is StepKind.RUNBOOK}
    for key in ("rpo_step", "rto_start"):
        ref = getattr(runbook, key)
        if ref in includes:
            problems.append(
                Where(runbook.path).problem(
                    runbook.line_of(key),
                    f"{key} names '{ref}', a kind: runbook step: it has no value or start of "
                    "its own",
                    "leave it out: the site takes its first guarded child's RPO, and its RTO "
                    "starts at its first step",
                )
            )
    expander = _Expander(problems)
    root = expander.tree(runbook, None, "", [os.path.realpath(path)])
    steps = list(expander.wire(root, (), None))
    children = {c.id: c for c in expander.children}
    reprotect = list(runbook.reprotect)
    if runbook.failback is FailbackMode.MIRROR:
        # a mirrored site failback runs every child's reprotect phase first (its own failback
        # mode would apply only when the child runs alone)
        reprotect += _child_reprotect(root, None)
    flat = replace(runbook, steps=steps, children=children, reprotect=reprotect)
    _check_names(runbook, children, problems)
    _lift_rpo(flat, problems)
    return flat, problems


def _lift_rpo(flat: Runbook, problems: list[Problem]) -> None:
    """A site plan that measures no RPO of its own takes its first guarded (else first
    measuring) child's: that child's RPO is the site's, and its RPO guard holds the whole DAG
    (steps needing the child's rpo_step do not start while it is over target)."""
    if flat.rpo_step is not None:
        return
    measuring = [c for c in flat.children.values() if c.runbook.rpo_step is not None]
    guarded = [c for c in measuring if c.runbook.rpo_guard]
    if not measuring:
        return
    chosen = (guarded or measuring)[0]
    rb = chosen.runbook
    flat.rpo_step = chosen.ns(rb.rpo_step)
    flat.rpo_target, flat.rpo_is_bytes, flat.rpo_guard = (
        rb.rpo_target,
        rb.rpo_is_bytes,
        rb.rpo_guard,
    )
    back = rb.failback_rpo_step
    flat.failback_rpo_step = f"undo-{chosen.prefix}{back.removeprefix('undo-')}" if back else None
    for other in guarded[1:]:
        problems.append(
            Where(flat.path, other.id.rpartition("/")[2]).problem(
                other.line,
                f"child '{other.id}' has an rpo_guard too, but only the first guarded child's "
                f"('{chosen.id}') holds the site plan; '{other.id}''s RPO is still reported",
                severity="warning",
            )
        )


@dataclass
class _Node:
    runbook: Runbook
    child: Child | None
    prefix: str
    nested: dict[str, _Node] = field(default_factory=dict)

    def every(self) -> list[str]:
        """Every step id under this node (its own, its health, its nested children's)."""
        ids: list[str] = []
        for s in self.runbook.steps:
            if s.kind is StepKind.RUNBOOK:
                if s.id in self.nested:
                    ids.extend(self.nested[s.id].every())
            else:
                ids.append(self.prefix + s.id)
        if self.child is not None:
            ids.extend(self.child.health)
        return ids


class _Expander:
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        self._seen: set[Problem] = set(problems)
        self.children: list[Child] = []

    def _add(self, problems: list[Problem]) -> None:
        for p in problems:  # a child included twice reports its own problems once
            if p not in self._seen:
                self._seen.add(p)
                self.problems.append(p)

    def tree(self, runbook: Runbook, child: Child | None, prefix: str, chain: list[str]) -> _Node:
        node = _Node(runbook, child, prefix)
        for step in runbook.steps:
            if step.kind is not StepKind.RUNBOOK or step.runbook is None:
                continue
            where = Where(runbook.path, step.id)
            line = step.line_of("runbook")
            path = Path(runbook.path).parent / step.runbook
            real = os.path.realpath(path)
            if real in chain:
                files = [*chain[chain.index(real) :], real]
                self._add(
                    [
                        where.problem(
                            line,
                            "include cycle: " + " → ".join(_short(f, chain) for f in files),
                            "a runbook cannot (transitively) include itself",
                        )
                    ]
                )
                continue
            if len(chain) > MAX_DEPTH:
                self._add(
                    [
                        where.problem(
                            line,
                            f"site plans nest at most {MAX_DEPTH} deep: "
                            + " → ".join(_short(f, chain) for f in [*chain, real]),
                        )
                    ]
                )
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                self._add(
                    [where.problem(line, f"cannot read child runbook '{step.runbook}': {reason}")]
                )
                continue
            parsed, problems = parse_runbook(path)
            self._add(problems)
            if parsed is None:
                continue
            parsed.path = str(path)
            cid = prefix + step.id
            record = Child(
                id=cid,
                runbook=parsed,
                path=str(path),
                sha256=hashlib.sha256(data).hexdigest(),
                vars={**parsed.vars, **step.vars},
                parent=child.id if child is not None else None,
                line=step.line,
            )
            self.children.append(record)
            if parsed.name == runbook.name:
                self._add(
                    [
                        where.problem(
                            line,
                            f"child runbook '{step.runbook}' has the same name as the runbook "
                            f"that includes it ('{parsed.name}'): the state of one would be "
                            "the other's",
                            "give each runbook its own name",
                        )
                    ]
                )
            for h in parsed.health:
                if "/" in h.name or h.name.strip(".") == "":
                    # the name becomes a step id and a directory of the run's output
                    self._add(
                        [
                            Where(str(path)).problem(
                                h.line_of("name"),
                                f"health name '{h.name}' cannot be a step of a site plan: "
                                "no '/', and not only dots",
                            )
                        ]
                    )
            record.health = [
                f"{cid}/{HEALTH_PREFIX}{h.name}"
                for h in parsed.health
                if "/" not in h.name and h.name.strip(".")
            ]
            node.nested[step.id] = self.tree(parsed, record, cid + "/", [*chain, real])
        return node

    def wire(self, node: _Node, inherited: tuple[str, ...], when: str | None) -> Iterator[Step]:
        """The node's steps as ordinary steps with namespaced ids and needs."""
        rb, prefix = node.runbook, node.prefix
        includes = {s.id for s in rb.steps if s.kind is StepKind.RUNBOOK}

        def needs_of(step: Step) -> tuple[str, ...]:
            if not step.needs:
                return inherited
            out: list[str] = []
            for need in step.needs:
                if need in node.nested:
                    out.extend(node.nested[need].every())
                elif need in includes:
                    continue  # a child that could not be loaded (reported already)
                else:
                    out.append(prefix + need)
            return tuple(out)

        own: list[str] = []
        for step in rb.steps:
            needs = needs_of(step)
            cond = _both(when, step.when)
            if step.kind is StepKind.RUNBOOK:
                if step.id in node.nested:
                    yield from self.wire(node.nested[step.id], needs, cond)
                continue
            sid = prefix + step.id
            own.append(sid)
            undo = _copy(step.undo, id=sid) if step.undo is not None else None
            yield _copy(step, id=sid, needs=needs, when=cond, undo=undo)
        child = node.child
        if child is None:
            return
        child.steps = own
        child.every = [s for s in node.every() if s not in child.health]
        for hc, hid in zip(rb.health, child.health, strict=True):
            check = replace(hc.as_step(), id=hid, name=f"{child.id} health {hc.name}")
            # the undo polls the same health at the site a failback returns the child to
            yield replace(check, needs=tuple(child.every) or inherited, when=when, undo=check)


def _child_reprotect(node: _Node, when: str | None) -> list[Step]:
    """The reprotect steps of every child under ``node``, in include order, namespaced like
    their steps (``db/rejoin-target``), their ``needs`` too; the including steps' ``when``
    joined to theirs."""
    out: list[Step] = []
    for step in node.runbook.steps:
        nested = node.nested.get(step.id) if step.kind is StepKind.RUNBOOK else None
        if nested is None:
            continue
        cond = _both(when, step.when)
        prefix = nested.prefix
        for r in nested.runbook.reprotect:
            undo = _copy(r.undo, id=prefix + r.id) if r.undo is not None else None
            needs = tuple(prefix + n for n in r.needs)
            out.append(_copy(r, id=prefix + r.id, needs=needs, when=_both(cond, r.when), undo=undo))
        out += _child_reprotect(nested, cond)
    return out


def _copy(step: Step, **changes: Any) -> Step:
    """``dataclasses.replace`` without re-running ``__init__`` (2,000 steps of a site plan are
    copied at every load; the fields are all already checked)."""
    new = object.__new__(Step)
    for name in _STEP_SLOTS:  # Step is slotted (memory per step at scale): no __dict__
        object.__setattr__(new, name, changes[name] if name in changes else getattr(step, name))
    return new


_STEP_SLOTS = tuple(f.name for f in fields(Step))


def _both(outer: str | None, inner: str | None) -> str | None:
    if outer is None or inner is None:
        return outer or inner
    return f"({outer}) and ({inner})"


def _short(path: str, chain: list[str]) -> str:
    """A file of an include chain, relative to the directory of the site plan."""
    try:
        return os.path.relpath(path, os.path.dirname(chain[0]))
    except ValueError:
        return path


def _check_names(runbook: Runbook, children: dict[str, Child], problems: list[Problem]) -> None:
    """Two children with the same ``name`` would write one state entry for two services."""
    first: dict[str, Child] = {}
    for child in children.values():
        other = first.setdefault(child.name, child)
        if other is child:
            continue
        if (
            os.path.realpath(other.path) == os.path.realpath(child.path)
            and other.vars == child.vars
        ):
            continue  # the same service included twice is reported nowhere as two
        including = children.get(child.parent) if child.parent else None
        file = including.path if including is not None else runbook.path
        problems.append(
            Where(file, child.id.rpartition("/")[2]).problem(
                child.line,
                f"children '{other.id}' and '{child.id}' both have the name '{child.name}' "
                "(different runbooks or vars): their active site would be one state entry",
                "give each child runbook its own name",
            )
        )


# -- templates ------------------------------------------------------------------------------------


class ChildSteps(Mapping[str, Any]):
    """``steps`` in a child's templates: ``steps['x']`` names the child's own step ``x``."""

    def __init__(self, view: Mapping[str, Any], prefix: str):
        self._view, self._prefix = view, prefix

    def __getitem__(self, key: str) -> Any:
        try:
            return self._view[self._prefix + key]
        except templating.StepAccessError:
            return self._view[key]

    def __iter__(self) -> Iterator[str]:
        return (k.removeprefix(self._prefix) for k in self._view)

    def __len__(self) -> int:
        return len(self._view)


def scope_for(runbook: Runbook, steps: StepsView | None) -> Child | None:
    """The child whose templates are being rendered (from the step the ``steps`` view is for)."""
    if steps is None or not runbook.children:
        return None
    return child_of(runbook, steps.for_step)
