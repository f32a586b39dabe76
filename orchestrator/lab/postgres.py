"""A PostgreSQL lab: a primary at site-a and a streaming replica at site-b, each behind its own
real sshd host on loopback, and an application that writes rows — for ``make lab-postgres`` and
the test that drills ``runbooks/postgres.yaml`` on every change.

What it builds under its directory (default ``lab-postgres``):

- two sshd hosts, ``db-a`` (site-a) and ``db-b`` (site-b), from :class:`orchestrator.lab.sshd.Lab`,
  logged into as the unprivileged lab user (``drxlab``);
- one PostgreSQL 15 cluster per host, listening on the host's loopback address on a free port,
  with a unix socket directory of its own (``pg/<host>/``). ``db-a`` is the primary; ``db-b`` a
  replica made with ``pg_basebackup``, streaming through a physical slot named after it. Each
  cluster's identity (listen address, port, socket directory, ``primary_conninfo`` pointing at
  the other one, ``primary_slot_name``) lives on the ``pg_ctl -o`` command line, never in the
  data directory, so data directories stay interchangeable after ``pg_basebackup``/``pg_rewind``.
  Data checksums and ``wal_log_hints`` are on (``pg_rewind`` needs one of them);
- a sudoers drop-in that lets the lab user run commands as ``postgres`` and as nobody else —
  what the runbook's ``sudo: postgres`` steps need — removed when the lab stops;
- the row-writing application (:mod:`orchestrator.lab.rowapp`) and its ledger of acknowledged
  commits, from which the lab counts rows lost;
- ``inventory.yaml`` for the runbook (see the vars it documents), and drx's state in ``drx/``.

Everything the lab starts is stopped by PID when it stops (also after a failure or Ctrl-C): the
application, each cluster's postmaster (read from its ``postmaster.pid``: the drill restarts
clusters under new PIDs), the sshd hosts; then the sudoers drop-in is removed.

CLI: ``python -m orchestrator.lab.postgres drill [--dir DIR]`` — build the lab, run ``drx check``,
``drx plan``,
``drx failover site-b``, the report, ``drx failback``, and print RTO, RPO and rows lost.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from orchestrator.lab.sshd import DEFAULT_USER, Lab, LabError, free_port
from orchestrator.record.summary import RunSummary
from orchestrator.vocab import Direction

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUDO = "/usr/bin/sudo"
SUDOERS_DIR = Path("/etc/sudoers.d")
PG_USER = "postgres"
DATABASE = "app"
#: The file that marks a directory as a lab's own (the only kind the lab deletes).
MARKER = ".drx-lab-postgres"
#: ``make lab-postgres``'s directory: not under ``./.drx``, which drx keeps owner-only (0700),
#: so that the lab user can reach its files
DEFAULT_DIR = Path("lab-postgres")
#: Seconds a cluster, the replication or the application gets to come up.
START_TIMEOUT = 30.0

_CONF = """\
# drx lab: settings both sites share (each site's identity is on the pg_ctl -o command line)
wal_level = replica
wal_log_hints = on
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = 64MB
hot_standby = on
shared_buffers = 16MB
max_connections = 30
"""

_HBA = """\
# drx lab: the postgres OS user on the socket; everyone else over TCP from loopback, by password
local   all             {pg_user}                                peer
host    all             all             127.0.0.0/8             scram-sha-256
host    replication     replicator      127.0.0.0/8             scram-sha-256
"""


@dataclass
class PgNode:
    """One site's cluster: where it lives, how it is reached, who its peer is."""

    host: str  # the sshd host (inventory name), e.g. db-a
    site: str
    node: str  # application_name and slot name, e.g. db_a
    address: str
    port: int
    dir: Path

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.dir / "sock"

    @property
    def log(self) -> Path:
        return self.dir / "postgresql.log"

    @property
    def passfile(self) -> Path:
        return self.dir / "pgpass"

    def opts(self, peer: PgNode) -> str:
        """The site's identity, for ``pg_ctl -o`` (pg_ctl hands it to a shell)."""
        conninfo = (
            f"host={peer.address} port={peer.port} user=replicator "
            f"application_name={self.node} passfile={self.passfile}"
        )
        return (
            f"-c listen_addresses={self.address} -p {self.port} "
            f"-c unix_socket_directories={self.socket_dir} "
            f"-c primary_conninfo='{conninfo}' -c primary_slot_name={self.node}"
        )

    def psql(self) -> str:
        return (
            f"psql -X -w -At -v ON_ERROR_STOP=1 -h {shlex.quote(str(self.socket_dir))} "
            f"-p {self.port} -d postgres"
        )

    def peer_conninfo(self, peer: PgNode) -> str:
        """How this site reaches its peer's cluster as ``replicator`` (pg_rewind, RPO)."""
        return (
            f"host={peer.address} port={peer.port} user=replicator dbname=postgres "
            f"passfile={self.passfile} connect_timeout=5"
        )

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (OSError, IndexError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostgresLab:
    """Two PostgreSQL sites behind sshd hosts, and the application (see the module docstring).

    ``with PostgresLab(root) as pg: pg.start()`` builds and starts everything; leaving the
    block stops it. ``committed_ids()`` and ``row_ids(site)`` count rows for the drill.
    """

    def __init__(self, root: Path, *, user: str = DEFAULT_USER) -> None:
        self.root = Path(root).resolve()
        if re.search(r"[\s'\"\\$`]", str(self.root)):
            raise LabError(f"the lab directory {self.root} must not contain spaces or quotes")
        self._check_environment()
        self.user = user
        self.sshd: Lab | None = None
        self.nodes: dict[str, PgNode] = {}
        self.app_pid: int | None = None
        self._app: subprocess.Popen[bytes] | None = None
        self._sudoers: Path | None = None
        self._stopped = False
        self.app_address = ""
        self.inventory = self.root / "inventory.yaml"
        self.state_dir = self.root / "drx"
        self.ledger = self.root / "app" / "committed.log"
        self._passwords = {"replicator": secrets.token_hex(12), "app": secrets.token_hex(12)}

    @staticmethod
    def _check_environment() -> None:
        missing = [
            str(p)
            for p in (PG_BIN / "pg_ctl", PG_BIN / "pg_rewind", Path(SUDO), Path("/usr/bin/psql"))
            if not os.access(p, os.X_OK)
        ]
        if missing:
            raise LabError(
                "missing " + ", ".join(missing) + " (make system-deps installs postgresql-15 "
                "and sudo)"
            )
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            raise LabError(f"no {PG_USER!r} user (installed with postgresql-15)") from None
        if os.geteuid() != 0:
            raise LabError("the PostgreSQL lab must run as root (it starts sshd and clusters)")

    # --- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Build and start everything; on any failure stop what was started and raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        # An earlier lab's directory is rebuilt from scratch; anything else is never deleted.
        if self.root.exists() and any(self.root.iterdir()):
            if not (self.root / MARKER).exists():
                raise LabError(f"{self.root} exists and is not a PostgreSQL lab: not touching it")
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MARKER).write_text("a drx PostgreSQL lab; rebuilt by each run\n")
        self.sshd = Lab(self.root, user=self.user)
        hosts = {"site-a": "db-a", "site-b": "db-b"}
        for site, name in hosts.items():
            lab_host = self.sshd.add_host(name)
            node_dir = self.root / "pg" / name
            node_dir.mkdir(parents=True)
            self.nodes[name] = PgNode(
                host=name,
                site=site,
                node=name.replace("-", "_"),
                address=lab_host.address,
                port=free_port(lab_host.address),
                dir=node_dir,
            )
        os.chmod(self.root / "pg", 0o755)
        pg = pwd.getpwnam(PG_USER)
        for n in self.nodes.values():
            n.socket_dir.mkdir()
            n.passfile.write_text(f"*:*:*:replicator:{self._passwords['replicator']}\n")
            os.chmod(n.passfile, 0o600)
            for path in (n.dir, n.socket_dir, n.passfile):
                os.chown(path, pg.pw_uid, pg.pw_gid)
            os.chmod(n.dir, 0o700)
        self._install_sudoers()
        self.sshd.start()
        primary, replica = self.nodes["db-a"], self.nodes["db-b"]
        self._init_primary(primary, replica)
        self._init_replica(replica, primary)
        self._wait_streaming(primary, replica)
        self._start_app()
        self._write_inventory()

    def _pg(self, *args: str | Path, input: str | None = None) -> str:
        """Run a command as the postgres OS user (the lab is root: no sudoers needed)."""
        proc = subprocess.run(
            ["runuser", "-u", PG_USER, "--", *map(str, args)],
            input=input,
            capture_output=True,
            text=True,
            cwd="/",
            timeout=120,
        )
        if proc.returncode != 0:
            raise LabError(
                f"{' '.join(map(str, args[:2]))} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-800:]}"
            )
        return proc.stdout

    def _sql(self, node: PgNode, *statements: str, db: str = "postgres") -> str:
        args: list[str | Path] = [
            "psql", "-X", "-w", "-At", "-v", "ON_ERROR_STOP=1",
            "-h", node.socket_dir, "-p", str(node.port), "-d", db,
        ]  # fmt: skip
        for s in statements:
            args += ["-c", s]
        return self._pg(*args)

    def _pg_ctl_start(self, node: PgNode, peer: PgNode) -> None:
        self._pg(
            PG_BIN / "pg_ctl", "-D", node.data, "-l", node.log, "-w",
            "-t", str(int(START_TIMEOUT)), "-o", node.opts(peer), "start",
        )  # fmt: skip

    def _init_primary(self, primary: PgNode, replica: PgNode) -> None:
        self._pg(
            PG_BIN / "initdb", "-D", primary.data, "-U", PG_USER, "--data-checksums",
            "--auth-local=peer", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
        )  # fmt: skip
        with (primary.data / "postgresql.conf").open("a") as conf:
            conf.write(_CONF)
        (primary.data / "pg_hba.conf").write_text(_HBA.format(pg_user=PG_USER))
        self._pg_ctl_start(primary, replica)
        rep, app = self._passwords["replicator"], self._passwords["app"]
        self._sql(
            primary,
            f"CREATE ROLE replicator REPLICATION LOGIN PASSWORD '{rep}'",
            # pg_rewind --source-server needs these and nothing more (its documented minimum)
            "GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean), "
            "pg_catalog.pg_stat_file(text, boolean), pg_catalog.pg_read_binary_file(text), "
            "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO replicator",
            f"CREATE ROLE app LOGIN PASSWORD '{app}'",
            f"CREATE DATABASE {DATABASE} OWNER app",
            f"SELECT pg_create_physical_replication_slot('{replica.node}', true)",
        )
        self._sql(
            primary,
            "CREATE TABLE drill_rows (id bigint PRIMARY KEY, site text NOT NULL, "
            "at timestamptz NOT NULL DEFAULT now())",
            "ALTER TABLE drill_rows OWNER TO app",
            # the runbook's write probe writes here (rowapp's POST /write)
            "CREATE TABLE drill_probe (n bigserial PRIMARY KEY, site text NOT NULL, "
            "at timestamptz NOT NULL DEFAULT now())",
            "ALTER TABLE drill_probe OWNER TO app",
            db=DATABASE,
        )

    def _init_replica(self, replica: PgNode, primary: PgNode) -> None:
        self._pg(
            PG_BIN / "pg_basebackup", "-w", "-D", replica.data, "-X", "stream", "-c", "fast",
            "-S", replica.node,
            "-d", f"host={primary.address} port={primary.port} user=replicator "
            f"passfile={replica.passfile}",
        )  # fmt: skip
        self._pg("touch", replica.data / "standby.signal")
        self._pg_ctl_start(replica, primary)

    def _wait_streaming(self, primary: PgNode, replica: PgNode) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        query = f"SELECT state FROM pg_stat_replication WHERE application_name = '{replica.node}'"
        while self._sql(primary, query).strip() != "streaming":
            if time.monotonic() > deadline:
                raise LabError(f"{replica.host} did not start streaming from {primary.host}")
            time.sleep(0.05)

    @property
    def sudoers(self) -> Path | None:
        """The sudoers drop-in this lab installed (None before it started)."""
        return self._sudoers

    def _install_sudoers(self) -> None:
        """Let the lab user run commands as postgres (only): what `sudo: postgres` needs."""
        assert self.sshd is not None
        self._sudoers = self.sshd.install_sudoers(
            ["/usr/bin/sh", "/bin/sh"],
            run_as=PG_USER,
            purpose="drx PostgreSQL lab: the runbook's `sudo: postgres` steps, nothing as root",
        )

    def _dsn(self, node: PgNode) -> str:
        return (
            f"host={node.address} port={node.port} user=app dbname={DATABASE} "
            f"password={self._passwords['app']} connect_timeout=2"
        )

    def _start_app(self) -> None:
        app_dir = self.root / "app"
        app_dir.mkdir()
        port = free_port("127.0.0.1")
        self.app_address = f"127.0.0.1:{port}"
        config = app_dir / "config.json"
        config.write_text(
            json.dumps(
                {
                    "listen": self.app_address,
                    "sites": {n.site: self._dsn(n) for n in self.nodes.values()},
                    "site": "site-a",
                    "ledger": str(self.ledger),
                    "rate": 200,
                },
                indent=2,
            )
        )
        os.chmod(config, 0o600)
        with open(app_dir / "app.log", "ab") as log:
            # A session of its own: a Ctrl-C at the terminal reaches the drill, not the app;
            # the lab stops it by PID.
            self._app = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.lab.rowapp", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.app_pid = self._app.pid
        deadline = time.monotonic() + START_TIMEOUT
        while not self.app_healthy("site-a"):
            if self._app.poll() is not None:
                raise LabError(f"the application exited: {self._tail(app_dir / 'app.log')}")
            if time.monotonic() > deadline:
                raise LabError(f"the application never wrote: {self.app_status()}")
            time.sleep(0.05)

    def _write_inventory(self) -> None:
        assert self.sshd is not None
        a, b = self.nodes["db-a"], self.nodes["db-b"]
        doc: dict[str, Any] = {
            "active": "site-a",
            "defaults": {
                "transport": "ssh",
                "user": self.user,
                "identity_file": str(self.sshd.identity_file),
                "known_hosts": str(self.sshd.known_hosts),
                "host_key_policy": "strict",
                "connect_timeout": "5s",
            },
            "vars": {"app": self.app_address},
            "sites": {},
        }
        for node, peer in ((a, b), (b, a)):
            h = self.sshd.host(node.host)
            doc["sites"][node.site] = {
                "hosts": {
                    node.host: {
                        "address": h.address,
                        "port": h.port,
                        "roles": ["db"],
                        "vars": {
                            "pg_node": node.node,
                            "pg_peer_node": peer.node,
                            "pg_port": node.port,
                            "pg_data": str(node.data),
                            "pg_log": str(node.log),
                            "pg_opts": node.opts(peer),
                            "psql": node.psql(),
                            "pg_peer": node.peer_conninfo(peer),
                        },
                    }
                }
            }
        self.inventory.write_text(
            "# PostgreSQL lab: two sites of sshd hosts on loopback, one cluster each "
            "(python -m orchestrator.lab.postgres)\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=200)
        )

    # --- the application and the rows -------------------------------------------------------

    def _http(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(f"http://{self.app_address}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (OSError, ValueError) as exc:
            return 0, {"error": str(exc)}

    def app_healthy(self, site: str) -> bool:
        return self._http("GET", f"/health?site={site}")[0] == 200

    def app_status(self) -> dict[str, Any]:
        return self._http("GET", "/health")[1]

    def drain_app(self) -> dict[str, Any]:
        code, body = self._http("POST", "/drain")
        if code != 200:
            raise LabError(f"draining the application failed: {code} {body}")
        return body

    def committed_ids(self) -> set[int]:
        """Ids of rows whose commit the application saw acknowledged."""
        if not self.ledger.exists():
            return set()
        return {int(line.split()[0]) for line in self.ledger.read_text().splitlines() if line}

    def commit_times(self) -> list[float]:
        """When each acknowledged commit was acknowledged (UNIX time), in ledger order."""
        if not self.ledger.exists():
            return []
        return [
            float(fields[1])
            for fields in (line.split() for line in self.ledger.read_text().splitlines())
            if len(fields) > 1
        ]

    def row_ids(self, site: str) -> set[int]:
        """Ids of the rows in the cluster at ``site``."""
        node = next(n for n in self.nodes.values() if n.site == site)
        out = self._sql(node, "SELECT id FROM drill_rows", db=DATABASE)
        return {int(line) for line in out.split()}

    def rows_by_site(self, site: str) -> dict[str, int]:
        """How many rows the cluster at ``site`` holds per site they were written at."""
        node = next(n for n in self.nodes.values() if n.site == site)
        out = self._sql(
            node, "SELECT site || ' ' || count(*) FROM drill_rows GROUP BY site", db=DATABASE
        )
        return {k: int(v) for k, v in (line.split() for line in out.splitlines())}

    def primary_site(self) -> str | None:
        """The site whose cluster runs and is not in recovery (None if none or both)."""
        primaries = [
            n.site
            for n in self.nodes.values()
            if n.postmaster_pid() is not None
            and self._sql_or_none(n, "SELECT pg_is_in_recovery()") == "f"
        ]
        return primaries[0] if len(primaries) == 1 else None

    def _sql_or_none(self, node: PgNode, statement: str) -> str | None:
        try:
            return self._sql(node, statement).strip()
        except LabError:
            return None

    @staticmethod
    def _tail(path: Path) -> str:
        try:
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-5:])
        except OSError:
            return "(no log)"

    def lose(self, host: str) -> None:
        """A site is lost: the host's sshd dies (connections refused) and its cluster crashes
        (immediate shutdown, as after a power cut: no shutdown checkpoint)."""
        assert self.sshd is not None
        self.sshd.kill(host)
        node = self.nodes[host]
        self._pg(PG_BIN / "pg_ctl", "-D", node.data, "-m", "immediate", "-w", "stop")

    # --- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the application, both clusters and the sshd hosts (by PID), remove the sudoers
        drop-in. Idempotent; every part is attempted even if another fails."""
        if self._stopped:
            return
        self._stopped = True
        if self._app is not None:
            self._terminate(self._app)
        for node in self.nodes.values():
            self._stop_cluster(node)
        if self.sshd is not None:
            self.sshd.stop()
        if self._sudoers is not None:
            with contextlib.suppress(FileNotFoundError):
                self._sudoers.unlink()

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @staticmethod
    def _stop_cluster(node: PgNode) -> None:
        """Fast shutdown (SIGINT) of the postmaster now running on the node's data directory;
        SIGQUIT (immediate) if it has not exited within 10 s."""
        pid = node.postmaster_pid()
        if pid is None or not _alive(pid):
            return
        for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not _alive(pid):
                return

    def __enter__(self) -> PostgresLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- the drill ------------------------------------------------------------------------------


@dataclass
class DrillResult:
    """What ``make lab-postgres`` reports."""

    failover_exit: int | None = None
    failback_exit: int | None = None
    failover: RunSummary | None = None
    failback: RunSummary | None = None
    committed: int = 0
    lost_after_failover: int | None = None
    lost: int | None = None  # after the failback
    primary_at_end: str | None = None
    rows_by_site: dict[str, int] | None = None  # at the final primary: rows written per site
    sudoers: Path | None = None  # the lab's sudoers drop-in (removed when the lab stopped)
    card: str = ""  # drx check site-b's output before the failover (the decision card first)
    check_exit: int | None = None
    check_wall_s: float | None = None  # the whole drx check process, start to exit
    metrics: str = ""  # drx check site-b --format prometheus after the failback
    #: the longest gap between acknowledged commits during each run: the app's downtime
    failover_gap_s: float | None = None
    failback_gap_s: float | None = None

    @property
    def ok(self) -> bool:
        return (
            self.failover_exit == 0
            and self.failback_exit == 0
            and self.lost == 0
            and self.lost_after_failover == 0
            and self.primary_at_end == "site-a"
        )


def run_drx(args: Sequence[str], *, echo: bool = True) -> int:
    """Run one drx command in the foreground; a Ctrl-C reaches it too (same process group):
    wait for it to record the cancellation instead of killing it."""
    command = [sys.executable, "-m", "orchestrator.cli", *args]
    if echo:
        print(f"$ drx {shlex.join(args)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(command)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def run_drx_captured(args: Sequence[str], *, echo: bool = True) -> tuple[int, str, float]:
    """Run one drx command, print its stdout as it would have been (the lab shows it) and
    return (exit code, stdout, wall seconds); stderr goes straight to the terminal."""
    command = [sys.executable, "-m", "orchestrator.cli", *args]
    if echo:
        print(f"$ drx {shlex.join(args)}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate()
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        raise
    wall = time.monotonic() - t0
    print(out, end="", flush=True)
    return proc.returncode, out, wall


def latest_summary(state_dir: Path, direction: str) -> RunSummary | None:
    """The latest run in ``direction`` in the lab's state dir, read back as drx reads it."""
    from orchestrator.record.runs import load_summary
    from orchestrator.record.store import LocalStore

    store = LocalStore(state_dir)
    runs = [run_id for run_id in store.run_ids() if f"-{direction}-" in run_id]
    return load_summary(store, runs[-1]) if runs else None


