"""A lab of real OpenSSH hosts on loopback, for the test suite, ``make lab`` and benchmarks.

Each lab host is its own ``sshd`` process listening on its own ``127.0.0.K`` address (K from 2
up) and a free port, with its own generated ed25519 host key, all sharing one generated client
key and one real known_hosts file. Logins are as a dedicated unprivileged user (``drxlab`` by
default, created if missing), never root. Every host has its own state directory, exported to
commands through the inventory's ``env`` as ``DRX_HOST_DIR``, so that "hosts" sharing one
machine do not share state.

Faults are injected on the real processes: ``kill`` (host down: connections refused),
``pause``/``resume`` (SIGSTOP/SIGCONT: a hung host), ``restart``.

Starting sshd needs root (it binds, reads root-only host keys and switches to the lab user);
when that is impossible ``Lab`` raises ``LabError`` with the reason: it never degrades quietly.

API::

    with Lab(Path("/tmp/lab")) as lab:
        lab.add_host("db-a")                       # -> LabHost (not running yet)
        lab.start()                                # start every host not running, wait for banners
        spec = lab.host_spec("db-a")               # -> HostSpec for the transports
        text = lab.inventory_yaml({"site-a": ["db-a"]})   # writes <root>/inventory.yaml
        lab.kill("db-a"); lab.restart("db-a"); lab.pause("db-a"); lab.resume("db-a")
    # leaving the block stops every sshd (``lab.stop()``, idempotent)

CLI::

    python -m orchestrator.lab.sshd up --dir lab --sites site-a:db-a,app-a site-b:db-b,app-b

starts the hosts, writes ``lab/inventory.yaml``, prints it and runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.transport.base import HostSpec

DEFAULT_USER = "drxlab"
SSHD = "/usr/sbin/sshd"
SUDO = "/usr/bin/sudo"
SUDOERS_DIR = Path("/etc/sudoers.d")
#: Seconds a host gets to show its ``SSH-`` banner after start, and more for each host started
#: at the same time (1,000 sshd processes take 10-20 s to come up on two cores).
START_TIMEOUT = 10.0
START_TIMEOUT_PER_HOST = 0.05
FIRST_ADDRESS = ipaddress.IPv4Address("127.0.0.2")

# Settings every lab sshd runs with. PidFile none: the lab tracks pids itself. StrictModes no:
# keys live under temporary directories whose modes sshd would otherwise reject. The
# MaxStartups/MaxSessions values let many parallel connects and channels through, where the
# defaults (10:30:100, 10) would drop them.
_SSHD_SETTINGS = """\
PidFile none
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin no
AllowUsers {user}
AuthorizedKeysFile {authorized_keys}
Subsystem sftp internal-sftp
MaxStartups 200:30:400
MaxSessions 64
MaxAuthTries 6
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
LogLevel INFO
"""


class LabError(RuntimeError):
    """The lab cannot do what was asked (no sshd, not root, a host that does not start...)."""


@dataclass
class LabHost:
    """One simulated host: an sshd on ``address:port`` accepting ``user`` with the lab's key."""

    name: str
    address: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    state_dir: Path
    host_key: Path
    config_file: Path
    log_file: Path
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    #: sshd_config lines of this host, replacing the lab's lines for the same keywords (e.g. a
    #: low MaxStartups)
    settings: str = ""

    @property
    def known_hosts_name(self) -> str:
        """The name this host has in known_hosts (``[addr]:port`` unless on port 22)."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def free_port(address: str) -> int:
    """A TCP port nothing listens on at ``address`` now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (sshd refuses group/world-readable host keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def generate_ed25519(path: Path, comment: str) -> str:
    """Write an unencrypted ed25519 private key in OpenSSH format to ``path`` (and ``.pub``);
    return the public key line. In-process: much faster than a ``ssh-keygen`` per host."""
    key = Ed25519PrivateKey.generate()
    _write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = f"{public.decode()} {comment}"
    path.with_name(path.name + ".pub").write_text(line + "\n")
    return public.decode()


def _children() -> dict[int, list[int]]:
    """Every process's children, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _process_tree(root_pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """``root_pid`` and all its descendants (sshd forks a process tree per connection, which
    outlives the listener unless it is killed too)."""
    children = _children() if children is None else children
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _signal_tree(root_pid: int, sig: int) -> None:
    for pid in _process_tree(root_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the block runs (stopping a thousand hosts must not be cut
    short half-way); one that came meanwhile is raised again afterwards. Only the main thread
    can do this; elsewhere the block just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])


_PENALTIES_SUPPORTED: dict[str, bool] = {}


class Lab:
    """A set of real sshd hosts on loopback under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, *, user: str = DEFAULT_USER, sshd: str = SSHD) -> None:
        self.root = Path(root).resolve()
        self.user = user
        self.sshd = sshd
        self.hosts: dict[str, LabHost] = {}
        self._host_public: dict[str, str] = {}  # host name -> "ssh-ed25519 AAAA..."
        self._next_index = 0
        self._lock = threading.RLock()
        self._stopped = False
        self._sudoers: list[Path] = []
        self._check_environment()
        self._prepare()
        atexit.register(self.stop)

    # --- set-up -------------------------------------------------------------------------

    def _check_environment(self) -> None:
        if not os.path.isabs(self.sshd) or not os.access(self.sshd, os.X_OK):
            raise LabError(
                f"no sshd at {self.sshd} (install openssh-server; sshd must be an absolute path)"
            )
        if os.geteuid() != 0:
            raise LabError("the lab must run as root (sshd binds, reads host keys, switches user)")

    def _prepare(self) -> None:
        # sshd's privilege separation needs this directory; nothing creates it without systemd.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self._ensure_user()
        self.root.mkdir(parents=True, exist_ok=True)
        # The lab user reads authorized_keys and writes its state dirs under root: every
        # directory above must be traversable by it (pytest/mkdtemp directories are 0700).
        os.chmod(self.root, 0o755)
        for parent in self.root.parents:
            if not os.stat(parent).st_mode & 0o001:
                raise LabError(
                    f"{parent} is not traversable by other users; the lab user {self.user!r} "
                    f"could not reach {self.root} (put the lab under /tmp or chmod o+x)"
                )
        for sub in ("hosts", "state"):
            (self.root / sub).mkdir(exist_ok=True)
            os.chmod(self.root / sub, 0o755)
        self.identity_file = self.root / "id_ed25519"
        public = generate_ed25519(self.identity_file, "drx-lab-client")
        self.authorized_keys = self.root / "authorized_keys"
        self.authorized_keys.write_text(public + "\n")
        os.chmod(self.authorized_keys, 0o644)
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text("")

    def _ensure_user(self) -> None:
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            # '*' keeps the account unlocked for key logins with UsePAM no, with no password.
            proc = subprocess.run(
                ["useradd", "-m", "-s", "/bin/bash", "-p", "*", self.user],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise LabError(
                    f"cannot create lab user {self.user!r}: {proc.stderr.strip()}"
                ) from None
        entry = pwd.getpwnam(self.user)
        if entry.pw_uid == 0:
            raise LabError(f"lab user {self.user!r} must not be root")
        self._uid, self._gid = entry.pw_uid, entry.pw_gid

    def _settings(self) -> str:
        text = _SSHD_SETTINGS.format(user=self.user, authorized_keys=self.authorized_keys)
        if self._penalties_supported(text):
            text += "PerSourcePenalties no\n"
        return text

    def _penalties_supported(self, base: str) -> bool:
        """Whether this sshd knows ``PerSourcePenalties`` (OpenSSH >= 9.8, where its default
        would penalise the many connects and auth failures tests make from 127.0.0.1)."""
        if self.sshd not in _PENALTIES_SUPPORTED:
            probe = self.root / "sshd_probe"
            probe.mkdir(exist_ok=True)
            generate_ed25519(probe / "key", "probe")
            (probe / "config").write_text(
                base + f"HostKey {probe / 'key'}\nPerSourcePenalties no\n"
            )
            proc = subprocess.run(
                [self.sshd, "-t", "-f", str(probe / "config")], capture_output=True, text=True
            )
            _PENALTIES_SUPPORTED[self.sshd] = proc.returncode == 0
            shutil.rmtree(probe, ignore_errors=True)
        return _PENALTIES_SUPPORTED[self.sshd]

    # --- hosts ----------------------------------------------------------------------------

    def _next_address(self) -> str:
        while True:
            address = FIRST_ADDRESS + self._next_index
            self._next_index += 1
            if address not in ipaddress.IPv4Network("127.0.0.0/8"):
                raise LabError("out of loopback addresses")
            if str(address).split(".")[-1] not in ("0", "255"):
                return str(address)

    def add_host(self, name: str, *, settings: str = "") -> LabHost:
        """Create (not start) a host: address, port, host key, known_hosts line, state dir;
        ``settings`` are extra sshd_config lines for it."""
        with self._lock:
            if name in self.hosts:
                raise LabError(f"lab host {name!r} exists already")
            address = self._next_address()
            hdir = self.root / "hosts" / name
            hdir.mkdir(parents=True, exist_ok=True)
            state = self.root / "state" / name
            state.mkdir(parents=True, exist_ok=True)
            os.chown(state, self._uid, self._gid)
            os.chmod(state, 0o755)
            host = LabHost(
                name=name,
                address=address,
                port=free_port(address),
                user=self.user,
                identity_file=self.identity_file,
                known_hosts=self.known_hosts,
                state_dir=state,
                host_key=hdir / "ssh_host_ed25519_key",
                config_file=hdir / "sshd_config",
                log_file=hdir / "sshd.log",
                settings=settings,
            )
            self._host_public[name] = generate_ed25519(host.host_key, f"drx-lab-{name}")
            self._write_config(host)
            self.hosts[name] = host
            self._write_known_hosts()
            return host

    def _write_config(self, host: LabHost) -> None:
        extra = [line for line in host.settings.splitlines() if line.strip()]
        # sshd takes the first value of most keywords and the last of some (MaxStartups): the
        # lab's line for a keyword the host sets is left out instead
        mine = {line.split()[0].lower() for line in extra}
        lab = [
            line for line in self._settings().splitlines() if line.split()[0].lower() not in mine
        ]
        host.config_file.write_text(
            "\n".join(lab + extra)
            + f"\nListenAddress {host.address}:{host.port}\nHostKey {host.host_key}\n"
        )

    def _write_known_hosts(self) -> None:
        lines = [f"{h.known_hosts_name} {self._host_public[h.name]}\n" for h in self.hosts.values()]
        tmp = self.known_hosts.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        os.replace(tmp, self.known_hosts)

    def host(self, name: str) -> LabHost:
        """The host called ``name`` (``LabError`` if there is none)."""
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no lab host {name!r}") from None

    def host_spec(self, name: str, **overrides: Any) -> HostSpec:
        """A ``HostSpec`` reaching lab host ``name`` with the lab's key and known_hosts, strict
        host key checking and ``DRX_HOST_DIR`` exported; ``overrides`` replace any field."""
        h = self.host(name)
        spec = HostSpec(
            name=h.name,
            address=h.address,
            transport="ssh",
            port=h.port,
            user=h.user,
            identity_file=str(h.identity_file),
            known_hosts=str(h.known_hosts),
            host_key_policy="strict",
            connect_timeout=5.0,
            env={"DRX_HOST_DIR": str(h.state_dir)},
        )
        return replace(spec, **overrides)

    # --- processes ------------------------------------------------------------------------

    def start(self, names: Iterable[str] | None = None) -> list[LabHost]:
        """Start the named hosts (default: every host not running) in parallel and return once
        each shows its ``SSH-`` banner. A host whose port was taken meanwhile gets a new one."""
        with self._lock:
            if self._stopped:
                raise LabError("this lab was stopped")
            wanted = [self.host(n) for n in (names if names is not None else self.hosts)]
            todo = [h for h in wanted if not h.running]
            for attempt in range(3):
                for h in todo:
                    self._spawn(h)
                failed = self._wait_banners(todo)
                if not failed:
                    return wanted
                retry = []
                for h, reason in failed:
                    if "Address already in use" in reason and attempt < 2:
                        h.port = free_port(h.address)
                        self._write_config(h)
                        retry.append(h)
                    else:
                        raise LabError(f"lab host {h.name} did not start: {reason}")
                self._write_known_hosts()
                todo = retry
            return wanted

    def _spawn(self, host: LabHost) -> None:
        log = open(host.log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            # A new session: a Ctrl-C in the terminal that runs the lab must not kill the hosts
            # behind its back; the lab stops them itself.
            host.process = subprocess.Popen(
                [self.sshd, "-D", "-e", "-f", str(host.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        host.pid = host.process.pid

    def _wait_banners(self, hosts: Sequence[LabHost]) -> list[tuple[LabHost, str]]:
        """Wait until each host answers with an ``SSH-`` banner; return those that did not."""
        failed: list[tuple[LabHost, str]] = []
        allowed = START_TIMEOUT + START_TIMEOUT_PER_HOST * len(hosts)
        deadline = time.monotonic() + allowed
        for h in hosts:
            while True:
                assert h.process is not None
                if h.process.poll() is not None:
                    failed.append((h, self._log_tail(h)))
                    break
                if self._banner(h):
                    break
                if time.monotonic() > deadline:
                    self._kill_tree(h)
                    failed.append((h, f"no SSH banner within {allowed:.0f}s"))
                    break
                time.sleep(0.002)
        return failed

    @staticmethod
    def _banner(host: LabHost) -> bool:
        try:
            with socket.create_connection((host.address, host.port), timeout=1.0) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    @staticmethod
    def _log_tail(host: LabHost) -> str:
        try:
            text = host.log_file.read_text(errors="replace").strip()
        except OSError:
            return "(no log)"
        return " | ".join(text.splitlines()[-5:]) or "(sshd exited without a message)"

    def _kill_tree(self, host: LabHost) -> None:
        self._kill_trees([host])

    def _kill_trees(self, hosts: Sequence[LabHost]) -> None:
        """Kill each host's sshd and every per-connection process under it, by PID, with one
        pass over /proc for all of them (one per host took a minute for 1,000 hosts)."""
        running = [h for h in hosts if h.process is not None and h.process.poll() is None]
        if running:
            # Stop the listeners first so that no new connection forks while the trees are
            # killed; then kill every per-connection process: a downed host keeps no session.
            stopped: set[int] = set()
            children = _children()
            for h in running:
                assert h.process is not None
                for pid in _process_tree(h.process.pid, children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                        stopped.add(pid)
            # what forked before its parent stopped, and what was stopped but has left the
            # tree since (a session's process reparented meanwhile): none stays stopped forever
            children = _children()
            doomed = set(stopped)
            for h in running:
                assert h.process is not None
                doomed.update(_process_tree(h.process.pid, children))
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for h in hosts:
            if h.process is not None:
                h.process.wait()
            h.process = None
            h.pid = None

    def kill(self, name: str) -> None:
        """Host down: kill its sshd and every session it serves (connects are then refused)."""
        with self._lock:
            self._kill_tree(self.host(name))

    def pause(self, name: str) -> None:
        """Hung host: SIGSTOP its sshd and sessions (TCP connects succeed, nothing answers)."""
        h = self.host(name)
        if h.pid is None:
            raise LabError(f"lab host {name} is not running")
        _signal_tree(h.pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """Undo ``pause``."""
        h = self.host(name)
        if h.pid is None:
            raise LabError(f"lab host {name} is not running")
        _signal_tree(h.pid, signal.SIGCONT)

    def restart(self, name: str) -> LabHost:
        """Kill the host (if running) and start it again on the same address, port and key."""
        with self._lock:
            self._kill_tree(self.host(name))
            return self.start([name])[0]

    def rekey(self, name: str) -> LabHost:
        """Give the host a new host key (as a rebuilt machine has), trust it in known_hosts,
        and restart it on the same address and port."""
        with self._lock:
            host = self.host(name)
            self._kill_tree(host)
            self._host_public[name] = generate_ed25519(host.host_key, f"drx-lab-{name}")
            self._write_known_hosts()
            return self.start([name])[0]

    def remove(self, name: str) -> None:
        """Kill the host and forget it (its known_hosts line goes too)."""
        self.remove_many([name])

    def remove_many(self, names: Sequence[str]) -> None:
        """Kill the named hosts and forget them, known_hosts rewritten once."""
        with self._lock, _signals_deferred():
            hosts = [self.host(n) for n in names]
            self._kill_trees(hosts)
            for h in hosts:
                del self.hosts[h.name]
            self._write_known_hosts()

    # --- sudo -----------------------------------------------------------------------------

    def install_sudoers(
        self, commands: Sequence[str], *, run_as: str = "root", purpose: str = "drx lab"
    ) -> Path:
        """A sudoers drop-in that lets the lab user (and nobody else) run ``commands`` (sudoers
        command patterns, e.g. ``/bin/sh``) as ``run_as`` without a password — what a step's
        ``sudo`` needs over SSH. Checked with ``visudo -c`` before it takes effect; removed by
        :meth:`remove_sudoers` or when the lab stops."""
        if not commands:
            raise LabError("a sudoers drop-in needs at least one command")
        if not os.access(SUDO, os.X_OK):
            raise LabError(f"no sudo at {SUDO} (make system-deps installs it)")
        SUDOERS_DIR.mkdir(mode=0o750, exist_ok=True)
        # no dots in the name: sudo skips such files in an includedir
        name = f"drx-lab-{os.getpid()}-{secrets.token_hex(4)}"
        path = SUDOERS_DIR / name
        tmp = SUDOERS_DIR / f"{name}.tmp"
        tmp.write_text(
            f"# {purpose}: removed when the lab stops\n"
            f"{self.user} ALL=({run_as}) NOPASSWD: {', '.join(commands)}\n"
        )
        os.chmod(tmp, 0o440)
        check = subprocess.run(["visudo", "-cf", str(tmp)], capture_output=True, text=True)
        if check.returncode != 0:
            tmp.unlink()
            raise LabError(f"sudoers drop-in refused by visudo: {check.stdout}{check.stderr}")
        os.replace(tmp, path)
        with self._lock:
            self._sudoers.append(path)
        return path

    def remove_sudoers(self, path: Path | None = None) -> None:
        """Remove one drop-in this lab installed (default: all of them)."""
        with self._lock:
            chosen = [p for p in self._sudoers if path is None or p == path]
            for p in chosen:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                self._sudoers.remove(p)

    def stop(self) -> None:
        """Kill every host's sshd and sessions and remove the lab's sudoers drop-ins.
        Idempotent; also run at interpreter exit."""
        with self._lock, _signals_deferred():
            with contextlib.suppress(OSError):
                self._kill_trees(list(self.hosts.values()))
            self.remove_sudoers()
            self._stopped = True
        atexit.unregister(self.stop)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- inventory ------------------------------------------------------------------------

    def inventory_yaml(
        self,
        sites: dict[str, list[str]],
        roles: dict[str, list[str]] | None = None,
        active: str | None = None,
        *,
        site_vars: dict[str, dict[str, Any]] | None = None,
        path: Path | None = None,
    ) -> str:
        """Write a drx inventory for ``sites`` (site → host names; hosts are added if new, not
        started) to ``path`` (default ``<root>/inventory.yaml``) and return its text.

        ``roles`` maps host name → roles; a host not in it gets the part of its name before
        the first ``-`` ("db-a" → ["db"]). ``active`` defaults to the first site.
        """
        roles = roles or {}
        site_vars = site_vars or {}
        doc: dict[str, Any] = {
            "active": active if active is not None else next(iter(sites), None),
            "defaults": {
                "transport": "ssh",
                "user": self.user,
                "identity_file": str(self.identity_file),
                "known_hosts": str(self.known_hosts),
                "host_key_policy": "strict",
                "connect_timeout": "5s",
            },
            "vars": {},
            "sites": {},
        }
        for site, names in sites.items():
            hosts: dict[str, Any] = {}
            for name in names:
                h = self.hosts.get(name) or self.add_host(name)
                hosts[name] = {
                    "address": h.address,
                    "port": h.port,
                    "roles": list(roles.get(name, [name.split("-")[0]])),
                    "env": {"DRX_HOST_DIR": str(h.state_dir)},
                }
            doc["sites"][site] = {"vars": dict(site_vars.get(site, {})), "hosts": hosts}
        text = "# drx inventory of a lab of sshd hosts on loopback\n" + yaml.safe_dump(
            doc, sort_keys=False, default_flow_style=None, width=120
        )
        target = path or self.root / "inventory.yaml"
        target.write_text(text)
        return text


# --- CLI ------------------------------------------------------------------------------------


def _parse_sites(specs: Sequence[str]) -> dict[str, list[str]]:
    sites: dict[str, list[str]] = {}
    for spec in specs:
        site, sep, hosts = spec.partition(":")
        names = [h for h in hosts.split(",") if h]
        if not sep or not site or not names:
            raise argparse.ArgumentTypeError(f"bad site {spec!r}: expected site:host1,host2")
        sites[site] = names
    return sites


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m orchestrator.lab.sshd up ...``: run a lab in the foreground until signalled."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.lab", description="Run a lab of sshd hosts on loopback."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start hosts, write <dir>/inventory.yaml, run until Ctrl-C")
    up.add_argument("--dir", type=Path, default=Path("lab"), help="lab directory (default: lab)")
    up.add_argument(
        "--sites",
        nargs="+",
        default=["site-a:db-a,app-a", "site-b:db-b,app-b"],
        metavar="SITE:HOST,HOST",
    )
    up.add_argument("--active", help="active site in the inventory (default: the first)")
    up.add_argument("--user", default=DEFAULT_USER, help="login user on the lab hosts")
    up.add_argument("--pidfile", type=Path, help="write this process's pid here")
    drill_p = sub.add_parser(
        "drill",
        help="start two sites of lab hosts and run the sample drill over SSH: failover, "
        "report, failback",
    )
    drill_p.add_argument("--dir", type=Path, default=Path("lab"), help="lab directory")
    drill_p.add_argument("--runbook", default="runbooks/webapp.yaml", help="runbook to drill")
    args = parser.parse_args(argv)
    if args.command == "drill":
        return drill(args.dir, args.runbook)

    try:
        sites = _parse_sites(args.sites)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    root: Path = args.dir
    # Keys and host state of an earlier run are not reused: the lab is rebuilt from scratch.
    shutil.rmtree(root / "hosts", ignore_errors=True)
    shutil.rmtree(root / "state", ignore_errors=True)
    try:
        lab = Lab(root, user=args.user)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    with lab:
        try:
            text = lab.inventory_yaml(sites, active=args.active)
            lab.start()
        except LabError as exc:
            print(f"lab: {exc}", file=sys.stderr)
            return 1
        if args.pidfile:
            args.pidfile.write_text(f"{os.getpid()}\n")
        print(text, end="", flush=True)
        print(
            f"# inventory written to {lab.root / 'inventory.yaml'}; Ctrl-C stops the lab",
            file=sys.stderr,
            flush=True,
        )
        try:
            while not stop.wait(0.5):
                pass
        finally:
            if args.pidfile:
                with contextlib.suppress(OSError):
                    args.pidfile.unlink()
    return 0


def drill(root: Path, runbook: str) -> int:
    """Start sshd hosts for site-a and site-b, write an inventory whose commands are the demo
    simulators (demo/bin), and run failover → report → failback → runs over real SSH."""
    demo_bin = Path("demo/bin").resolve()
    if not demo_bin.is_dir():
        print("lab: run from the repository root (demo/bin not found)", file=sys.stderr)
        return 1
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root = root.resolve()
    world = root / "world"
    world.mkdir()
    world.chmod(0o777)  # the lab user (hosts) and the controller (health) share the world
    sites = {"site-a": ["db-a", "app-a"], "site-b": ["db-b", "app-b"]}
    vips = {"site-a": "127.0.1.10", "site-b": "127.0.2.10"}
    with Lab(root) as lab:
        lab.inventory_yaml(sites, site_vars={s: {"vip": v} for s, v in vips.items()})
        doc = yaml.safe_load((root / "inventory.yaml").read_text())
        env = {"PATH": f"{demo_bin}:/usr/local/bin:/usr/bin:/bin", "DRX_DEMO_WORLD": str(world)}
        doc["defaults"]["env"] = env
        for site, vip in vips.items():
            doc["sites"][site]["env"] = {"DRX_SITE_VIP": vip}
        inventory = root / "inventory.yaml"
        inventory.write_text(
            "# two sites of real sshd hosts on loopback (python -m orchestrator.lab.sshd drill)\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)
        )
        hosts = lab.start()
        print(
            "lab: started "
            + ", ".join(f"{h.name} (sshd on {h.address}:{h.port})" for h in hosts)
            + f"; inventory {inventory}",
            file=sys.stderr,
            flush=True,
        )
        drx = [sys.executable, "-m", "orchestrator.cli"]
        # drx's own state directory, apart from <root>/state (the hosts' directories, which the
        # lab user must reach): drx creates it owner-only, as the postgres lab's drx/ is.
        state = ["--state-dir", str(root / "drx")]
        common = ["-r", runbook, "-i", str(inventory), *state]
        steps = [
            [*drx, "plan", "site-b", *common],
            [*drx, "failover", "site-b", "--yes", *common],
            [*drx, "report", *state],
            [*drx, "report", "--format", "html", "-o", str(root / "failover.html"), *state],
            [*drx, "failback", "--yes", *common],
            [*drx, "runs", *state],
            [*drx, "report", "--format", "html", "-o", str(root / "failback.html"), *state],
        ]
        for command in steps:
            print(f"$ drx {' '.join(command[3:])}", file=sys.stderr, flush=True)
            code = subprocess.run(command, check=False).returncode
            if code not in (0, 3):
                return code
    print(
        f"lab: sshd hosts stopped; reports in {root / 'failover.html'} and "
        f"{root / 'failback.html'}, runs in {root / 'drx'}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
