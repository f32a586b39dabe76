"""Runbook + inventory + direction + target → the plan: a DAG of steps (plan/dag.py) resolved to hosts,
waves, predicted durations, the predicted RTO and its critical path. Also the reverse plan of a
failback, derived from what a failover run did.

Every cross-file check (needs, cycles, selectors, templates) happens here, all problems collected
at once, before anything connects to a host.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from orchestrator.bulk import paused_gc
from orchestrator.errors import Problem, UsageError, ValidationError
from orchestrator.kinds import kind_of
from orchestrator.model import templating
from orchestrator.model.fields import Where, suggest
from orchestrator.model.inventory import (
    Host,
    Inventory,
    SelectorError,
    as_dict,
    select,
    site_dict,
)
from orchestrator.model.runbook import (
    FailbackMode,
    HealthCheck,
    Mode,
    Probe,
    Runbook,
    RunbookOnFailure,
    Step,
)
from orchestrator.model.siteplan import ChildSteps, is_child_health, scope_for
from orchestrator.model.templating import (
    Placeholder,
    Redactor,
    StepsView,
    collect_secrets,
    evaluate,
    expression_hint,
    is_secret_name,
    render,
    unquoted_step_outputs,
)
from orchestrator.plan.dag import Dag
from orchestrator.record.outcomes import Status, StepOutcome
from orchestrator.vocab import Direction

if TYPE_CHECKING:
    import jinja2
else:
    from orchestrator.model.templating import jinja2  # imported when first used

FAILOVER = Direction.FAILOVER
FAILBACK = Direction.FAILBACK
REPROTECT = Direction.REPROTECT
UNDO = "undo"
MIRROR = "mirror"


@dataclass(slots=True)  # slots: one per step of the plan, and plans get big
class PlanStep:
    """One node of the plan: a step resolved to hosts, with its place in the DAG."""

    id: str
    step: Step
    hosts: list[Host]
    needs: list[str]
    wave: int = 0
    index: int = 0  # declaration order: ready steps start in this order
    predicted_s: float | None = None
    prediction_source: str = "unknown"  # history | expect | unknown
    undo_of: str | None = None
    outcome_unknown: bool = False
    #: ``reprotect``: a step of the reprotect phase (a mirrored failback runs it first, outside
    #: its RTO); None: a step of ``steps`` or an undo
    phase: str | None = None
    #: hosts decided at run time: the steps whose results the ``hosts`` template reads (the
    #: step's ``hosts`` are then its candidates, pre-flighted; it runs on those it resolves to)
    decided_by: list[str] | None = None
    #: a step this run takes over, done, from an earlier run (a reprotect a failback carries)
    carried_from: str | None = None
    #: steps whose templates this one may read (its transitive needs; for an undo, the failover
    #: ancestors of the step it undoes, and that step itself)
    readable: AbstractSet[str] = frozenset()
    #: how each host's command reads in a preview (secrets redacted, run-time values as <…>)
    preview: dict[str, str] = field(default_factory=dict)
    prompt: str | None = None  # the rendered prompt of a manual step
    active: str | None = None  # what ``active`` means in its templates (health after a run)
    #: why the step will be skipped whatever happens (``only`` another mode), or None
    skipped: str | None = None

    @property
    def kind(self) -> str:
        return self.step.kind


def only_skips(step: Step, mode: str) -> str | None:
    """Why ``step`` is skipped in a run of ``mode`` (its ``only`` names the other mode)."""
    if step.only is None or step.only.value == mode:
        return None
    if step.only is Mode.DRILL:
        return "only: drill (this run is not a drill)"
    return "only: real (this run is a drill)"


@dataclass
class ProbePlan:
    """A probe resolved to the hosts it polls from."""

    probe: Probe
    hosts: list[Host]


@dataclass
class HealthPlan:
    """A health entry resolved to hosts, for the check before a run and the poll after it."""

    check: HealthCheck
    hosts_before: list[Host]
    hosts_after: list[Host]


@dataclass
class CheckPlan:
    """A readiness entry (or the rpo_probe) resolved to hosts: run once by ``drx check``."""

    check: HealthCheck
    hosts: list[Host]


@dataclass
class Plan:
    runbook: Runbook
    inventory: Inventory
    direction: str
    source: str
    target: str
    steps: dict[str, PlanStep]  # declaration order
    graph: Dag
    waves: list[list[str]]
    health: list[HealthPlan]
    vars: dict[str, Any]  # runbook < inventory < --var (site and host vars are added per host)
    redactor: Redactor
    emergency: bool = False
    run_id: str = "<run-id>"
    predicted_rto_s: float = 0.0
    predicted_rto_is_lower_bound: bool = True
    #: of the predicted RTO, the time people spend answering manual gates on the critical path
    predicted_operator_s: float = 0.0
    predicted_health_s: float | None = None
    critical_path: list[str] = field(default_factory=list)
    parent_run: str | None = None
    resumes: str | None = None  # the run this plan continues (drx resume)
    reverses: str | None = None  # a failback: the failover run it reverses
    left_out: list[dict[str, str]] = field(default_factory=list)  # failback: steps not undone
    warnings: list[Problem] = field(default_factory=list)
    cli_vars: dict[str, Any] = field(default_factory=dict)
    notify: list[str] = field(default_factory=list)  # rendered notification URLs
    readiness: list[CheckPlan] = field(default_factory=list)
    rpo_probe: CheckPlan | None = None
    mode: str = Mode.REAL.value  # "drill" in every run of a drill, else "real"
    #: the drill this run belongs to (the failover leg's run id), or None
    drill_id: str | None = None
    rollback: bool = False  # a failback that rolls back a failed or cancelled failover
    probes: list[ProbePlan] = field(default_factory=list)
    #: a site plan: each child's health, polled at the source before a failover (plan/site.py)
    source_health: list[PlanStep] = field(default_factory=list)
    #: a failback's mode: ``undo`` (the reverse plan; source/target keep the failover's names)
    #: or ``mirror`` (the runbook's steps from the failover's target back to its source)
    failback_mode: str | None = None
    #: a mirrored failback: the predicted time of its reprotect phase (not part of the RTO)
    predicted_reprotect_s: float | None = None

    @property
    def runs_forward(self) -> bool:
        """The runbook's own steps, from ``source`` to ``target`` (a failover, or a mirrored
        failback)."""
        return self.direction == FAILOVER or self.failback_mode == MIRROR

    @property
    def to_site(self) -> str:
        """The site this run moves the service to (a reprotect: the site it makes a replica
        again; the service does not move)."""
        return self.target if self.runs_forward or self.direction == REPROTECT else self.source

    @property
    def from_site(self) -> str:
        return self.source if self.runs_forward else self.target

    def commands(self) -> Iterator[tuple[PlanStep, Host, bool]]:
        """Each step that runs a command, on each of its hosts, and whether the step polls (a
        check: many commands, answered at once) — what the run will spool, host by host."""
        for ps in self.steps.values():
            if ps.step.run:
                polls = kind_of(ps.kind).polls
                for host in ps.hosts:
                    yield ps, host, polls

    def hosts(self) -> list[Host]:
        """Every host the run will touch (steps and health), in inventory order, control first."""
        seen: dict[str, Host] = {}
        for ps in self.steps.values():
            for h in ps.hosts:
                seen.setdefault(h.name, h)
        for hp in self.health:
            for h in (*hp.hosts_before, *hp.hosts_after):
                seen.setdefault(h.name, h)
        for pp in self.probes:
            for h in pp.hosts:
                seen.setdefault(h.name, h)
        for ps in self.source_health:
            for h in ps.hosts:
                seen.setdefault(h.name, h)
        order = self.inventory.order
        return sorted(seen.values(), key=lambda h: order.get(h.name, 10**9))

    # -- template context -------------------------------------------------------------------
    def context(
        self,
        *,
        host: Host | None = None,
        steps: StepsView | None = None,
        active: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The template context of SPEC §4 for one host (or none)."""
        variables = self.vars
        own_vars = self.runbook.vars
        view: Mapping[str, Any] = steps if steps is not None else StepsView(())
        child = scope_for(self.runbook, steps)
        if child is not None:  # a child's templates read its vars and name its steps
            own_vars = child.vars
            variables = {**child.vars, **self.inventory.vars, **self.cli_vars}
            view = ChildSteps(view, child.prefix)
        if host is not None and host.site is not None:
            site = self.inventory.sites[host.site]
            variables = {
                **own_vars,
                **self.inventory.vars,
                **site.vars,
                **host.vars,
                **self.cli_vars,
            }
        aliases = self.aliases(active)
        inventory = self.inventory

        def site_fn(name: str) -> dict[str, Any]:
            real = aliases.get(name, name)
            if real not in inventory.sites:
                raise jinja2.exceptions.UndefinedError(f"site({name!r}): no such site")
            return site_dict(inventory, real)

        def hosts_fn(selector: str) -> list[dict[str, Any]]:
            try:
                return [as_dict(h) for h in select(inventory, selector, aliases)]
            except SelectorError as exc:
                raise jinja2.exceptions.UndefinedError(f"hosts({selector!r}): {exc}") from None

        ctx: dict[str, Any] = {
            "source": self.source,
            "target": self.target,
            "active": aliases["active"],
            "direction": self.direction,
            "run_id": self.run_id,
            "emergency": self.emergency,
            "mode": self.mode,
            "vars": variables,
            "site": site_fn,
            "hosts": hosts_fn,
            "steps": view,
        }
        if host is not None:
            ctx["host"] = as_dict(host)
        if extra:
            ctx.update(extra)
        return ctx

    def aliases(self, active: str | None = None) -> dict[str, str]:
        return {"source": self.source, "target": self.target, "active": active or self.from_site}