def run_drill(
    root: Path, runbook: Path, *, echo: bool = True, round_trip: bool = False
) -> DrillResult:
    """Build the lab, drill failover and failback with drx (``round_trip``: as one
    ``drx drill site-b``), count the rows; stop the lab."""
    result = DrillResult()
    with PostgresLab(root) as pg:
        pg.start()
        result.sudoers = pg.sudoers
        a, b = pg.nodes["db-a"], pg.nodes["db-b"]
        print(
            f"lab: db-a (site-a) sshd {a.address}:{pg.sshd.host('db-a').port if pg.sshd else '?'}"
            f", primary on {a.address}:{a.port} · db-b (site-b) sshd {b.address}:"
            f"{pg.sshd.host('db-b').port if pg.sshd else '?'}, replica on {b.address}:{b.port}"
            f" · app on {pg.app_address} · inventory {pg.inventory}",
            file=sys.stderr,
            flush=True,
        )
        common = ["-r", str(runbook), "-i", str(pg.inventory), "--state-dir", str(pg.state_dir)]
        state = ["--state-dir", str(pg.state_dir)]
        # check: the decision card (predicted RTO, RPO exposure now, readiness), then every
        # host, its key and `sudo -n -u postgres`, before anything changes
        result.check_exit, result.card, result.check_wall_s = run_drx_captured(
            ["check", "site-b", *common], echo=echo
        )
        if result.check_exit != 0:
            return result
        if run_drx(["plan", "site-b", *common], echo=echo) != 0:
            return result
        if round_trip:
            code = run_drx(["drill", "site-b", "--yes", *common], echo=echo)
            result.failover = latest_summary(pg.state_dir, Direction.FAILOVER)
            result.failback = latest_summary(pg.state_dir, Direction.FAILBACK)
            result.failover_exit = result.failover.exit_code if result.failover else None
            result.failback_exit = code
            result.lost_after_failover = 0 if code == 0 else None  # not counted between legs
            latest = result.failover.run_id if result.failover else "latest"
            run_drx(["report", latest, *state], echo=echo)
            return _count(pg, result)
        result.failover_exit = run_drx(["failover", "site-b", "--yes", *common], echo=echo)
        result.failover = latest_summary(pg.state_dir, Direction.FAILOVER)
        if result.failover_exit == 0:
            committed = pg.committed_ids()
            result.lost_after_failover = len(committed - pg.row_ids("site-b"))
        run_drx(["report", *state], echo=echo)
        run_drx(
            ["report", "--format", "html", "-o", str(root / "failover.html"), *state], echo=echo
        )
        if result.failover_exit not in (None, 0, 3):
            return result
        result.failback_exit = run_drx(["failback", "--yes", *common], echo=echo)
        result.failback = latest_summary(pg.state_dir, Direction.FAILBACK)
        run_drx(["report", *state], echo=echo)
        run_drx(
            ["report", "--format", "html", "-o", str(root / "failback.html"), *state], echo=echo
        )
        run_drx(["runs", *state], echo=echo)
        # between drills: the metrics node_exporter would read, now with one measured failover
        prom = root / "drx.prom"
        run_drx(["check", "site-b", "--format", "prometheus", "-o", str(prom), *common], echo=echo)
        result.metrics = prom.read_text() if prom.exists() else ""
        return _count(pg, result)


