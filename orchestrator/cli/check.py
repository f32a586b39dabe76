"""``drx check [SITE]``: can we fail over to SITE now? The decision card (predicted and measured
RTO, RPO exposure, source health, readiness, drift since the last good drill, overdue drills),
then the pre-flight alone — can drx reach, trust and use every host of both sites — as a table.
Also unattended, between drills: ``--format prometheus -o FILE`` for node_exporter."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.app import (
    InventoryOpt,
    LogFormatOpt,
    RunbookOpt,
    StateDirOpt,
    StateUrlOpt,
    VerboseOpt,
    app,
    options,
)
from orchestrator.cli.options import Options, active_site, check_site, state_note
from orchestrator.vocab import Direction

if TYPE_CHECKING:
    from orchestrator.model.inventory import Inventory
    from orchestrator.model.runbook import Runbook
    from orchestrator.report.card import Card
    from orchestrator.run.readiness import Findings
    from orchestrator.transport.base import Sudo

FORMATS = ("text", "json", "prometheus")


def sudo_hosts(
    runbook: Runbook, inventory: Inventory, aliases: dict[str, str]
) -> dict[str, set[Sudo]]:
    """Hosts on which a step, or the undo of one, runs through sudo — and as whom (True: root,
    else the user named), so that a sudoers rule granting only that account passes."""
    from orchestrator.model.inventory import select

    names: dict[str, set[Sudo]] = {}
    for step in runbook.steps:
        for s, selectors in ((step, step.hosts), (step.undo, None)):
            if s is None or not s.sudo:
                continue
            for text in selectors or s.hosts:
                try:
                    for h in select(inventory, text, aliases):
                        names.setdefault(h.name, set()).add(s.sudo)
                except ValueError:
                    continue  # validation reports it
    return names


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


@dataclass
class CheckResult:
    """What ``drx check`` found and will say."""

    card: Card
    findings: Findings
    table: str
    problems: list[str]
    warnings: list[str]
    note: str | None
    strict: bool
    drill: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 ready; 2 not ready; 1 ready but drifted or overdue under ``--strict``."""
        if self.problems:
            return 2
        if self.strict and (self.card.drift or self.card.overdue):
            return 1
        return 0


