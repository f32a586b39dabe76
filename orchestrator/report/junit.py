"""The JUnit XML report: a drill as a test suite, so CI dashboards can chart and gate on it.

One ``<testsuite>`` per run, a ``<testcase>`` per step, plus ``rto-target`` and ``rpo-target``
testcases that fail when the objective was missed. The document is built with ElementTree, which
escapes markup; characters that XML 1.0 cannot carry at all (most control characters) are removed
beforehand, since no escaping can represent them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace

from orchestrator.record.summary import RunSummary as Run
from orchestrator.record.summary import StepRecord as Step
from orchestrator.report.children import child_facts, step_child
from orchestrator.report.facts import (
    TAIL_LINES,
    RpoFacts,
    RtoFacts,
    cause,
    probe_fact,
    rpo_absent,
    rpo_facts,
    rto_facts,
)
from orchestrator.report.units import clean_output, parse_when, tail
from orchestrator.vocab import RunStatus, StepStatus

# Everything outside the XML 1.0 Char production.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_SKIPPED = (StepStatus.SKIPPED, StepStatus.NOT_RUN, StepStatus.CANCELLED)


def xml_text(value: object) -> str:
    """Text that XML 1.0 can carry: illegal characters removed (markup is escaped by ElementTree)."""
    return _NOT_XML.sub("", clean_output(str(value)))


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrs.items()})
    if text:
        element.text = xml_text(text)
    return element


def _seconds(value: float | None) -> str:
    return f"{value or 0.0:.3f}"


def _timestamp(text: str | None) -> str:
    # The JUnit schema's timestamp has no zone; drx timestamps are UTC.
    moment = parse_when(text)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") if moment else ""


def _output(step: Step) -> str:
    parts = []
    for host in step.hosts:
        text, total = tail(host.output_tail, TAIL_LINES)
        header = f"--- {host.host}: rc {host.rc if host.rc is not None else '—'}"
        if host.error:
            header += f", {host.error}"
        header += f", {len(host.attempts)} attempt(s)"
        if total > TAIL_LINES:
            header += f" (last {TAIL_LINES} of {total} lines)"
        parts.append(header + " ---\n" + (text or "(no output)"))
    return "\n".join(parts) or (step.error or "")


def _step_case(suite: ET.Element, step: Step, classname: str) -> str:
    """Add the testcase of one step; returns 'failure', 'error', 'skipped' or 'passed'."""
    case = _el(suite, "testcase", classname=classname, name=step.id, time=_seconds(step.duration_s))
    if step.status == StepStatus.RUNNING:
        _el(case, "skipped", message="running: the run has not finished")
        return "skipped"
    if step.status == StepStatus.FAILED:
        _el(case, "failure", _output(step), message=cause(step), type="error")
        return "failure"
    if step.status == StepStatus.UNKNOWN or step.outcome_unknown:
        _el(case, "error", _output(step), message=cause(step), type="outcome-unknown")
        return "error"
    if step.status in _SKIPPED:
        _el(case, "skipped", message=step.status.replace("_", " "))
        return "skipped"
    if step.carried_from:
        _el(case, "system-out", f"carried over from run {step.carried_from}; not re-run")
    if (
        step.status == StepStatus.DONE_BY_HAND
    ):  # drx done: passed, with who did it and what they said
        _el(case, "system-out", step.message or "done by hand")
    return "passed"


def _objective_case(
    suite: ET.Element,
    classname: str,
    name: str,
    what: str,
    facts_: RtoFacts | RpoFacts | None,
    time: float | None,
    absent: str = "",
) -> str:
    """Add the rto-target or rpo-target testcase; returns its result like _step_case."""
    case = _el(suite, "testcase", classname=classname, name=name, time=_seconds(time))
    if facts_ is None:
        _el(case, "skipped", message=f"{what} not measured ({absent})")
        return "skipped"
    verdict = facts_.verdict
    message = f"{what} {verdict.text}"
    if isinstance(facts_, RpoFacts) and facts_.guard:
        message = f"{message}. {facts_.guard}"
    if verdict.state == RunStatus.RUNNING:  # never judged before the run ends
        _el(case, "skipped", message=message)
        return "skipped"
    if verdict.state in ("missed", "unmeasured"):
        _el(case, "failure", f"{message}\n{facts_.basis}", message=message, type="error")
        return "failure"
    if verdict.state == "no-target":
        _el(case, "skipped", message=f"no {what.lower()}_target set: {message}")
        return "skipped"
    _el(case, "system-out", f"{message}\n{facts_.basis}")
    return "passed"


def render_junit(run: Run) -> str:
    """The JUnit XML document of one run."""
    root = ET.Element("testsuites")
    to_site = run.to_site or "?"
    classname = f"{run.runbook}.{run.direction}"
    time = run.rto.measured_s if run.rto.measured_s is not None else run.elapsed_s
    suite = _el(
        root,
        "testsuite",
        name=f"{run.runbook}.{run.direction}.{to_site}",
        timestamp=_timestamp(run.started_at),
        time=_seconds(time),
    )
    props = _el(suite, "properties")
    for name, value in (
        ("run_id", run.run_id),
        ("status", run.status),
        ("direction", run.direction),
        ("source", run.source),
        ("target", run.target),
        # where this run moved the service (a failback keeps the failover's source/target)
        ("moved", f"from {run.from_site} to {run.to_site}"),
        ("moved_from", run.from_site),
        ("moved_to", run.to_site),
        ("parent_run", run.parent_run),
        ("exit_code", run.exit_code),
        ("emergency", run.emergency),
        ("rto_measured_s", run.rto.measured_s),
        ("rto_target_s", run.rto.target_s),
        ("rto_end_to_end_s", run.rto.end_to_end_s),
        ("rpo_guard", run.rpo.guard.state if run.rpo and run.rpo.guard else None),
        (
            "data_loss_accepted",
            run.rpo.guard.accepted_loss
            if run.rpo and run.rpo.guard and run.rpo.guard.accepted
            else None,
        ),
    ):
        if value is not None:
            text = str(value).lower() if isinstance(value, bool) else value
            _el(props, "property", name=name, value=text)
    # a site plan: a testsuite per child, holding its steps and its own rto-target
    children = {c.id: c for c in child_facts(run.children, [s.id for s in run.steps])}
    child_suites = {
        cid: _el(
            root,
            "testsuite",
            name=f"{run.runbook}.{run.direction}.{to_site}/{cid}",
            timestamp=_timestamp(run.started_at),
        )
        for cid in children
    }
    child_results: dict[str, list[str]] = {cid: [] for cid in children}
    results = []
    for step in run.steps:
        cid = step_child(list(children), step.id)
        if cid is None:
            results.append(_step_case(suite, step, classname))
        else:
            child_results[cid].append(_step_case(child_suites[cid], step, f"{classname}.{cid}"))
    for cid, child in children.items():
        facts_ = RtoFacts("RTO", child.rto, f"child {cid} ({child.runbook})", None, None, None)
        name = f"{classname}.{cid}"
        child_results[cid].append(
            _objective_case(child_suites[cid], name, "rto-target", "RTO", facts_, None)
        )
    rto = rto_facts(run)
    judged = rto
    if rto.end_to_end is not None and rto.end_to_end_basis is not None:
        # a resumed run is judged end to end: the outage lasted from the original run's start
        judged = replace(
            rto,
            verdict=rto.end_to_end,
            basis=f"{rto.end_to_end_basis}; this run alone: {rto.verdict.text}",
        )
    results.append(
        _objective_case(suite, classname, "rto-target", "RTO", judged, run.rto.measured_s)
    )
    # a testcase's time is how long it ran: the RPO figure is in its message, never in time
    results.append(
        _objective_case(
            suite, classname, "rpo-target", "RPO", rpo_facts(run), None, rpo_absent(run)
        )
    )
    for probe in run.probes:  # what clients saw: failed when a window outlasted max_down
        fact = probe_fact(probe, run)
        case = _el(suite, "testcase", classname=classname, name=f"probe:{probe.name}", time="0.000")
        if probe.breached:
            _el(case, "failure", f"{fact.text}\n{fact.basis}", message=fact.text, type="error")
            results.append("failure")
        else:
            _el(case, "system-out", f"{fact.text}\n{fact.basis}")
            results.append("passed")
    everything = [*results, *(r for rs in child_results.values() for r in rs)]
    for element, among in (
        (suite, results),
        (root, everything),
        *((child_suites[cid], child_results[cid]) for cid in children),
    ):
        counts = {
            "tests": len(among),
            "failures": among.count("failure"),
            "errors": among.count("error"),
            "skipped": among.count("skipped"),
        }
        for key, value in counts.items():
            element.set(key, str(value))
    root.set("time", suite.get("time", "0"))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