def _count(pg: PostgresLab, result: DrillResult) -> DrillResult:
    """Stop the writes, then count: every acknowledged row must be at the final primary; and
    the application's longest gap between acknowledged commits during each run."""
    pg.drain_app()
    times = pg.commit_times()
    result.failover_gap_s = longest_gap(times, result.failover)
    result.failback_gap_s = longest_gap(times, result.failback)
    result.primary_at_end = pg.primary_site()
    committed = pg.committed_ids()
    result.committed = len(committed)
    if result.primary_at_end is not None:
        result.lost = len(committed - pg.row_ids(result.primary_at_end))
        result.rows_by_site = pg.rows_by_site(result.primary_at_end)
    return result


def longest_gap(times: Sequence[float], summary: RunSummary | None) -> float | None:
    """The longest gap between consecutive acknowledged commits (UNIX times) that overlaps
    the run of ``summary`` (between its start and its end): the write downtime the
    application saw during that run."""
    if summary is None or not times:
        return None
    from orchestrator.report.units import parse_when

    began, ended = parse_when(summary.started_at), parse_when(summary.finished_at)
    if began is None or ended is None:
        return None
    start, end = began.timestamp(), ended.timestamp()
    ordered = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(ordered) if b >= start and a <= end]
    return round(max(gaps), 3) if gaps else None


