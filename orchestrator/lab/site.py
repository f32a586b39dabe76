"""The site lab: the whole site moved by one site plan (``runbooks/site-lab.yaml``) — the
PostgreSQL primary, the application servers and a real HAProxy in front of them — for
``make lab-site`` and the test that drills it.

What it builds under its directory (default ``lab-site``), on loopback:

- the PostgreSQL lab (:mod:`orchestrator.lab.postgres`): sshd hosts ``db-a``/``db-b``, the
  primary at site-a and its streaming replica at site-b, the row writer the database tier
  drains and repoints;
- sshd hosts ``app-a`` (site-a) and ``app-b`` (site-b), each with an application server
  (:mod:`orchestrator.lab.siteapp`) on its address, reading and writing its own site's cluster;
- sshd host ``lb`` at a third site, ``edge``, owning HAProxy's admin socket (the lab user's,
  mode 600): HAProxy's frontend on ``lb``'s address, backend ``app`` with a server per site,
  site-b's in maintenance. The load balancer is at neither data site, so that losing one does
  not take the way to the other with it; the cut-over is drx steps over SSH on ``lb``;
- a client that keeps sending orders through HAProxy during the whole drill (one at a time,
  every 20 ms) and records every outcome, from which the lab counts the requests that failed
  during each run.

Everything the lab starts is stopped by PID when it stops, also after a failure or Ctrl-C: the
client, HAProxy (by its pidfile), the application servers, then the PostgreSQL lab (row writer,
clusters, every sshd host, its sudoers drop-in).

CLI: ``python -m orchestrator.lab.site drill [--dir DIR]`` — build the lab, run ``drx check``,
``drx plan``, ``drx failover site-b``, the report, ``drx failback``, the report, and print the
site's RTO, each child's RTO and RPO, and the requests that failed during each run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from orchestrator.lab.postgres import (
    DATABASE,
    START_TIMEOUT,
    PostgresLab,
    _alive,
    latest_summary,
    run_drx,
    run_drx_captured,
)
from orchestrator.lab.sshd import DEFAULT_USER, LabError, free_port
from orchestrator.record.summary import RunSummary
from orchestrator.vocab import Direction

HAPROXY = Path("/usr/sbin/haproxy")
DEFAULT_DIR = Path("lab-site")
EDGE = "edge"
#: The application host of each site.
APP_HOSTS = {"site-a": "app-a", "site-b": "app-b"}
LB_HOST = "lb"
#: The pause between the client's requests, and how long one may take.
CLIENT_PAUSE_S = 0.02
CLIENT_TIMEOUT_S = 2.0

#: What the lb host runs to reach the admin socket (no socat on a plain Debian): stdin to the
#: socket, the answer to stdout.
_API = (
    "python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
    "s.sendall(sys.stdin.buffer.read()); s.shutdown(socket.SHUT_WR); sys.stdout.write(s.makefile().read())"
    "' {socket}"
)

_HAPROXY_CFG = """\
# drx site lab: HAProxy in front of one application server per site (the runtime API switches)
global
    stats socket {socket} mode 600 level admin user {user}
    pidfile {pidfile}
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend www
    bind {address}:{port}
    default_backend app