# -- building ---------------------------------------------------------------------------------


def merged_vars(
    runbook: Runbook, inventory: Inventory, cli_vars: Mapping[str, Any]
) -> dict[str, Any]:
    return {**runbook.vars, **inventory.vars, **cli_vars}


def _problem(
    runbook: Runbook, step: str | None, line: int, message: str, hint: str | None = None
) -> Problem:
    return Where(runbook.file_of(step), step).problem(line, message, hint)


def _dag(runbook: Runbook, problems: list[Problem]) -> Dag:
    """The DAG of the runbook's steps, recording unknown/self needs and cycles as problems."""
    graph = Dag()
    ids = [s.id for s in runbook.steps]
    known = set(ids)
    for index, step in enumerate(runbook.steps):
        graph.add_node(step.id, index=index)
    for step in runbook.steps:
        for need in step.needs:
            line = step.line_of("needs")
            if need == step.id:
                problems.append(_problem(runbook, step.id, line, "a step cannot need itself"))
            elif need not in known:
                problems.append(
                    _problem(
                        runbook,
                        step.id,
                        line,
                        f"needs unknown step '{need}'",
                        suggest(need, ids),
                    )
                )
            else:
                graph.add_edge(need, step.id)
    if not graph.is_acyclic():
        _cycles(runbook, graph, ids, problems)
    return graph


def _cycles(runbook: Runbook, dag: Dag, ids: list[str], problems: list[Problem]) -> None:
    """One problem per cycle of the needs, found by networkx: one cycle per strongly connected
    component (linear time; enumerating every simple cycle can take exponential time on a
    tangle of needs), first-declared component first."""
    import networkx as nx

    graph = dag.to_networkx()
    order = {s: i for i, s in enumerate(ids)}
    tangles = [c for c in nx.strongly_connected_components(graph) if len(c) > 1]
    tangles.sort(key=lambda c: min(order[n] for n in c))
    for component in tangles[:20]:
        first_id = min(component, key=order.__getitem__)
        edges = nx.find_cycle(graph.subgraph(component), source=first_id)
        cycle = [u for u, _ in edges]
        # start the cycle at its first step in declaration order, follow the needs
        start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
        path = cycle[start:] + cycle[:start]
        first = runbook.step(path[0])
        problems.append(
            _problem(
                runbook,
                first.id,
                first.line_of("needs"),
                "dependency cycle: " + " → ".join([*path, path[0]]),
                "a step cannot (transitively) need itself",
            )
        )


