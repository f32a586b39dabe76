"""What a site plan adds to planning: each child's block (its predicted RTO), its health at the
source before a failover, its health after a failback, and predictions from every run of each
child runbook — standalone runs included. Semantics: docs/reference.md, "Site plans"."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from orchestrator.kinds import kind_of
from orchestrator.model.inventory import Host, SelectorError, select
from orchestrator.model.runbook import Runbook
from orchestrator.model.siteplan import Child, child_of, is_child_health
from orchestrator.model.units import format_duration
from orchestrator.plan.build import Plan, PlanStep, topological
from orchestrator.vocab import Direction, RunStatus, StepStatus

if TYPE_CHECKING:
    from orchestrator.record.store import State, StateFields, Store


def step_child(plan: Plan, step_id: str) -> str | None:
    """The innermost child a plan step belongs to (None: the site plan's own step)."""
    child = child_of(plan.runbook, step_id)
    return child.id if child is not None else None


def child_steps(plan: Plan, child: Child) -> list[str]:
    """The plan's steps of a child (nested children's too), in the plan's order."""
    prefixes = (child.prefix, f"undo-{child.prefix}")
    return [sid for sid in plan.steps if sid.startswith(prefixes)]


def predicted_rtos(plan: Plan) -> dict[str, float]:
    """Each child's predicted RTO: the heaviest path through its own block (its steps, its
    nested children's and its health), all children in one pass over the plan."""
    pred = plan.graph.pred
    out: dict[str, float] = {}
    best: dict[str, dict[str, float]] = {cid: {} for cid in plan.runbook.children}
    for node in topological(plan.graph):
        scope = step_child(plan, node)
        weight = plan.steps[node].predicted_s or 0.0
        while scope is not None:  # the step is in its child's block and every enclosing one
            mine = best[scope]
            mine[node] = max((mine[p] for p in pred[node] if p in mine), default=0.0) + weight
            scope = plan.runbook.children[scope].parent
    for cid, mine in best.items():
        out[cid] = round(max(mine.values(), default=0.0), 3)
    return out


def children_doc(plan: Plan) -> list[dict[str, Any]]:
    rtos = predicted_rtos(plan)
    return [
        {
            "id": c.id,
            "runbook": c.name,
            "file": c.path,
            "parent": c.parent,
            "predicted_rto_s": rtos[c.id],
            "rto_target_s": c.runbook.rto_target,
        }
        for c in plan.runbook.children.values()
    ]


def source_health(plan: Plan) -> list[PlanStep]:
    """Each child's health at the site a failover leaves, polled before it starts (the site plan's
    own health is polled there already)."""
    out: list[PlanStep] = []
    aliases = plan.aliases(plan.from_site)
    for ps in plan.steps.values():
        if not is_child_health(ps.id) or ps.undo_of:
            continue
        hosts = _hosts(plan, ps.step.hosts, aliases)
        out.append(PlanStep(id=ps.id, step=ps.step, hosts=hosts, needs=[], active=plan.from_site))
    return out


def _hosts(plan: Plan, selectors: tuple[str, ...], aliases: dict[str, str]) -> list[Host]:
    hosts: dict[str, Host] = {}
    for selector in selectors:
        try:
            hosts.update({h.name: h for h in select(plan.inventory, selector, aliases)})
        except SelectorError:
            continue  # reported when the failover was planned
    return sorted(hosts.values(), key=lambda h: plan.inventory.order.get(h.name, 0))


def rewire_reverse(plan: Plan) -> None:
    """In a failback each child's health is polled after that child's undos, at the site the
    failback returns it to (reversing the failover's edges would poll it first)."""
    graph = plan.graph
    for ps in plan.steps.values():
        if not (ps.undo_of and is_child_health(ps.undo_of)):
            continue
        ps.active = plan.to_site
        ps.hosts = _hosts(plan, ps.step.hosts, plan.aliases(plan.to_site))
        child = child_of(plan.runbook, ps.undo_of)
        if child is None:
            continue
        graph.remove_edges_from([*graph.in_edges(ps.id), *graph.out_edges(ps.id)])
        for sid in child_steps(plan, child):
            if sid != ps.id and not is_child_health(sid.removeprefix("undo-")):
                graph.add_edge(sid, ps.id)


def predictions(
    store: Store, runbook: Runbook, direction: str, target: str
) -> tuple[dict[str, float], float | None]:
    """The usual predictions of a runbook; for a site plan, each child's steps (and health) also
    from the runs of the child runbook itself, wherever they ran (matched by name and step id)."""
    from orchestrator.plan.predictions import predictions_for

    steps, health = predictions_for(store, runbook.name, direction, target)
    for child in runbook.children.values():
        own, own_health = predictions_for(store, child.name, direction, target)
        mine = _prefixed(own, child)
        for key, value in mine.items():
            steps.setdefault(key, value)
        if own_health is not None:
            for hid in child.health:
                key = hid if direction == Direction.FAILOVER else f"undo-{hid}"
                steps.setdefault(key, own_health)
    if runbook.children:
        for key, value in _from_other_site_plans(store, runbook, direction, target).items():
            steps.setdefault(key, value)
    return steps, health


def _from_other_site_plans(
    store: Store, runbook: Runbook, direction: str, target: str
) -> dict[str, float]:
    """Durations of a child's steps in runs of *other* site plans that include the same child
    runbook (under any id): a service drilled as part of another site still predicts its steps.
    Manual gates are left to the child's own runs (a --yes answer says nothing of a person)."""
    from orchestrator.record.runs import load_summaries

    wanted: dict[str, list[Child]] = {}
    for child in runbook.children.values():
        wanted.setdefault(child.name, []).append(child)
    durations: dict[str, list[float]] = {}
    for summary in load_summaries(store):
        if (
            summary.runbook == runbook.name
            or not summary.children
            or summary.direction != direction
            or summary.target != target
            or summary.status != RunStatus.SUCCEEDED
        ):
            continue
        theirs = {str(c.get("id")): str(c.get("runbook")) for c in summary.children}
        for step in summary.steps:
            if step.status != StepStatus.SUCCEEDED or step.duration_s is None or step.carried_from:
                continue
            if kind_of(step.kind).gate:
                continue
            undo = "undo-" if step.id.startswith("undo-") else ""
            scope, _, local = step.id.removeprefix("undo-").rpartition("/")
            for child in wanted.get(theirs.get(scope, ""), []):
                durations.setdefault(f"{undo}{child.prefix}{local}", []).append(step.duration_s)
    return {k: statistics.median(v) for k, v in durations.items()}


def _prefixed(own: Mapping[str, float], child: Child) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in own.items():
        if key.startswith("health:"):
            continue
        if key.startswith("undo-"):
            out[f"undo-{child.prefix}{key.removeprefix('undo-')}"] = value
        else:
            out[child.prefix + key] = value
    return out


def journal_children(plan: Plan) -> list[dict[str, Any]] | None:
    """What the run's first journal event says about each child, so that its summary (and any
    report) can judge each child from the journal alone; None for a plain runbook."""
    if not plan.runbook.children:
        return None
    forward = plan.runs_forward  # a mirrored failback runs the children's own steps too
    rtos = predicted_rtos(plan)
    out = []
    for c in plan.runbook.children.values():
        rb = c.runbook
        rpo_step = c.ns(rb.rpo_step) if forward else _back_rpo(plan, c)
        out.append(
            {
                "id": c.id,
                "runbook": c.name,
                "file": c.path,
                "runbook_sha256": c.sha256,
                "parent": c.parent,
                "rto_target_s": rb.rto_target,
                "rto_start": c.ns(rb.rto_start) if forward else None,
                "rpo_step": rpo_step,
                "rpo_target": rb.rpo_target if rpo_step else None,
                "rpo_is_bytes": rb.rpo_is_bytes,
                "predicted_rto_s": rtos[c.id],
            }
        )
    return out


def _back_rpo(plan: Plan, child: Child) -> str | None:
    back = child.runbook.failback_rpo_step
    if back is None:
        return None
    node = f"undo-{child.prefix}{back.removeprefix('undo-')}"
    return node if node in plan.steps else None


def state_changes(
    plan: Plan, changes: StateFields, state: State, active: str, since: str | None
) -> StateFields:
    """A succeeded site plan run also records the active site of every child runbook's name, so
    a standalone run of a child (or ``drx status -r child.yaml``) agrees with it."""
    from orchestrator.record.store import RunbookState

    books = dict(changes.get("runbooks") or {})
    for name in dict.fromkeys(c.name for c in plan.runbook.children.values()):
        # the child's own last run stays its own: a failback of the child alone reverses that
        own = (state.runbooks or {}).get(name, RunbookState())
        books[name] = replace(own, active=active, active_since=since)
    return {**changes, "runbooks": books}


# -- previews -------------------------------------------------------------------------------------


def children_text(plan: Plan) -> list[str]:
    """The text plan's child blocks: each child's steps, predicted RTO and target, and the
    site's critical path across children."""
    rtos = predicted_rtos(plan)
    by_child: dict[str, int] = {}
    for sid in plan.steps:
        cid = step_child(plan, sid)
        while cid is not None:
            by_child[cid] = by_child.get(cid, 0) + 1
            cid = plan.runbook.children[cid].parent
    out = ["", "Children:"]
    for c in plan.runbook.children.values():
        depth = c.id.count("/")
        target = c.runbook.rto_target
        vs = f" (target {format_duration(target)})" if target else ""
        out.append(
            f"  {'  ' * depth}{c.id}: {c.name} ({c.path}), {by_child.get(c.id, 0)} steps, "
            f"predicted RTO {format_duration(rtos[c.id])}{vs}"
        )
    path: list[str] = []
    for sid in plan.critical_path:
        top = step_child(plan, sid)
        while top is not None and plan.runbook.children[top].parent is not None:
            top = plan.runbook.children[top].parent
        label = f"[{top}]" if top is not None else sid
        if not path or path[-1] != label:
            path.append(label)
    out.append("Site critical path: " + " → ".join(path))
    return out


@dataclass
class Blocks:
    """Plan nodes grouped by child, for dot clusters and Mermaid subgraphs (nested as the
    children are)."""

    plan: Plan
    placed: set[str]
    nodes: dict[str, str] = field(default_factory=dict)

    def _members(self, cid: str) -> list[str]:
        return [sid for sid in self.nodes if step_child(self.plan, sid) == cid]

    def _kids(self, parent: str | None) -> list[str]:
        return [c.id for c in self.plan.runbook.children.values() if c.parent == parent]

    def dot(self, parent: str | None = None, indent: str = "  ") -> list[str]:
        lines: list[str] = []
        for cid in self._kids(parent):
            name = self.plan.runbook.children[cid].name
            index = list(self.plan.runbook.children).index(cid)
            lines.append(f"{indent}subgraph cluster_{index} {{")
            lines.append(f'{indent}  label="{cid} ({name})"; style=rounded;')
            lines.extend(f"{indent}  {self.nodes[sid]}" for sid in self._members(cid))
            lines.extend(self.dot(cid, indent + "  "))
            lines.append(f"{indent}}}")
        return lines

    def mermaid(self, parent: str | None = None, indent: str = "  ") -> list[str]:
        lines: list[str] = []
        for cid in self._kids(parent):
            name = self.plan.runbook.children[cid].name
            index = list(self.plan.runbook.children).index(cid)
            lines.append(f'{indent}subgraph c{index}["{cid} ({name})"]')
            lines.extend(f"{indent}  {self.nodes[sid]}" for sid in self._members(cid))
            lines.extend(self.mermaid(cid, indent + "  "))
            lines.append(f"{indent}end")
        return lines


def child_blocks(plan: Plan) -> Blocks:
    placed = {sid for sid in plan.steps if step_child(plan, sid) is not None}
    return Blocks(plan, placed)