backend app
{servers}
"""


@dataclass
class Outcome:
    """One request the client sent through HAProxy."""

    sent: float  # UNIX time
    done: float
    status: int  # 0: no answer
    site: str | None


@dataclass
class Client:
    """Sends ``POST /order`` through the frontend one after another until stopped."""

    address: str
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="site-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        host, _, port = self.address.rpartition(":")
        while not self._stop.is_set():
            sent = time.time()
            status, site = 0, None
            conn = http.client.HTTPConnection(host, int(port), timeout=CLIENT_TIMEOUT_S)
            try:
                conn.request("POST", "/order")
                response = conn.getresponse()
                status = response.status
                with contextlib.suppress(ValueError):
                    site = json.loads(response.read()).get("site")
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            self.outcomes.append(Outcome(sent, time.time(), status, site))
            self._stop.wait(CLIENT_PAUSE_S)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CLIENT_TIMEOUT_S + 5)


class SiteLab:
    """The PostgreSQL lab, the application servers, HAProxy and the client (see the module
    docstring). ``with SiteLab(root) as lab: lab.start()``; leaving the block stops it."""

    def __init__(self, root: Path, *, user: str = DEFAULT_USER) -> None:
        self._check_environment()
        self.pg = PostgresLab(root, user=user)
        self.root = self.pg.root
        self.user = user
        self.inventory = self.root / "site-inventory.yaml"
        self.app_servers: dict[str, str] = {}  # site -> host:port
        self.frontend = ""
        self.client: Client | None = None
        self._apps: list[subprocess.Popen[bytes]] = []
        self._lb_dir = self.root / "lb"
        self._stopped = False

    @staticmethod
    def _check_environment() -> None:
        PostgresLab._check_environment()
        if not os.access(HAPROXY, os.X_OK):
            raise LabError(f"missing {HAPROXY} (make system-deps installs haproxy)")

    @property
    def state_dir(self) -> Path:
        return self.pg.state_dir

    # --- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Build and start everything; on any failure stop what was started and raise."""
        try:
            self.pg.start()
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        sshd = self.pg.sshd
        assert sshd is not None
        for name in (*APP_HOSTS.values(), LB_HOST):
            sshd.add_host(name)
        sshd.start([*APP_HOSTS.values(), LB_HOST])
        primary = self.pg.nodes["db-a"]
        self.pg._sql(
            primary,
            "CREATE TABLE site_requests (n bigserial PRIMARY KEY, site text NOT NULL, "
            "at timestamptz NOT NULL DEFAULT now())",
            "ALTER TABLE site_requests OWNER TO app",
            db=DATABASE,
        )
        for node in self.pg.nodes.values():
            self._start_app(node.site, self.pg._dsn(node))
        self._start_haproxy()
        self._write_inventory()
        self._wait_frontend("site-a")
        self.client = Client(self.frontend)
        self.client.start()

    def _start_app(self, site: str, dsn: str) -> None:
        assert self.pg.sshd is not None
        host = self.pg.sshd.host(APP_HOSTS[site])
        address = f"{host.address}:{free_port(host.address)}"
        app_dir = self.root / "apps" / host.name
        app_dir.mkdir(parents=True)
        config = app_dir / "config.json"
        config.write_text(json.dumps({"listen": address, "site": site, "dsn": dsn}))
        os.chmod(config, 0o600)
        with open(app_dir / "app.log", "ab") as log:
            # a session of its own: a Ctrl-C reaches the drill, which stops the app by PID
            self._apps.append(
                subprocess.Popen(
                    [sys.executable, "-m", "orchestrator.lab.siteapp", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )
        self.app_servers[site] = address

    def _start_haproxy(self) -> None:
        assert self.pg.sshd is not None
        lb = self.pg.sshd.host(LB_HOST)
        self._lb_dir.mkdir()
        os.chmod(self._lb_dir, 0o755)  # the lab user reaches the socket through it
        servers = "\n".join(
            f"    server {site} {address} check inter 200ms"
            + (" disabled" if site != "site-a" else "")
            for site, address in self.app_servers.items()
        )
        self.frontend = f"{lb.address}:{free_port(lb.address)}"
        cfg = self._lb_dir / "haproxy.cfg"
        cfg.write_text(
            _HAPROXY_CFG.format(
                socket=self.socket,
                user=self.user,
                pidfile=self.pidfile,
                address=lb.address,
                port=self.frontend.rpartition(":")[2],
                servers=servers,
            )
        )
        for args in (["-c", "-q", "-f", str(cfg)], ["-D", "-f", str(cfg)]):
            proc = subprocess.run([str(HAPROXY), *args], capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise LabError(f"haproxy {args[0]} failed: {(proc.stderr or proc.stdout)[-800:]}")
        deadline = time.monotonic() + START_TIMEOUT
        while self.haproxy_pid() is None or not self.socket.exists():
            if time.monotonic() > deadline:
                raise LabError("haproxy wrote no pidfile or admin socket")
            time.sleep(0.05)

    @property
    def socket(self) -> Path:
        return self._lb_dir / "admin.sock"

    @property
    def pidfile(self) -> Path:
        return self._lb_dir / "haproxy.pid"

    def haproxy_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def _wait_frontend(self, site: str) -> None:
        host, _, port = self.frontend.rpartition(":")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            try:
                conn.request("GET", f"/health?site={site}")
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise LabError(f"HAProxy's frontend {self.frontend} never served {site}")
            time.sleep(0.1)

    def _write_inventory(self) -> None:
        assert self.pg.sshd is not None
        doc: dict[str, Any] = yaml.safe_load(self.pg.inventory.read_text())
        doc["vars"]["frontend"] = self.frontend
        for site, name in APP_HOSTS.items():
            host = self.pg.sshd.host(name)
            entry = doc["sites"][site]
            entry.setdefault("vars", {})["app_server"] = self.app_servers[site]
            entry["hosts"][name] = {"address": host.address, "port": host.port, "roles": ["app"]}
        lb = self.pg.sshd.host(LB_HOST)
        doc["sites"][EDGE] = {
            "hosts": {
                LB_HOST: {
                    "address": lb.address,
                    "port": lb.port,
                    "roles": ["lb"],
                    "vars": {"haproxy_api": _API.format(socket=shlex.quote(str(self.socket)))},
                }
            }
        }
        self.inventory.write_text(
            "# Site lab: PostgreSQL, application servers and HAProxy behind sshd hosts on "
            "loopback (python -m orchestrator.lab.site)\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=200)
        )

    # --- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the client, HAProxy, the application servers and the PostgreSQL lab, each by
        PID. Idempotent; every part is attempted even if another fails."""
        if self._stopped:
            return
        self._stopped = True
        if self.client is not None:
            self.client.stop()
        pid = self.haproxy_pid()
        if pid is not None:
            _kill(pid)
        for proc in self._apps:
            PostgresLab._terminate(proc)
        self.pg.stop()

    def __enter__(self) -> SiteLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _kill(pid: int) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _alive(pid):
            return


# --- the drill ------------------------------------------------------------------------------


@dataclass
class SiteDrillResult:
    """What ``make lab-site`` reports."""

    check_exit: int | None = None
    check_output: str = ""  # drx check site-b's output before the failover
    failover_exit: int | None = None
    failback_exit: int | None = None
    failover: RunSummary | None = None
    failback: RunSummary | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    rows_lost: int | None = None  # the row writer's acknowledged rows missing at the end
    primary_at_end: str | None = None

    def failed_during(self, summary: RunSummary | None) -> list[Outcome]:
        """The client's requests sent during the run that failed."""
        window = _window(summary)
        if window is None:
            return []
        start, end = window
        return [o for o in self.outcomes if start <= o.sent <= end and o.status != 200]

    def sent_during(self, summary: RunSummary | None) -> list[Outcome]:
        window = _window(summary)
        if window is None:
            return []
        return [o for o in self.outcomes if window[0] <= o.sent <= window[1]]

    @property
    def ok(self) -> bool:
        return (
            (self.check_exit, self.failover_exit, self.failback_exit) == (0, 0, 0)
            and self.rows_lost == 0
            and self.primary_at_end == "site-a"
        )


def _window(summary: RunSummary | None) -> tuple[float, float] | None:
    from orchestrator.report.units import parse_when

    if summary is None:
        return None
    began, ended = parse_when(summary.started_at), parse_when(summary.finished_at)
    if began is None or ended is None:
        return None
    return began.timestamp(), ended.timestamp()


def run_site_drill(root: Path, runbook: Path, *, echo: bool = True) -> SiteDrillResult:
    """Build the lab, drill the site plan to site-b and back with drx, stop the lab."""
    result = SiteDrillResult()
    with SiteLab(root) as lab:
        lab.start()
        print(
            f"lab: app servers {lab.app_servers}, HAProxy frontend {lab.frontend} "
            f"(pid {lab.haproxy_pid()}), inventory {lab.inventory}",
            file=sys.stderr,
            flush=True,
        )
        common = ["-r", str(runbook), "-i", str(lab.inventory), "--state-dir", str(lab.state_dir)]
        state = ["--state-dir", str(lab.state_dir)]
        result.check_exit, result.check_output, _ = run_drx_captured(
            ["check", "site-b", *common], echo=echo
        )
        if result.check_exit != 0 or run_drx(["plan", "site-b", *common], echo=echo) != 0:
            return result
        result.failover_exit = run_drx(["failover", "site-b", "--yes", *common], echo=echo)
        result.failover = latest_summary(lab.state_dir, Direction.FAILOVER)
        run_drx(["report", *state], echo=echo)
        if result.failover_exit in (0, 3):
            result.failback_exit = run_drx(["failback", "--yes", *common], echo=echo)
            result.failback = latest_summary(lab.state_dir, Direction.FAILBACK)
            run_drx(["report", *state], echo=echo)
        assert lab.client is not None
        lab.client.stop()
        result.outcomes = list(lab.client.outcomes)
        lab.pg.drain_app()
        result.primary_at_end = lab.pg.primary_site()
        if result.primary_at_end is not None:
            lost = lab.pg.committed_ids() - lab.pg.row_ids(result.primary_at_end)
            result.rows_lost = len(lost)
    return result


def _num(value: Any, unit: str) -> str:
    return f"{value:g} {unit}" if isinstance(value, int | float) else "—"


def _run_lines(label: str, code: int | None, summary: RunSummary | None) -> list[str]:
    rto = summary.rto if summary else None
    lines = [
        f"{label}: exit {code if code is not None else '—'}, site RTO "
        f"{_num(rto.measured_s if rto else None, 's')} "
        f"(target {_num(rto.target_s if rto else None, 's')})"
    ]
    for child in summary.children if summary else []:
        child_rto = child.get("rto") or {}
        rpo = child.get("rpo") or {}
        rpo_text = f", RPO {_num(rpo.get('measured_bytes'), 'B')} of WAL" if rpo else ""
        lines.append(
            f"  {child.get('id')} ({child.get('runbook')}): {child.get('status')}, RTO "
            f"{_num(child_rto.get('measured_s'), 's')} "
            f"(target {_num(child_rto.get('target_s'), 's')}){rpo_text}"
        )
    return lines


def _client_line(label: str, result: SiteDrillResult, summary: RunSummary | None) -> str:
    sent, failed = result.sent_during(summary), result.failed_during(summary)
    text = f"{label}: the client sent {len(sent)} requests through HAProxy, {len(failed)} failed"
    if failed:
        text += (
            f" (from {failed[0].sent - sent[0].sent:.2f} s to "
            f"{failed[-1].done - sent[0].sent:.2f} s into the run)"
        )
    return text


def report_lines(result: SiteDrillResult) -> list[str]:
    """The figures of a site drill, one line each."""
    served = {o.site for o in result.outcomes if o.status == 200}
    return [
        *_run_lines("failover to site-b", result.failover_exit, result.failover),
        *_run_lines("failback to site-a", result.failback_exit, result.failback),
        _client_line("failover requests", result, result.failover),
        _client_line("failback requests", result, result.failback),
        f"client: {len(result.outcomes)} requests in all, "
        f"{sum(o.status != 200 for o in result.outcomes)} failed, served at "
        f"{', '.join(sorted(s for s in served if s)) or 'no site'}; row writer: "
        f"{result.rows_lost if result.rows_lost is not None else '—'} rows lost; primary at "
        f"the end: {result.primary_at_end or 'none'}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.lab.site",
        description="PostgreSQL, application servers and HAProxy behind sshd hosts, and the "
        "site plan's drill.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    drill_p = sub.add_parser("drill", help="build the lab, fail the site over to site-b and back")
    drill_p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    drill_p.add_argument("--runbook", type=Path, default=Path("runbooks/site-lab.yaml"))
    args = parser.parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run_site_drill(args.dir, args.runbook.resolve())
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab: interrupted; everything the lab started is stopped", file=sys.stderr)
        return 130
    for line in report_lines(result):
        print(line)
    print(f"lab: everything stopped; runs in {args.dir / 'drx'}", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