class CycleError(ValueError):
    """A graph expected to be acyclic has a cycle (``topological``)."""


def topological(graph: Dag) -> list[str]:
    """Topological order that is stable: ties broken by declaration order (networkx's
    ``lexicographical_topological_sort``, without its per-node overhead: it was a quarter of
    planning 10,000 steps). A cycle raises ``CycleError``."""
    index = dict(graph.nodes(data="index"))
    waiting = {node: len(preds) for node, preds in graph.pred.items()}
    ready = [(index[node], node) for node, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    successors = graph.succ
    while ready:
        node = heapq.heappop(ready)[1]
        order.append(node)
        for child in successors[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (index[child], child))
    if len(order) != len(waiting):
        raise CycleError("the graph contains a cycle")
    return order


def compute_waves(graph: Dag, order: list[str]) -> dict[str, int]:
    wave: dict[str, int] = {}
    for node in order:
        preds = list(graph.predecessors(node))
        wave[node] = 1 + max(wave[p] for p in preds) if preds else 0
    return wave


def longest_path(
    graph: Dag, order: list[str], weight: Callable[[str], float]
) -> tuple[float, list[str]]:
    """The heaviest path (sum of node weights) from a source to a sink; ties → more steps, then
    declaration order."""
    best: dict[str, tuple[float, int, str | None]] = {}
    for node in order:
        w = weight(node)
        preds = sorted(graph.predecessors(node), key=lambda n: graph.nodes[n]["index"])
        if preds:
            # max() keeps the first of equals: ties go to the earlier-declared need
            p = max(preds, key=lambda n: (round(best[n][0], 9), best[n][1]))
            best[node] = (best[p][0] + w, best[p][1] + 1, p)
        else:
            best[node] = (w, 1, None)
    if not best:
        return 0.0, []
    position = {n: i for i, n in enumerate(order)}
    sinks = [n for n in order if graph.out_degree(n) == 0]
    end = max(sinks, key=lambda n: (round(best[n][0], 9), best[n][1], -position[n]))
    path = [end]
    while best[path[-1]][2] is not None:
        path.append(best[path[-1]][2])  # type: ignore[arg-type]
    path.reverse()
    return best[end][0], path


class Ancestors(AbstractSet[str]):
    """A step's transitive needs (the ``steps[…]`` its templates may read), found in the graph
    when asked rather than computed for every step up front: held for every step of a 100,000-
    step plan, the sets (even as bitmasks) grew with the square of the plan, ~600 MB. ``x in``
    is a path search from ``x``; iterating computes the set once. A step in a cycle (reported
    as an error) reads its whole cycle, but itself only when ``with_`` adds it."""

    __slots__ = ("_extra", "_found", "_graph", "_node")

    def __init__(self, graph: Dag, node: str, extra: frozenset[str] = frozenset()):
        self._graph, self._node, self._extra = graph, node, extra
        self._found: frozenset[str] | None = None

    def _all(self) -> frozenset[str]:
        if self._found is None:
            found = self._graph.ancestors(self._node) if self._node in self._graph else set()
            found.discard(self._node)
            self._found = frozenset(found) | self._extra
        return self._found

    def __contains__(self, item: object) -> bool:
        if item in self._extra:
            return True
        if self._found is not None:
            return item in self._found
        graph, node = self._graph, self._node
        if not isinstance(item, str) or item == node or item not in graph or node not in graph:
            return False
        return graph.has_path(item, node)

    def __iter__(self) -> Iterator[str]:
        nodes = self._graph.nodes
        return iter(sorted(self._all(), key=lambda n: nodes[n]["index"] if n in nodes else -1))

    def __len__(self) -> int:
        return len(self._all())

    def with_(self, item: str) -> Ancestors:
        return Ancestors(self._graph, self._node, self._extra | {item})


_STEP_REF = re.compile(r"""steps\s*(?:\[\s*['"]([^'"]+)['"]\s*\]|\.\s*([A-Za-z_][\w]*))""")


def _candidates(
    runbook: Runbook,
    inventory: Inventory,
    step: Step,
    aliases: dict[str, str],
    problems: list[Problem],
) -> tuple[list[Host], list[str]]:
    """A step whose hosts are decided at run time: its candidates (``candidates``, else every
    host of the run's two sites), and the steps its ``hosts`` template reads."""

    def report(message: str, hint: str | None) -> None:
        problems.append(
            _problem(runbook, step.id, step.line_of("candidates"), f"candidates: {message}", hint)
        )

    selectors = step.candidates or (f"@{aliases['source']}", f"@{aliases['target']}")
    hosts = _resolve(inventory, selectors, aliases, report)
    read: list[str] = []
    for text in step.hosts:
        for a, b in _STEP_REF.findall(text):
            if (a or b) not in read:
                read.append(a or b)
    return hosts, read or list(step.needs)


_READS_STEPS = re.compile(r"\bsteps\b")


def resolve_durations(
    step: Step, ctx: Mapping[str, Any], *, run_time: bool
) -> tuple[Step, list[tuple[str, str]]]:
    """``step`` with its templated durations rendered in ``ctx`` and parsed; and a problem
    (field, message) for each that renders to something that is not a duration. At plan time
    (``run_time`` false) only those that do not read ``steps`` are rendered; the others stay
    for the step's start."""
    from orchestrator.model.units import parse_duration

    values: dict[str, Any] = {}
    left: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for key, text in step.duration_templates.items():
        if not run_time and _READS_STEPS.search(text):
            left[key] = text
            continue
        try:
            rendered = render(text, ctx).strip()
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            problems.append((key, f"{key}: {exc}"))
            continue
        try:
            values[key] = parse_duration(rendered)
        except ValueError as exc:
            problems.append((key, f"{key} renders to {rendered!r}, not a duration: {exc}"))
    if not values and left == step.duration_templates:
        return step, problems
    return replace(step, duration_templates=left, **values), problems


def _with(readable: AbstractSet[str], item: str) -> AbstractSet[str]:
    return readable.with_(item) if isinstance(readable, Ancestors) else readable | {item}


def _resolve(
    inventory: Inventory,
    selectors: Iterable[str],
    aliases: dict[str, str],
    report: Callable[[str, str | None], None],
) -> list[Host]:
    hosts: dict[str, Host] = {}
    for text in selectors:
        try:
            for h in select(inventory, text, aliases):
                hosts.setdefault(h.name, h)
        except SelectorError as exc:
            report(str(exc), exc.hint)
    return sorted(hosts.values(), key=lambda h: inventory.order.get(h.name, 0))


class _Checker:
    """Renders every template of a plan in its context, turning errors into problems."""

    def __init__(self, plan: Plan, problems: list[Problem]):
        self.plan = plan
        self.problems = problems
        self._seen = set(problems)  # a set: a membership scan of the list is quadratic
        self.file: str | None = None  # the file of the template being checked (default runbook)
        #: expression values per scope (``render``'s memo): a host's commands share them
        self.memo: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def template(
        self,
        step_id: str | None,
        line: int,
        what: str,
        source: str | None,
        ctx: Mapping[str, Any],
        *,
        expression: bool = False,
        file: str | None = None,
        scope: Any = None,
    ) -> str | None:
        """Render ``source`` in ``ctx``; a ``scope`` (see ``render``) shares expression values
        with every other context of that scope."""
        if source is None:
            return None
        self.file = file
        try:
            if expression:
                evaluate(source, ctx)
                return source
            if scope is not None:
                return render(source, ctx, self.memo, scope)
            return render(source, ctx)
        except templating.StepAccessError as exc:
            self._add(step_id, line, f"{what}: {exc.message}")
        except jinja2.exceptions.UndefinedError as exc:
            self._add(
                step_id, line, f"{what}: undefined name: {exc.message}", _did_you_mean(exc, ctx)
            )
        except jinja2.exceptions.TemplateSyntaxError as exc:
            self._add(
                step_id,
                line + (exc.lineno or 1) - 1,
                f"{what}: template syntax error: {exc.message}",
                expression_hint(source, exc.message or "") if expression else None,
            )
        except Exception as exc:
            if "steps" in source:
                return source  # it may only fail on run-time placeholders; decided at run time
            self._add(step_id, line, f"{what}: {exc}")
        return None

    def _add(self, step_id: str | None, line: int, message: str, hint: str | None = None) -> None:
        file = self.file or self.plan.runbook.file_of(step_id)
        problem = Where(file, step_id).problem(line, message, hint)
        if problem not in self._seen:
            self._seen.add(problem)
            self.problems.append(problem)


_MISSING = re.compile(r"has no attribute '([^']+)'|'([^']+)' is undefined")


def _did_you_mean(exc: jinja2.exceptions.UndefinedError, ctx: Mapping[str, Any]) -> str | None:
    """A hint for a misspelt name: the closest template name, variable, or host/site field."""
    match = _MISSING.search(exc.message or "")
    if not match:
        return None
    name = match.group(1) or match.group(2)
    if match.group(2) is not None:  # a top-level name: perhaps a variable written bare
        for scope in ("vars", "host.vars"):
            value = ctx.get("vars") if scope == "vars" else (ctx.get("host") or {}).get("vars")
            if isinstance(value, Mapping) and name in value:
                return f"variables are read through {scope}: write {scope}.{name}"
        if name in ("null", "nil"):
            return "write none"
    known: set[str] = set(ctx)
    for key in ("vars", "host"):
        value = ctx.get(key)
        if isinstance(value, Mapping):
            known.update(str(k) for k in value)
    host = ctx.get("host")
    if isinstance(host, Mapping) and isinstance(host.get("vars"), Mapping):
        known.update(str(k) for k in host["vars"])
    return suggest(name, sorted(known))


_UNTIL_PREVIEW = {"rc": 0, "stdout": "", "stderr": "", "value": Placeholder("value")}


def _check_step_templates(
    checker: _Checker, plan: Plan, ps: PlanStep, step: Step, label: str
) -> dict[str, str]:
    """Render run/prompt/when/until of ``step`` for each of its hosts; return the previews."""
    steps_view = StepsView(ps.readable, for_step=ps.undo_of or ps.id)
    base = _LazyContext(partial(plan.context, steps=steps_view))
    child = scope_for(plan.runbook, steps_view)
    previews: dict[str, str] = {}
    prefix = "undo " if label == "undo" else ""
    name = ps.undo_of or ps.id  # problems name the step as the runbook file does
    # plain text (most names and commands) renders as itself: no context, no call
    prompt: str | None = step.prompt or step.name
    if prompt is not None and "{" in prompt:
        prompt = checker.template(name, step.line_of("prompt"), f"{prefix}prompt", prompt, base)
    if prompt is not None:
        ps.prompt = plan.redactor(prompt)
    if step.when is not None:
        checker.template(
            name, step.line_of("when"), f"{prefix}when", step.when, base, expression=True
        )
    if step.until is None and "{" not in (step.run or "") and not _any_brace(step.env):
        if step.run is not None:
            shown = plan.redactor(step.run)
            previews = {host.name: shown for host in ps.hosts}
        return previews
    # A template that names neither ``host`` nor a variable a host or site could change
    # renders the same on every host of a site: render it once per such group.
    done: dict[tuple[str | None, str | None], str | None] = {}
    per_host = any(
        "host" in text for text in (step.run or "", step.until or "", *step.env.values())
    )
    for host in ps.hosts:
        key = (
            host.site if host.site and plan.inventory.sites[host.site].vars else None,
            host.name if per_host or host.vars else None,
        )
        if key in done:
            if done[key] is not None:
                previews[host.name] = done[key]  # type: ignore[assignment]
            continue
        ctx = _LazyContext(partial(plan.context, host=host, steps=steps_view))
        # the contexts of one host and one scope (runbook or child) differ only in ``steps``
        scope = (host.name, id(child))
        rendered = checker.template(
            name, step.line_of("run"), f"{prefix}run", step.run, ctx, scope=scope
        )
        if rendered is not None:
            previews[host.name] = plan.redactor(rendered)
        done[key] = previews.get(host.name)
        for var, value in step.env.items():
            checker.template(
                name, step.line_of("env"), f"{prefix}env {var}", value, ctx, scope=scope
            )
        if step.until is not None:
            checker.template(
                name,
                step.line_of("until"),
                f"{prefix}until",
                step.until,
                {**ctx, **_UNTIL_PREVIEW},
                expression=True,
            )
    return previews


def _any_brace(env: Mapping[str, str]) -> bool:
    return any("{" in value for value in env.values())


class _LazyContext(Mapping[str, Any]):
    """A template context built on first use: most templates of a plan are plain text, or
    take their values from the checker's memo, and never read it (building one per host of
    every step was a third of planning 10,000 steps)."""

    def __init__(self, make: Callable[[], dict[str, Any]]) -> None:
        self._make = make
        self._ctx: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any]:
        if self._ctx is None:
            self._ctx = self._make()
        return self._ctx

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


