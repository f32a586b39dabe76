"""Plan previews: text (waves, hosts, rendered commands, predictions), JSON (SPEC §6), Graphviz
dot and Mermaid."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.kinds import kind_of
from orchestrator.model.units import format_duration
from orchestrator.plan.build import Plan, PlanStep
from orchestrator.plan.site import child_blocks, children_doc, children_text, step_child
from orchestrator.vocab import Direction

PLAN_FORMATS = ("text", "json", "dot", "mermaid")


def plan_document(plan: Plan) -> dict[str, Any]:
    """The plan as the JSON document of SPEC §6 (extended)."""
    r = plan.redactor
    steps = []
    for ps in plan.steps.values():
        step = ps.step
        entry: dict[str, Any] = {
            "id": ps.id,
            "name": r(step.name),
            "kind": str(step.kind),
            "needs": ps.needs,
            "wave": ps.wave,
            "hosts": [h.name for h in ps.hosts],
            "commands": dict(ps.preview),
            "predicted_s": ps.predicted_s,
            "prediction_source": ps.prediction_source,
            "undo_of": ps.undo_of,
            "on_failure": step.on_failure.value,
            "timeout_s": step.timeout,
            "retries": step.retries,
        }
        if step.when:
            entry["when"] = r(step.when)
        entry.update(kind_of(step.kind).preview_entry(ps, r))
        if step.serial:
            entry["serial"] = step.serial
        if ps.decided_by is not None:
            # "hosts" are then the candidates: the step runs on those its template names
            entry["hosts_decided_at_run_time_from"] = ps.decided_by
        if ps.phase:
            entry["phase"] = ps.phase
        if ps.carried_from:
            entry["carried_from"] = ps.carried_from
        if ps.outcome_unknown:
            entry["outcome_unknown"] = True
        if ps.skipped is not None:
            entry["skipped"] = ps.skipped
        if plan.runs_forward:
            entry["has_undo"] = step.undo is not None
        if plan.runbook.children:
            entry["child"] = step_child(plan, ps.id)
        steps.append(entry)
    doc: dict[str, Any] = {
        "runbook": plan.runbook.name,
        "direction": plan.direction,
        "source": plan.source,
        "target": plan.target,
        "moves_to": plan.to_site,
        "parent_run": plan.parent_run,
        "failback_mode": plan.failback_mode,
        "waves": plan.waves,
        "steps": steps,
        "predicted_rto_s": plan.predicted_rto_s,
        "predicted_rto_is_lower_bound": plan.predicted_rto_is_lower_bound,
        "predicted_operator_s": plan.predicted_operator_s,
        "predicted_automated_s": round(plan.predicted_rto_s - plan.predicted_operator_s, 3),
        "predicted_health_s": plan.predicted_health_s,
        "critical_path": plan.critical_path,
        "rto_target_s": plan.runbook.rto_target,
        "health": [
            {"name": hp.check.name, "hosts": [h.name for h in hp.hosts_after]} for hp in plan.health
        ],
        "hosts": [h.name for h in plan.hosts()],
    }
    if plan.direction == Direction.FAILBACK:
        doc["left_out"] = plan.left_out
    doc["mode"] = plan.mode
    if plan.rollback:
        doc["rollback"] = True
    if plan.probes:
        doc["probes"] = [
            {
                "name": pp.probe.name,
                "hosts": [h.name for h in pp.hosts],
                "interval_s": pp.probe.interval,
                "max_down_s": pp.probe.max_down,
            }
            for pp in plan.probes
        ]
    if plan.runbook.children:
        doc["children"] = children_doc(plan)
    return doc


def _prediction(ps: PlanStep) -> str:
    if ps.predicted_s is None:
        return "unknown"
    return f"~{format_duration(ps.predicted_s)} ({ps.prediction_source})"


def render_text(plan: Plan) -> str:
    r = plan.redactor
    out: list[str] = []
    arrow = (
        f"{plan.source} → {plan.target}"
        if plan.direction == Direction.FAILOVER
        else (
            f"{plan.from_site} → {plan.to_site} ({plan.failback_mode}: reverses {plan.parent_run})"
        )
    )
    out.append(f"Plan: {plan.runbook.name} — {plan.direction} {arrow}")
    if plan.emergency:
        out.append("EMERGENCY: source health check skipped; source-site failures do not abort")
    if plan.mode == "drill":
        out.append(
            "DRILL: steps with 'only: real' are skipped"
            + ("; a rollback of a failover that did not succeed" if plan.rollback else "")
        )
    hosts = plan.hosts()
    out.append(f"{len(plan.steps)} steps in {len(plan.waves)} waves on {len(hosts)} hosts")
    out.append("")
    for number, wave in enumerate(plan.waves):
        out.append(f"Wave {number}")
        for sid in wave:
            ps = plan.steps[sid]
            step = ps.step
            flags = []
            if sid in plan.critical_path:
                flags.append("critical")
            if ps.undo_of:
                flags.append(f"undoes {ps.undo_of}")
            if ps.outcome_unknown:
                flags.append("OUTCOME UNKNOWN: needs confirmation")
            if ps.skipped is not None:
                flags.append(f"SKIPPED: {ps.skipped}")
            if ps.carried_from:
                flags.append(f"done by {ps.carried_from}: carried, not run")
            if step.on_failure.value == "continue":
                flags.append("on_failure: continue")
            if step.retries:
                flags.append(f"retries {step.retries}")
            extra = f"  [{', '.join(flags)}]" if flags else ""
            out.append(f"  {sid} ({step.kind}) — {r(step.name)}  {_prediction(ps)}{extra}")
            if ps.needs:
                out.append(f"      needs: {', '.join(ps.needs)}")
            if step.when:
                out.append(f"      when: {r(step.when)}")
            if ps.decided_by is not None:
                out.append(
                    f"      hosts: decided at run time from {', '.join(ps.decided_by)} "
                    f"(candidates: {', '.join(h.name for h in ps.hosts)})"
                )
            for host in ps.hosts:
                out.append(f"      {host.name}: {ps.preview.get(host.name, '')}")
            out.extend(kind_of(step.kind).preview_lines(ps, r))
        out.append("")
    for hp in plan.health:
        names = ", ".join(h.name for h in hp.hosts_after)
        out.append(f"Health '{hp.check.name}' polled at {plan.to_site} on {names}")
    for pp in plan.probes:
        names = ", ".join(h.name for h in pp.hosts)
        limit = f", max_down {format_duration(pp.probe.max_down)}" if pp.probe.max_down else ""
        out.append(
            f"Probe '{pp.probe.name}' polled on {names} every "
            f"{format_duration(pp.probe.interval)} for the whole run{limit}"
        )
    if plan.direction == Direction.FAILBACK and plan.left_out:
        out.append("Left out of the failback:")
        for item in plan.left_out:
            out.append(f"  {item['id']}: {item['reason']}")
    bound = (
        " (lower bound: some steps have no prediction)" if plan.predicted_rto_is_lower_bound else ""
    )
    target = plan.runbook.rto_target
    vs = f" vs target {format_duration(target)}" if target else ""
    if plan.predicted_rto_s == 0 and plan.predicted_rto_is_lower_bound:
        out.append(f"Predicted RTO: unknown (no step has history or expect yet){vs}")
    else:
        out.append(f"Predicted RTO: {format_duration(plan.predicted_rto_s)}{vs}{bound}")
        if any(kind_of(ps.kind).gate for ps in plan.steps.values()):
            automated = plan.predicted_rto_s - plan.predicted_operator_s
            gated = [s for s in plan.critical_path if kind_of(plan.steps[s].kind).gate]
            if gated:
                out.append(
                    f"  of which automated {format_duration(automated)}, operator at gates "
                    f"{format_duration(plan.predicted_operator_s)} ({', '.join(gated)} on the "
                    "critical path)"
                )
            else:
                out.append(
                    f"  all of it automated: no gate on the critical path (the gates, "
                    f"{', '.join(s for s, ps in plan.steps.items() if kind_of(ps.kind).gate)}, "
                    "wait beside it)"
                )
    out.append("Critical path: " + " → ".join(plan.critical_path))
    if plan.runbook.children:
        out.extend(children_text(plan))
    return "\n".join(out) + "\n"


def _dot_id(text: str) -> str:
    return json.dumps(text)


def render_dot(plan: Plan) -> str:
    lines = [f"digraph {_dot_id(plan.runbook.name + ' ' + plan.direction)} {{", "  rankdir=LR;"]
    crit = set(plan.critical_path)
    blocks = child_blocks(plan)
    for ps in plan.steps.values():
        label = f"{ps.id}\\n{ps.step.kind} · {_prediction(ps)}"
        style = ', color="red", penwidth=2' if ps.id in crit else ""
        shape = "diamond" if kind_of(ps.kind).gate else "box"
        if ps.id not in blocks.placed:
            lines.append(f'  {_dot_id(ps.id)} [label="{label}", shape={shape}{style}];')
        else:
            blocks.nodes[ps.id] = f'{_dot_id(ps.id)} [label="{label}", shape={shape}{style}];'
    lines.extend(blocks.dot())
    # only the path's own edges: a shortcut between two of its steps is not on it
    crit_edges = set(zip(plan.critical_path, plan.critical_path[1:], strict=False))
    for a, b in plan.graph.edges:
        style = ' [color="red", penwidth=2]' if (a, b) in crit_edges else ""
        lines.append(f"  {_dot_id(a)} -> {_dot_id(b)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_mermaid(plan: Plan) -> str:
    lines = ["flowchart LR"]
    ids = {sid: f"s{i}" for i, sid in enumerate(plan.steps)}
    blocks = child_blocks(plan)
    for ps in plan.steps.values():
        label = f"{ps.id}<br/>{ps.step.kind} · {_prediction(ps)}".replace('"', "'")
        gate = kind_of(ps.kind).gate
        node = f'{ids[ps.id]}{{"{label}"}}' if gate else f'{ids[ps.id]}["{label}"]'
        if ps.id in blocks.placed:
            blocks.nodes[ps.id] = node
        else:
            lines.append(f"  {node}")
    lines.extend(blocks.mermaid())
    for a, b in plan.graph.edges:
        lines.append(f"  {ids[a]} --> {ids[b]}")
    crit = [ids[s] for s in plan.critical_path]
    if crit:
        lines.append("  classDef critical stroke:#d33,stroke-width:3px")
        lines.append(f"  class {','.join(crit)} critical")
    return "\n".join(lines) + "\n"


def render_plan(plan: Plan, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(plan_document(plan), indent=2) + "\n"
    if fmt == "dot":
        return render_dot(plan)
    if fmt == "mermaid":
        return render_mermaid(plan)
    return render_text(plan)
