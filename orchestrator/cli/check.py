"""``drx check [SITE]``: the pre-flight alone — can drx reach, trust and use every host of both
sites, and is the service healthy where it runs now — as a table, before a drill."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

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
from orchestrator.errors import TransportError

if TYPE_CHECKING:
    from orchestrator.model.inventory import Host, Inventory
    from orchestrator.model.runbook import Runbook
    from orchestrator.transport.base import Sudo


@dataclass
class HostCheck:
    """What checking one host found."""

    host: Host
    sudo: bool
    seconds: float
    error: TransportError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


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


def check_hosts(hosts: list[Host], sudo: dict[str, set[Sudo]]) -> list[HostCheck]:
    """Connect to every host in parallel, check its key, run ``true`` (and ``sudo -n true``)."""
    from orchestrator.run.preflight import PREFLIGHT_CONCURRENCY, open_transports, prove

    transports = open_transports(hosts)

    def one(host: Host) -> HostCheck:
        t0 = time.monotonic()
        needs_sudo = host.name in sudo
        try:
            as_users = sorted(sudo.get(host.name, ()), key=str)
            prove(transports[host.spec.transport], host, sudo=as_users).close()
        except TransportError as exc:
            return HostCheck(host, needs_sudo, time.monotonic() - t0, exc)
        return HostCheck(host, needs_sudo, time.monotonic() - t0)

    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=min(PREFLIGHT_CONCURRENCY, len(hosts))) as pool:
        return list(pool.map(one, hosts))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def run_check(opts: Options, site: str | None) -> tuple[str, list[str], bool, str | None]:
    """The table, the problem lines, whether everything passed, and a note on the state."""
    from orchestrator.model.units import format_duration
    from orchestrator.plan.build import build_plan
    from orchestrator.run.preflight import cause, connect_all, failure_lines, login
    from orchestrator.run.runner import check_source_health

    runbook, inventory = opts.load_checked(lambda inv: [s for s in inv.sites if s != inv.active])
    active = active_site(opts.store, inventory, runbook.name)
    if site is not None:
        check_site(inventory, site)
    target = site if site not in (None, active) else next(s for s in inventory.sites if s != active)
    sites = [active, target] if site is not None else list(inventory.sites)
    plan = build_plan(runbook, inventory, target, source=active)
    uses_control = any(h.name == "control" for h in plan.hosts())
    hosts = [h for s in sites for h in inventory.sites[s].hosts]
    if uses_control:
        hosts.insert(0, inventory.control)
    sudo = sudo_hosts(runbook, inventory, plan.aliases())
    results = check_hosts(hosts, sudo)
    rows = [["host", "site", "login", "checked", "time", "result"]]
    for r in results:
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
    problems = failure_lines({r.host.name: r.error for r in results if r.error}, inventory)
    health_ok = True
    if plan.health or plan.source_health:  # a site plan: each child's health too
        health_hosts = [h for hp in plan.health for h in hp.hosts_before]
        health_hosts += [h for ps in plan.source_health for h in ps.hosts]
        connections, failures = connect_all(list({h.name: h for h in health_hosts}.values()))
        try:
            t0 = time.monotonic()
            bad = check_source_health(plan, connections)
            seconds = time.monotonic() - t0
        finally:
            for conn in connections.values():
                conn.close()
        bad += [f"health probe host {n} unreachable" for n in failures]
        health_ok = not bad
        names = ", ".join(
            [*(hp.check.name for hp in plan.health), *(ps.id for ps in plan.source_health)]
        )
        rows.append(
            [
                f"health ({names})",
                active,
                "(active site)",
                "one poll",
                format_duration(seconds),
                "ok" if health_ok else "FAILED",
            ]
        )
        problems += bad
    ok = all(r.ok for r in results) and health_ok
    return _table(rows), problems, ok, state_note(opts.store, inventory, runbook.name)


@app.command()
def check(
    site: Annotated[
        str | None,
        typer.Argument(help="The site you would fail over to (default: every site)."),
    ] = None,
    runbook: RunbookOpt = None,
    inventory: InventoryOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
    log_format: LogFormatOpt = "console",
    verbose: VerboseOpt = 0,
) -> None:
    """Before a drill: connect to every host of the active site and SITE, check host keys, run
    a command (and `sudo -n true` where a step uses sudo), and poll the health check once at
    the active site. Prints a table; exit 0 when all pass, 2 otherwise. Changes nothing.

    Example: drx check site-b -i inventory/ssh.yaml
    """
    opts = options(runbook, inventory, state_dir, log_format, verbose, state_url)
    table, problems, ok, note = run_check(opts, site)
    typer.echo(table, nl=False)
    if note:
        typer.echo(note, err=True)
    for line in problems:
        typer.echo(f"problem: {line}", err=True)
    if not ok:
        typer.echo(
            f"check failed: {len(problems)} problem(s); a failover now would be refused", err=True
        )
        raise typer.Exit(2)
    typer.echo("check passed: every host is reachable and the service is healthy", err=True)