@paused_gc()
def build_plan(
    runbook: Runbook,
    inventory: Inventory,
    target: str,
    *,
    direction: str = FAILOVER,
    source: str | None = None,
    cli_vars: Mapping[str, Any] | None = None,
    secrets: Iterable[str] = (),
    emergency: bool = False,
    predictions: Mapping[str, float] | None = None,
    predicted_health_s: float | None = None,
    check_undo: bool = True,
    mode: str = Mode.REAL.value,
    failback_mode: str | None = None,
) -> Plan:
    """The failover plan to ``target`` (or, with ``failback_mode`` mirror, a failback that runs
    the same steps); raise ValidationError with every problem found."""
    problems: list[Problem] = []
    cli_vars = dict(cli_vars or {})
    source = source or inventory.active
    graph = _dag(runbook, problems)
    variables = merged_vars(runbook, inventory, cli_vars)
    all_vars: dict[str, Any] = dict(variables)
    for site in inventory.sites.values():
        all_vars[f"site:{site.name}"] = site.vars
        for h in site.hosts:
            all_vars[f"host:{h.name}"] = h.vars
    redactor = Redactor(collect_secrets(all_vars, secrets))
    plan = Plan(
        runbook=runbook,
        inventory=inventory,
        direction=direction,
        source=source,
        target=target,
        steps={},
        graph=graph,
        waves=[],
        health=[],
        vars=variables,
        redactor=redactor,
        emergency=emergency,
        cli_vars=cli_vars,
        predicted_health_s=predicted_health_s,
        mode=mode,
        failback_mode=failback_mode,
    )
    aliases = plan.aliases()
    for index, step in enumerate(runbook.steps):

        def report(message: str, hint: str | None, _s: Step = step) -> None:
            problems.append(_problem(runbook, _s.id, _s.line_of("hosts"), message, hint))

        # a child's health is polled where the run moves the child (``active`` there)
        where = plan.aliases(plan.to_site) if is_child_health(step.id) else aliases
        decided_by: list[str] | None = None
        if step.runs_commands and step.hosts_at_run_time:
            hosts, decided_by = _candidates(runbook, inventory, step, where, problems)
        elif step.runs_commands:
            hosts = _resolve(inventory, step.hosts, where, report)
        else:
            hosts = []
        ps = PlanStep(
            id=step.id,
            step=step,
            hosts=hosts,
            needs=[n for n in step.needs if n in graph and n != step.id],
            index=index,
            readable=Ancestors(graph, step.id),
            skipped=only_skips(step, mode),
            active=plan.to_site if is_child_health(step.id) else None,  # a child's health
            decided_by=decided_by,
        )
        plan.steps[step.id] = ps
        mirror = runbook.failback is FailbackMode.MIRROR
        for line, warning in kind_of(step.kind).plan_warnings(step, mirror=mirror):
            plan.warnings.append(
                Where(runbook.file_of(step.id), step.id).problem(line, warning, severity="warning")
            )
        if step.run and unquoted_step_outputs(step.run):
            plan.warnings.append(
                Where(runbook.path, step.id).problem(
                    step.line_of("run"),
                    "run interpolates a step's output without '| quote': what a host printed "
                    "would run as shell text here",
                    "write {{ steps['ID'].stdout | quote }} (or | int for a number)",
                    severity="warning",
                )
            )
    if runbook.failback is FailbackMode.MIRROR and not any(s.undo for s in runbook.steps):
        plan.warnings.append(
            Where(runbook.path, None).problem(
                runbook.line_of("failback"),
                "failback: mirror, but no step has an 'undo': a failover that stops half-way "
                "could then only be resumed, not rolled back",
                severity="warning",
            )
        )
    for hc in runbook.health:

        def hreport(message: str, hint: str | None, _h: HealthCheck = hc) -> None:
            problems.append(
                _problem(runbook, None, _h.line_of("hosts"), f"health '{_h.name}': {message}", hint)
            )

        count = len(problems)
        before = _resolve(inventory, hc.hosts, plan.aliases(plan.from_site), hreport)
        before_failed = len(problems) > count

        def hreport_after(
            message: str, hint: str | None, _h: HealthCheck = hc, _skip: bool = before_failed
        ) -> None:
            if _skip:
                return  # the same selector failed already; one problem is enough
            problems.append(
                _problem(
                    runbook,
                    None,
                    _h.line_of("hosts"),
                    f"health '{_h.name}': {message} (polled there after the run)",
                    hint,
                )
            )

        after = _resolve(inventory, hc.hosts, plan.aliases(plan.to_site), hreport_after)
        plan.health.append(HealthPlan(hc, before, after))
    if runbook.on_failure is RunbookOnFailure.ROLLBACK and not runbook.has_undo:
        plan.warnings.append(
            Where(runbook.path, None).problem(
                runbook.line_of("on_failure"),
                "on_failure: rollback, but no step has an 'undo': nothing to roll back",
                severity="warning",
            )
        )
    plan.probes = _probe_plans(plan, problems)
    # templates are checked even when a cycle is reported: every problem at once
    checker = _Checker(plan, problems)
    back: Plan | None = None
    for ps in plan.steps.values():
        if ps.decided_by is not None:
            # the hosts template may read only the steps the step needs
            view = StepsView(frozenset(ps.step.needs), for_step=ps.id)
            for text in ps.step.hosts:
                checker.template(
                    ps.id, ps.step.line_of("hosts"), "hosts", text, plan.context(steps=view)
                )
        if ps.step.duration_templates:
            ps.step, bad = resolve_durations(ps.step, plan.context(), run_time=False)
            for key, message in bad:
                problems.append(_problem(runbook, ps.id, ps.step.line_of(key), message))
        ps.preview = _check_step_templates(checker, plan, ps, ps.step, "run")
        undo = ps.step.undo
        if check_undo and undo is not None:
            if back is None:
                back = replace(plan, direction=FAILBACK)
            _check_undo(checker, back, ps, undo, problems)
    for hp in plan.health:
        for hosts, active in (
            (hp.hosts_before, plan.from_site),
            (hp.hosts_after, plan.to_site),
        ):
            for host in hosts:
                ctx = plan.context(host=host, active=active)
                line = hp.check.line_of("run")
                checker.template(None, line, f"health '{hp.check.name}' run", hp.check.run, ctx)
                for var, value in hp.check.env.items():
                    checker.template(
                        None,
                        hp.check.line_of("env"),
                        f"health '{hp.check.name}' env {var}",
                        value,
                        ctx,
                    )
                checker.template(
                    None,
                    hp.check.line_of("until"),
                    f"health '{hp.check.name}' until",
                    hp.check.until,
                    {**ctx, **_UNTIL_PREVIEW},
                    expression=True,
                )
    _plan_checks(plan, checker, problems)
    for pp in plan.probes:
        for host in pp.hosts:
            ctx = plan.context(host=host)
            pr = pp.probe
            checker.template(None, pr.line_of("run"), f"probe '{pr.name}' run", pr.run, ctx)
            checker.template(
                None,
                pr.line_of("until"),
                f"probe '{pr.name}' until",
                pr.until,
                {**ctx, **_UNTIL_PREVIEW},
                expression=True,
            )
    plan.notify = _notify_urls(checker, plan)
    if runbook.children and direction == FAILOVER:
        from orchestrator.plan.site import source_health

        plan.source_health = source_health(plan)
    if runbook.reprotect and direction == FAILOVER:
        # the reprotect phase runs in a failback of this failover: check it there
        try:
            build_plan(
                reprotect_runbook(runbook),
                inventory,
                source,
                source=target,
                direction=FAILBACK,
                cli_vars=cli_vars,
                secrets=secrets,
                check_undo=False,
                failback_mode=MIRROR,
            )
        except ValidationError as exc:
            problems.extend(p for p in exc.problems if p.severity == "error")
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ValidationError(problems)
    finish_plan(plan, predictions or {})
    return plan