def _probe_line(label: str, summary: RunSummary | None, gap: float | None) -> str:
    """The write probe's observed downtime against the application's longest commit gap."""
    probe = next(iter(summary.probes if summary else []), None)
    if probe is None:
        return f"{label}: no probe recorded"
    interval = probe.interval_s or 0.0
    down = probe.longest_down_s
    text = (
        f"{label}: probe '{probe.name}' saw writes down {probe.down_s} s "
        f"(longest window {down} s, {len(probe.windows)} window(s), "
        f"{probe.polls} polls); the app's longest gap between acknowledged commits "
        f"{gap if gap is not None else '—'} s"
    )
    if gap is not None:
        diff = abs(down - gap)
        bound = interval + 0.05
        text += f"; they differ by {diff:.3f} s ({'within' if diff <= bound else 'OVER'} "
        text += f"one interval + 50 ms = {bound:.3f} s)"
    return text


def _run_line(label: str, code: int | None, summary: RunSummary | None, lost: int | None) -> str:
    """One run's figures: exit code, RTO against its target, RPO in bytes, rows lost."""

    def num(value: float | None, unit: str) -> str:
        return f"{value:g} {unit}" if value is not None else "—"

    rto = summary.rto if summary else None
    rpo = summary.rpo if summary and summary.rpo and summary.rpo.in_bytes else None
    return (
        f"{label}: exit {code if code is not None else '—'}, "
        f"RTO {num(rto.measured_s if rto else None, 's')} "
        f"(target {num(rto.target_s if rto else None, 's')}), "
        f"RPO {num(rpo.measured if rpo else None, 'B')} of WAL not received "
        f"(target {num(rpo.target if rpo else None, 'B')}), "
        f"{lost if lost is not None else '—'} rows lost"
    )