def run_check(opts: Options, site: str | None, *, strict: bool = False) -> CheckResult:
    """Check every host, the source's health, readiness and the RPO exposure (all in
    parallel), and read the history for the card."""
    from orchestrator.model.units import format_duration
    from orchestrator.plan.build import build_plan
    from orchestrator.plan.predictions import predictions_for
    from orchestrator.record import drift
    from orchestrator.record.runs import load_summaries
    from orchestrator.report.card import Card, RpoExposure, interval
    from orchestrator.run import readiness
    from orchestrator.run.preflight import cause, failure_lines, login
    from orchestrator.run.runner import check_source_health, file_sha256

    t0 = time.monotonic()
    runbook, inventory = opts.load_checked(lambda inv: [s for s in inv.sites if s != inv.active])
    active = active_site(opts.store, inventory, runbook.name)
    if site is not None:
        check_site(inventory, site)
    target = site if site not in (None, active) else next(s for s in inventory.sites if s != active)
    sites = [active, target] if site is not None else list(inventory.sites)
    steps_pred, health_pred = predictions_for(opts.store, runbook.name, Direction.FAILOVER, target)
    plan = build_plan(
        runbook,
        inventory,
        target,
        source=active,
        predictions=steps_pred,
        predicted_health_s=health_pred,
    )
    probes = [*plan.readiness, *([plan.rpo_probe] if plan.rpo_probe else [])]
    uses_control = any(h.name == "control" for h in plan.hosts()) or any(
        h.name == "control"
        for hosts in [*(cp.hosts for cp in probes), *(ps.hosts for ps in plan.source_health)]
        for h in hosts
    )
    hosts = [h for s in sites for h in inventory.sites[s].hosts]
    if uses_control:
        hosts.insert(0, inventory.control)
    sudo = sudo_hosts(runbook, inventory, plan.aliases())
    for cp in probes:
        if cp.check.sudo:
            for h in cp.hosts:
                sudo.setdefault(h.name, set()).add(cp.check.sudo)
    checked, connections = readiness.prove_hosts(hosts, sudo)
    try:
        # hosts a check or a step names outside the two sites checked (a third site's, such as
        # a load balancer's) are reached too, before a failover needs them
        seen = {c.host.name for c in checked}
        named = [*(h for cp in probes for h in cp.hosts), *plan.hosts()]
        extra = [h for h in named if h.name not in seen]
        if extra:
            more, more_conn = readiness.prove_hosts(list({h.name: h for h in extra}.values()), sudo)
            checked += more
            connections.update(more_conn)
        found = readiness.check_now(plan, connections, checked, check_source_health)
    finally:
        readiness.close(connections)
    rows = [["host", "site", "login", "checked", "time", "result"]]
    for r in checked:
        checks = "connect, host key, command" if r.host.spec.transport == "ssh" else "command"
        if r.sudo:
            checks += ", sudo"
        result = "ok" if r.error is None else f"FAILED: {cause(r.error, r.host)}"
        rows.append(
            [
                r.host.name,
                r.host.site or "-",
                login(r.host),
                checks,
                format_duration(r.seconds),
                result,
            ]
        )
    problems = failure_lines({r.host.name: r.error for r in checked if r.error}, inventory)
    if found.health is not None:
        names = ", ".join(  # a site plan: each child's health too
            [*(hp.check.name for hp in plan.health), *(ps.id for ps in plan.source_health)]
        )
        rows.append(
            [
                f"health ({names})",
                active,
                "(active site)",
                "one poll",
                format_duration(found.health_s),
                "FAILED" if found.health else "ok",
            ]
        )
        problems += found.health
    for p in found.readiness:
        shown = f"ok (rc {p.rc}, value {p.value!r})" if p.ok else f"FAILED: {p.why}"
        rows.append(
            [
                f"readiness ({p.name})",
                inventory.host(p.host).site or "-",
                p.host,
                "one poll",
                format_duration(p.seconds),
                shown,
            ]
        )
        if not p.ok:
            problems.append(f"readiness '{p.name}' on {p.host}: {p.why}")
    rpo: RpoExposure | None = None
    if found.rpo is not None:
        value = (
            found.rpo.value if found.rpo.ok and isinstance(found.rpo.value, int | float) else None
        )
        rpo = RpoExposure(
            unit="bytes" if runbook.rpo_is_bytes else "seconds",
            value=value,
            target=runbook.rpo_target,
            host=found.rpo.host,
            why=found.rpo.why or None,
        )
    summaries = load_summaries(opts.store)
    good = drift.proven(summaries, runbook.name)
    last = good[-1] if good else None
    warnings: list[str] = []
    changes: list[drift.Change] = []
    if last is not None:
        now_hosts = {
            h.name: {"site": s.name, "address": h.spec.address, "port": h.spec.port}
            for s in inventory.sites.values()
            for h in s.hosts
        }
        changes = drift.changes(
            last,
            runbook_sha256=file_sha256(runbook.path),
            inventory_sha256=file_sha256(inventory.path),
            hosts_now=now_hosts,
            keys_now={r.host.name: r.key for r in checked if r.key},
        )
    age = drift.age_s(last) if last is not None else None
    every = runbook.drill_every
    overdue = every is not None and (age is None or age > every)
    warnings += [c.text for c in changes]
    if overdue:
        warnings.append(
            f"drill overdue: no succeeded failover of {runbook.name} yet (drill_every "
            f"{interval(every)})"
            if last is None
            else f"drill overdue: the last successful drill ({drift.day(last.finished_at)}, "
            f"run {last.run_id}) is older than drill_every {interval(every)}"
        )
    if rpo is not None and rpo.within_target is False:
        warnings.append(
            f"RPO exposure {rpo.show(rpo.value)} on {rpo.host} is over rpo_target "
            f"{rpo.show(rpo.target)}: a failover now, with the source lost, would lose that much"
        )
    card = Card(
        runbook=runbook.name,
        site=target,
        active=active,
        predicted_rto_s=plan.predicted_rto_s,
        predicted_rto_is_lower_bound=plan.predicted_rto_is_lower_bound,
        critical_path=list(plan.critical_path),
        rto_target_s=runbook.rto_target,
        measured=drift.rto_stats(summaries, runbook.name, target),
        rpo=rpo,
        health_ok=None if found.health is None else not found.health,
        readiness_ok=sum(1 for p in found.readiness if p.ok),
        readiness_total=len(found.readiness),
        last_success=last.run_id if last else None,
        last_success_at=(last.finished_at or last.started_at) if last else None,
        drill_every_s=every,
        overdue=overdue,
        drift=changes,
        problems=problems,
        seconds=time.monotonic() - t0,
    )
    return CheckResult(
        card=card,
        findings=found,
        table=_table(rows),
        problems=problems,
        warnings=warnings,
        note=state_note(opts.store, inventory, runbook.name),
        strict=strict,
        drill={"every_s": every, "age_s": None if age is None else round(age, 1)},
    )