def _plan_checks(plan: Plan, checker: _Checker, problems: list[Problem]) -> None:
    """Resolve the readiness entries and the rpo_probe at the plan's sites (``active`` is the
    site serving now) and check their templates, like health's."""
    runbook = plan.runbook
    entries = [("readiness", c) for c in runbook.readiness]
    if runbook.rpo_probe is not None:
        entries.append(("rpo_probe", runbook.rpo_probe))
    for key, check in entries:
        what = f"readiness '{check.name}'" if key == "readiness" else "rpo_probe"

        def report(message: str, hint: str | None, _c: HealthCheck = check, _w: str = what) -> None:
            problems.append(_problem(runbook, None, _c.line_of("hosts"), f"{_w}: {message}", hint))

        hosts = _resolve(plan.inventory, check.hosts, plan.aliases(), report)
        for host in hosts:
            ctx = plan.context(host=host)
            checker.template(None, check.line_of("run"), f"{what} run", check.run, ctx)
            for var, value in check.env.items():
                checker.template(None, check.line_of("env"), f"{what} env {var}", value, ctx)
            checker.template(
                None,
                check.line_of("until"),
                f"{what} until",
                check.until,
                {**ctx, **_UNTIL_PREVIEW},
                expression=True,
            )
        if key == "readiness":
            plan.readiness.append(CheckPlan(check, hosts))
        else:
            plan.rpo_probe = CheckPlan(check, hosts)


