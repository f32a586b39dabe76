"""Runs over many hosts: the pre-flight's connection concurrency (DRX_MAX_CONNECTING), another
try for a connection sshd turns away past its MaxStartups, the controller's descriptor limit,
descriptors past select()'s 1,023, and the lab stopping many hosts at once."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.errors import ConnectionDropped, UsageError
from orchestrator.lab import sshd as lab_sshd
from orchestrator.lab.sshd import Lab
from orchestrator.model.inventory import Host
from orchestrator.run import connecting
from orchestrator.run.preflight import close_all, connect_all
from orchestrator.transport.base import HostSpec
from orchestrator.transport.fake import FakeConnection, FakeTransport
from orchestrator.transport.ssh import IDLE_WAKE_S, SSHTransport

pytestmark = pytest.mark.sshd


def _host(spec: HostSpec) -> Host:
    return Host(name=spec.name, site="site-b", address=spec.address, roles=(), vars={}, spec=spec)


class _CountingTransport(FakeTransport):
    """A fake transport whose connects take a while and count how many overlap."""

    def __init__(self) -> None:
        super().__init__(connect_delay_s=0.05)
        self.now = 0
        self.peak = 0
        self._count = threading.Lock()

    def connect(self, host: HostSpec) -> FakeConnection:
        with self._count:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            return super().connect(host)
        finally:
            with self._count:
                self.now -= 1


def test_max_connecting_caps_the_preflight_connections_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DRX_MAX_CONNECTING=3: 12 hosts are connected, never more than 3 being set up at once
    (and 3 at some point: the cap is the parallelism, not a serialisation)."""
    monkeypatch.setenv("DRX_MAX_CONNECTING", "3")
    transport = _CountingTransport()
    hosts = [
        _host(HostSpec(name=f"h{i}", address="127.0.0.1", transport="local")) for i in range(12)
    ]
    connections, failures = connect_all(hosts, lambda kind: transport)
    assert failures == {} and sorted(connections) == sorted(h.name for h in hosts)
    assert transport.peak == 3


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_a_bad_max_connecting_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """DRX_MAX_CONNECTING must be a positive integer: anything else is refused by name."""
    monkeypatch.setenv("DRX_MAX_CONNECTING", value)
    with pytest.raises(UsageError, match="DRX_MAX_CONNECTING"):
        connecting.max_connecting()


def test_a_server_closing_before_its_banner_is_tried_again_then_reported_as_dropped() -> None:
    """A server that closes every connection before its SSH banner is connected
    DROPPED_TRIES times, then reported as a dropped connection (not as a hung host)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    spec = HostSpec(
        name="closer",
        address="127.0.0.1",
        transport="ssh",
        port=server.getsockname()[1],
        user="nobody",
        host_key_policy="ignore",
        connect_timeout=5.0,
    )
    try:
        with pytest.raises(ConnectionDropped, match="before the SSH banner"):
            connecting.connect(SSHTransport(), spec)
    finally:
        server.close()
    assert len(accepted) == connecting.DROPPED_TRIES


def test_preflight_gets_through_sshd_maxstartups_by_trying_again(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 hosts behind one real sshd with MaxStartups 3, connected all at once while 3 idle
    connections fill its start-up slots for 0.3 s: sshd drops connections (its log says so),
    and every host is connected in the end."""
    name = "maxstartups-3"
    host = lab.add_host(name, settings="MaxStartups 3")
    try:
        lab.start([name])
        hogs = [socket.create_connection((host.address, host.port), timeout=5) for _ in range(3)]
        threading.Timer(0.3, lambda: [s.close() for s in hogs]).start()
        monkeypatch.setenv("DRX_MAX_CONNECTING", "12")
        spec = lab.host_spec(name, connect_timeout=10.0)
        hosts = [_host(replace(spec, name=f"n{i}")) for i in range(12)]
        connections, failures = connect_all(hosts)
        close_all(connections)
        log = host.log_file.read_text(errors="replace")
    finally:
        lab.remove(name)
    assert "past MaxStartups" in log, "sshd dropped nothing: the retry was not exercised"
    assert failures == {}, failures
    assert sorted(connections) == sorted(h.name for h in hosts)


def test_raise_fd_limit_lifts_a_low_soft_limit_for_many_hosts() -> None:
    """With the common soft RLIMIT_NOFILE of 1,024, 1,000 hosts raise it to what they need
    (within the hard limit); a handful of hosts leaves it alone."""
    code = (
        "import resource\n"
        "from orchestrator.run.connecting import raise_fd_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))\n"
        "print(raise_fd_limit(4), end=' ')\n"
        "print(raise_fd_limit(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    small, raised, now, hard = (int(x) for x in out)
    want = connecting.FDS_BASE + connecting.FDS_PER_HOST * 1000
    assert small == min(1024, hard)
    assert raised == now == min(want, hard if hard != resource.RLIM_INFINITY else want)
    assert now > 1024


def test_a_command_runs_on_a_connection_whose_descriptors_are_past_1023(
    lab: Lab, lab_hosts
) -> None:
    """Over SSH, a command's output is read although its channel's descriptor is above
    select()'s limit (as in a run over 1,000 hosts)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    filler: list[int] = []
    try:
        while not filler or filler[-1] < 1100:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        host = lab_hosts(1)[0]
        with SSHTransport().connect(lab.host_spec(host.name)) as conn:
            res = conn.run("echo past-select", timeout=20)
    finally:
        for fd in filler:
            os.close(fd)
    assert res.ok and "past-select" in res.output_tail


def test_remove_many_stops_those_hosts_by_pid_and_keeps_the_others(lab: Lab) -> None:
    """remove_many kills the named hosts' sshd (their pids are gone, known_hosts forgets
    them) and leaves the other hosts serving."""
    names = [f"many-{i}" for i in range(5)]
    for n in names:
        lab.add_host(n)
    hosts = lab.start(names)
    pids = {h.name: h.pid for h in hosts}
    try:
        lab.remove_many(names[:3])
        for n in names[:3]:
            assert not Path(f"/proc/{pids[n]}").exists()
            assert n not in lab.hosts
        known = lab.known_hosts.read_text()
        for n in names[3:]:
            h = lab.host(n)
            assert h.running and h.known_hosts_name in known
            with socket.create_connection((h.address, h.port), timeout=5) as s:
                assert s.recv(4) == b"SSH-"
    finally:
        lab.remove_many([n for n in names if n in lab.hosts])


def test_ctrl_c_during_the_lab_stop_is_held_until_every_host_is_stopped() -> None:
    """A SIGINT that arrives while the lab stops its hosts does not cut the stop short: it is
    raised (as KeyboardInterrupt) once the block is done."""
    done = []
    with pytest.raises(KeyboardInterrupt), lab_sshd._signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here, and must not raise
        done.append(True)
    assert done == [True]


def test_closing_idle_connections_does_not_wait_for_their_threads_to_wake(
    lab: Lab, lab_hosts
) -> None:
    """Idle connections' threads wake once a second (IDLE_WAKE_S), yet closing ten of them
    returns at once, not after a wake-up each (generous bound: half of that)."""
    hosts = lab_hosts(10)
    transport = SSHTransport()
    conns = [transport.connect(lab.host_spec(h.name)) for h in hosts]
    for conn in conns:
        assert conn.run("true", timeout=20).ok
    time.sleep(0.2)
    t0 = time.monotonic()
    for conn in conns:
        conn.close()
    assert time.monotonic() - t0 < 10 * IDLE_WAKE_S / 2