def report_lines(result: DrillResult) -> list[str]:
    """The figures of a drill, one line each."""
    return [
        _run_line(
            "failover to site-b", result.failover_exit, result.failover, result.lost_after_failover
        ),
        _run_line("failback to site-a", result.failback_exit, result.failback, result.lost),
        _probe_line("failover writes", result.failover, result.failover_gap_s),
        _probe_line("failback writes", result.failback, result.failback_gap_s),
        f"rows: {result.committed} committed, "
        f"{result.lost if result.lost is not None else '—'} rows lost; "
        f"primary at the end: {result.primary_at_end or 'none'}",
        f"drx check site-b before the failover: exit {result.check_exit}, "
        f"{result.check_wall_s or 0:.2f} s for the whole command",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.lab.postgres",
        description="A PostgreSQL primary/replica lab behind sshd hosts, and its drill.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    drill_p = sub.add_parser("drill", help="build the lab, fail over to site-b and back")
    drill_p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    drill_p.add_argument("--runbook", type=Path, default=Path("runbooks/postgres.yaml"))
    drill_p.add_argument("--round-trip", action="store_true", help="run it as one drx drill site-b")
    args = parser.parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops the drill even when started in the background (which ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run_drill(args.dir, args.runbook.resolve(), round_trip=args.round_trip)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab: interrupted; everything the lab started is stopped", file=sys.stderr)
        return 130
    for line in report_lines(result):
        print(line)
    print(
        f"lab: everything stopped; runs in {args.dir / 'drx'}, reports "
        f"{args.dir / 'failover.html'} and {args.dir / 'failback.html'}",
        file=sys.stderr,
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