def _probe_plans(plan: Plan, problems: list[Problem]) -> list[ProbePlan]:
    """Each probe resolved to its hosts (``active`` is the site serving before the run)."""
    found: list[ProbePlan] = []
    for pr in plan.runbook.probes:

        def report(message: str, hint: str | None, _p: Probe = pr) -> None:
            problems.append(
                _problem(
                    plan.runbook, None, _p.line_of("hosts"), f"probe '{_p.name}': {message}", hint
                )
            )

        found.append(ProbePlan(pr, _resolve(plan.inventory, pr.hosts, plan.aliases(), report)))
    return found


def reprotect_runbook(runbook: Runbook) -> Runbook:
    """The runbook's reprotect phase as a runbook of its own: its steps, no health, no RPO."""
    return replace(
        runbook,
        steps=list(runbook.reprotect),
        reprotect=[],
        health=[],
        notify=[],
        rpo_step=None,
        rpo_guard=False,
        failback_rpo_step=None,
        rto_start=None,
    )


def _notify_urls(checker: _Checker, plan: Plan) -> list[str]:
    """The runbook's and the inventory's ``notify`` URLs, rendered (they may take a token from a
    secret variable: the real value is sent, and masked wherever drx writes the URL)."""
    urls: list[str] = []
    ctx = plan.context()
    for file, items in (
        (plan.runbook.path, plan.runbook.notify),
        (plan.inventory.path, plan.inventory.notify),
    ):
        for item in items:
            url = checker.template(None, item.line, "notify", item.text, ctx, file=file)
            if url is not None and url not in urls:
                urls.append(url)
    return urls