def check_document(result: CheckResult) -> dict[str, Any]:
    """``drx check --format json``: the card, then everything behind it."""
    from orchestrator.run.preflight import cause, login

    card = result.card
    return {
        "runbook": card.runbook,
        "site": card.site,
        "active": card.active,
        "checked_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "seconds": round(card.seconds, 3),
        "ready": card.ready,
        "exit_code": result.exit_code,
        "card": card.to_dict(),
        "hosts": [
            {
                "host": r.host.name,
                "site": r.host.site,
                "login": login(r.host),
                "ok": r.ok,
                "sudo": r.sudo,
                "seconds": round(r.seconds, 3),
                "error": None if r.error is None else cause(r.error, r.host),
                "host_key": r.key,
            }
            for r in result.findings.hosts
        ],
        "source_health": None
        if result.findings.health is None
        else {"ok": not result.findings.health, "problems": result.findings.health},
        "readiness": [p.to_dict() for p in result.findings.readiness],
        "drift": {
            "since": None
            if card.last_success is None
            else {"run_id": card.last_success, "at": card.last_success_at},
            "changes": [c.to_dict() for c in card.drift],
        },
        "drill": {
            "every_s": result.drill.get("every_s"),
            "last_run": card.last_success,
            "last_at": card.last_success_at,
            "age_s": result.drill.get("age_s"),
            "overdue": card.overdue,
        },
        "problems": result.problems,
        "warnings": result.warnings,
    }


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` through a temp file in its directory and a rename, so that a reader
    (node_exporter's textfile collector) never sees half a file. Readable by all (0644):
    the exporter runs as its own user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@app.command()
def check(
    site: Annotated[
        str | None,
        typer.Argument(help="The site you would fail over to (default: every site)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Output: text, json or prometheus.")
    ] = "text",
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Write to this file (atomically) instead of stdout."),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Exit 1 when the runbook drifted or its drill is overdue."),
    ] = False,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Can we fail over to SITE now? Prints the decision card — predicted RTO and its critical
    path, the RTOs measured in past failovers to SITE, the RPO exposure now (rpo_probe), the
    source's health, readiness checks, drift since the last successful drill, an overdue
    drill — then a table of every host of the active site and SITE (and of any other site a
    step or check names): connect, host key, a command (and `sudo -n true` where a step uses sudo). Exit 0 ready, 2 not ready, 1 under
    --strict when drifted or overdue. Changes nothing.

    Example: drx check site-b -i inventory/ssh.yaml --format prometheus -o drx.prom
    """
    from orchestrator.cli.app import check_format

    check_format(fmt, FORMATS)
    opts = options(runbook, inventory, state_dir, log_format, verbose, state_url)
    result = run_check(opts, site, strict=strict)
    if fmt == "json":
        text = json.dumps(check_document(result), indent=2) + "\n"
    elif fmt == "prometheus":
        from orchestrator.report.prometheus import exposition

        text = exposition(result)
    else:
        text = "\n".join(result.card.lines()) + "\n\n" + result.table
    if output:
        write_atomically(Path(output), text)
    else:
        typer.echo(text, nl=False)
    if result.note:
        typer.echo(result.note, err=True)
    for line in result.problems:
        typer.echo(f"problem: {line}", err=True)
    for line in result.warnings:
        typer.echo(f"warning: {line}", err=True)
    code = result.exit_code
    if code == 2:
        typer.echo(
            f"check failed: {len(result.problems)} problem(s); a failover now would be refused",
            err=True,
        )
    elif code == 1:
        typer.echo(
            "check passed, but --strict: the runbook drifted or its drill is overdue", err=True
        )
    else:
        typer.echo("check passed: every host is reachable and the service is healthy", err=True)
    if code:
        raise typer.Exit(code)