def _check_undo(
    checker: _Checker, back: Plan, ps: PlanStep, undo: Step, problems: list[Problem]
) -> None:
    """Validate an undo action in the context of a failback (``back``) of the plan."""
    plan = back
    hosts = ps.hosts
    if undo.hosts != ps.step.hosts:

        def report(message: str, hint: str | None) -> None:
            problems.append(
                _problem(plan.runbook, ps.id, undo.line_of("hosts"), f"undo: {message}", hint)
            )

        hosts = _resolve(plan.inventory, undo.hosts, back.aliases(), report)
    undo_ps = PlanStep(
        id=f"undo-{ps.id}",
        step=undo,
        hosts=hosts,
        needs=[],
        undo_of=ps.id,
        readable=_with(ps.readable, ps.id),
    )
    _check_step_templates(checker, back, undo_ps, undo, "undo")
    if not undo.duration_templates:
        return  # nothing to render: no context to build (one per step of 10,000)
    for key, message in resolve_durations(undo, back.context(), run_time=False)[1]:
        problems.append(_problem(plan.runbook, ps.id, undo.line_of(key), f"undo: {message}"))


def finish_plan(plan: Plan, predictions: Mapping[str, float]) -> None:
    """Waves, predictions, predicted RTO and critical path of a plan whose steps are set."""
    order = topological(plan.graph)
    waves = compute_waves(plan.graph, order)
    for node, wave in waves.items():
        plan.steps[node].wave = wave
    plan.waves = [[] for _ in range(max(waves.values(), default=-1) + 1)]
    for ps in plan.steps.values():  # declaration order within a wave
        plan.waves[ps.wave].append(ps.id)
    unknown = False
    for ps in plan.steps.values():
        key = (ps.undo_of and f"undo-{ps.undo_of}") or ps.id
        step = ps.step
        if ps.skipped is not None:
            ps.predicted_s, ps.prediction_source = 0.0, "skipped"
        elif key in predictions:
            ps.predicted_s, ps.prediction_source = predictions[key], "history"
        elif (fixed := kind_of(step.kind).fixed_duration(step)) is not None:
            ps.predicted_s, ps.prediction_source = fixed, "expect"
        elif step.expect is not None:
            ps.predicted_s, ps.prediction_source = step.expect, "expect"
        else:
            ps.predicted_s, ps.prediction_source = None, "unknown"
            unknown = True
    total, path = longest_path(plan.graph, order, lambda n: plan.steps[n].predicted_s or 0.0)
    health = plan.predicted_health_s
    if plan.health and health is None:
        unknown = True
    plan.predicted_rto_s = round(total + (health or 0.0), 3)
    plan.predicted_rto_is_lower_bound = unknown
    plan.critical_path = path
    plan.predicted_operator_s = round(
        sum(plan.steps[n].predicted_s or 0.0 for n in path if kind_of(plan.steps[n].kind).gate),
        3,
    )


def parse_cli_vars(
    pairs: Iterable[str], *, option: str = "--var", typed: bool = False
) -> dict[str, Any]:
    """``k=v`` pairs from the command line; with ``typed``, each value read as a YAML scalar
    (but a secret's: ``--var db_password=0123`` is the text 0123)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} expects NAME=VALUE, got {pair!r}")
        name = key.strip()
        result[name] = cli_value(value) if typed and not is_secret_name(name) else value
    return result


_NULL = re.compile(r"~|null|Null|NULL")
_BOOL = {v: v.lower() == "true" for v in ("true", "True", "TRUE", "false", "False", "FALSE")}
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def cli_value(text: str) -> Any:
    """A ``--var`` value as a YAML 1.2 (core schema) scalar: ``true``/``false``, ``3``,
    ``1.5``, ``null``; a quoted value is the string inside the quotes (``"true"``); anything
    else, and an empty value, is the text as given (no YAML 1.1 surprises: ``on`` and ``no``
    stay text, ``0123`` is 123). ``--var dry=false`` must not be the string "false", which
    templates read as true (``not vars.dry``)."""
    import yaml

    word = text.strip()
    if not word:
        return text
    if _NULL.fullmatch(word):
        return None
    if word in _BOOL:
        return _BOOL[word]
    if _INT.fullmatch(word):
        return int(word)
    if _FLOAT.fullmatch(word):
        return float(word)
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        try:
            value = yaml.safe_load(word)
        except yaml.YAMLError:
            return text
        return value if isinstance(value, str) else text
    return text


_VAR_USE = re.compile(r"""\bvars\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*['"]([^'"]+)['"]\s*\])""")


def _template_texts(runbook: Runbook) -> Iterator[str]:
    for step in runbook.steps:
        for s in (step, step.undo):
            if s is not None:
                yield from (t for t in (s.run, s.prompt, s.until, s.when) if t)
    for hc in runbook.health:
        yield from (t for t in (hc.run, hc.until) if t)


def unknown_cli_vars(
    runbook: Runbook, inventory: Inventory, cli_vars: Iterable[str]
) -> list[tuple[str, str | None]]:
    """``--var`` names that no template reads and no ``vars`` mapping defines (a typo sets a
    variable nothing uses, silently): each with the closest name that is used, if any."""
    used: set[str] = set()
    for text in _template_texts(runbook):
        used.update(a or b for a, b in _VAR_USE.findall(text))
    defined = {*runbook.vars, *inventory.vars}
    for site in inventory.sites.values():
        defined.update(site.vars)
        for h in site.hosts:
            defined.update(h.vars)
    known = used | {str(k) for k in defined}
    return [(name, suggest(name, sorted(known))) for name in cli_vars if name not in known]


# -- the reverse plan ---------------------------------------------------------------------------


@dataclass
class Undone:
    """What a failover step did, as far as a failback needs to know."""

    step_id: str
    hosts: list[str]  # hosts to undo on: succeeded or outcome unknown
    outcome_unknown: bool


def undo_candidates(
    runbook: Runbook, outcomes: Mapping[str, StepOutcome]
) -> tuple[list[Undone], list[dict[str, str]]]:
    """Which failover steps a failback undoes, on which hosts; and which it leaves out, why."""
    undone: list[Undone] = []
    left_out: list[dict[str, str]] = []
    by_id = runbook.by_id
    for sid, out in outcomes.items():
        step = by_id.get(sid)
        status = out.status
        if step is None:
            left_out.append({"id": sid, "reason": "no longer in the runbook"})
            continue
        if status is Status.DONE_BY_HAND:  # drx done: an operator did it, not drx
            left_out.append({"id": sid, "reason": "done by hand: a failback does not undo it"})
            continue
        good = [h for h, o in out.hosts.items() if o.status is Status.SUCCEEDED]
        unsure = [h for h, o in out.hosts.items() if o.status in (Status.UNKNOWN, Status.CANCELLED)]
        in_flight = status is Status.UNKNOWN or (status is Status.CANCELLED and out.outcome_unknown)
        if status is Status.SUCCEEDED or (status is Status.FAILED and good) or in_flight:
            if step.undo is None:
                left_out.append({"id": sid, "reason": f"{status}, but has no undo"})
                continue
            hosts = good + unsure if in_flight else good
            if not kind_of(step.kind).runs_commands:
                hosts = []
            undone.append(Undone(sid, hosts, in_flight))
        else:
            left_out.append({"id": sid, "reason": f"{status}: nothing to undo"})
    return undone, left_out


def build_reverse_plan(
    runbook: Runbook,
    inventory: Inventory,
    *,
    source: str,
    target: str,
    parent_run: str,
    outcomes: Mapping[str, Any],
    cli_vars: Mapping[str, Any] | None = None,
    secrets: Iterable[str] = (),
    predictions: Mapping[str, float] | None = None,
    predicted_health_s: float | None = None,
    mode: str = Mode.REAL.value,
    rollback: bool = False,
) -> Plan:
    """The failback of a failover run: one node per step it did that has an undo, every edge
    reversed, steps without undo bridged; health polled at the original source. A
    ``rollback`` is the failback of a failover that failed or was cancelled."""
    # The failover's own plan gives hosts, the DAG and the readable sets of each step.
    forward = build_plan(
        runbook,
        inventory,
        target,
        source=source,
        cli_vars=cli_vars,
        secrets=secrets,
        check_undo=False,
        mode=mode,
    )
    undone, left_out = undo_candidates(runbook, outcomes)
    problems: list[Problem] = []
    plan = replace(
        forward,
        direction=FAILBACK,
        failback_mode=UNDO,
        steps={},
        graph=Dag(),
        waves=[],
        parent_run=parent_run,
        reverses=parent_run,
        left_out=left_out,
        warnings=[],
        predicted_health_s=predicted_health_s,
        rollback=rollback,
    )
    # a failback is checked where the failover was, in the other order (the forward plan has
    # already resolved, and validated, both)
    plan.health = [HealthPlan(hp.check, hp.hosts_after, hp.hosts_before) for hp in forward.health]
    chosen = {u.step_id: u for u in undone}
    order = [s.id for s in runbook.steps if s.id in chosen]
    for index, sid in enumerate(order):
        u = chosen[sid]
        fps = forward.steps[sid]
        undo = fps.step.undo
        assert undo is not None
        if undo.hosts != fps.step.hosts and undo.hosts:

            def report(message: str, hint: str | None, _sid: str = sid) -> None:
                problems.append(
                    _problem(
                        runbook, _sid, runbook.step(_sid).line_of("undo"), f"undo: {message}", hint
                    )
                )

            hosts = _resolve(inventory, undo.hosts, plan.aliases(), report)
        else:
            wanted = set(u.hosts)
            hosts = [h for h in fps.hosts if h.name in wanted]
        node = f"undo-{sid}"
        plan.graph.add_node(node, index=index)
        plan.steps[node] = PlanStep(
            id=node,
            step=replace(undo, id=node),
            hosts=hosts if undo.runs_commands else [],
            needs=[],
            index=index,
            undo_of=sid,
            outcome_unknown=u.outcome_unknown,
            readable=_with(fps.readable, sid),
            skipped=only_skips(undo, mode),
        )
    # reverse every edge, bridging through steps that are not undone: from each undone step,
    # walk forward through steps that are not undone to the first undone ones
    # (the first undone steps past each step are computed once, from the sinks back: a walk
    # per undone step crossed the same steps again and again)
    beyond: dict[str, frozenset[str]] = {}
    for b in reversed(topological(forward.graph)):
        found: set[str] = set()
        for c in forward.graph.successors(b):
            found.update((c,) if c in chosen else beyond[c])
        beyond[b] = frozenset(found)
    for a in order:
        for b in sorted(beyond[a], key=lambda n: forward.steps[n].index):
            plan.graph.add_edge(f"undo-{b}", f"undo-{a}")  # b (transitively) needed a
    if runbook.children:
        from orchestrator.plan.site import rewire_reverse

        rewire_reverse(plan)
    for ps in plan.steps.values():
        ps.needs = sorted(plan.graph.predecessors(ps.id), key=lambda n: plan.steps[n].index)
    checker = _Checker(plan, problems)
    for ps in plan.steps.values():
        if ps.step.duration_templates:
            ps.step, bad = resolve_durations(ps.step, plan.context(), run_time=False)
            line = runbook.step(ps.undo_of or ps.id).line_of("undo")
            for _, message in bad:
                problems.append(_problem(runbook, ps.undo_of, line, f"undo: {message}"))
        ps.preview = _check_step_templates(checker, plan, ps, ps.step, "undo")
    if any(p.severity == "error" for p in problems):
        raise ValidationError(problems)
    finish_plan(plan, predictions or {})
    return plan
