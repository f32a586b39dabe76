"""The lab of sshd hosts, checked with the stock OpenSSH client (independent of drx's code)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.lab.sshd import Lab, LabError, LabHost

pytestmark = pytest.mark.sshd


def _ssh(host: LabHost, command: str, *, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on ``host`` with OpenSSH's ``ssh``, strict host key checking on."""
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={host.known_hosts}",
            "-o",
            "ConnectTimeout=3",
            "-i",
            str(host.identity_file),
            "-p",
            str(host.port),
            f"{host.user}@{host.address}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _banner(host: LabHost, timeout: float = 1.0) -> bytes:
    with socket.create_connection((host.address, host.port), timeout=timeout) as s:
        return s.recv(64)


@pytest.fixture
def private_lab() -> Iterator[Lab]:
    """A lab of the test's own, for tests that stop the whole lab."""
    root = Path(tempfile.mkdtemp(prefix="drx-lab-"))
    lab = Lab(root)
    yield lab
    lab.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_hosts_have_own_addresses_and_answer_with_banner(
    lab_hosts: Callable[[int], list[LabHost]],
) -> None:
    """Each host listens on its own 127.0.0.K address and shows an SSH banner."""
    hosts = lab_hosts(3)
    assert len({h.address for h in hosts}) == 3
    assert all(h.address.startswith("127.") and h.address != "127.0.0.1" for h in hosts)
    for h in hosts:
        assert h.running and h.pid is not None
        assert _banner(h).startswith(b"SSH-2.0-OpenSSH")


def test_openssh_client_logs_in_as_lab_user_with_strict_known_hosts(
    lab_hosts: Callable[[int], list[LabHost]],
) -> None:
    """The generated client key, known_hosts and user work with the real ssh client, and the
    user (not root) can write its host's state dir."""
    host = lab_hosts(1)[0]
    r = _ssh(host, f"id -un; id -u; touch {host.state_dir}/written && echo ok")
    assert r.returncode == 0, r.stderr
    user, uid, ok = r.stdout.split()
    assert (user, ok) == (host.user, "ok") and int(uid) != 0
    assert (host.state_dir / "written").exists()


def test_known_hosts_has_bracketed_port_lines(
    lab: Lab, lab_hosts: Callable[[int], list[LabHost]]
) -> None:
    """known_hosts holds one ``[addr]:port ssh-ed25519 KEY`` line per host, from its host key."""
    hosts = lab_hosts(2)
    lines = lab.known_hosts.read_text().splitlines()
    for h in hosts:
        public = h.host_key.with_name(h.host_key.name + ".pub").read_text().split()[:2]
        assert f"[{h.address}]:{h.port} {' '.join(public)}" in lines


def test_kill_refuses_then_restart_serves_with_same_key(
    lab: Lab, fresh_host: Callable[[], LabHost]
) -> None:
    """kill takes the host down (connection refused); restart brings it back unchanged."""
    host = fresh_host()
    port, key = host.port, host.host_key.read_bytes()
    lab.kill(host.name)
    assert not host.running and host.pid is None
    with pytest.raises(ConnectionRefusedError):
        _banner(host)
    lab.restart(host.name)
    assert (host.port, host.host_key.read_bytes()) == (port, key)
    assert _ssh(host, "true").returncode == 0


def test_kill_ends_open_sessions(lab: Lab, fresh_host: Callable[[], LabHost]) -> None:
    """A killed host takes its running sessions down with it, like a crashed machine."""
    host = fresh_host()
    proc = subprocess.Popen(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={host.known_hosts}",
            "-i",
            str(host.identity_file),
            "-p",
            str(host.port),
            f"{host.user}@{host.address}",
            f"echo $$ > {host.state_dir}/pid; sleep 30",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while not (host.state_dir / "pid").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # the file exists; make sure its content is written too
        remote_pid = int((host.state_dir / "pid").read_text())
        lab.kill(host.name)
        assert proc.wait(5) != 0
        assert not Path(f"/proc/{remote_pid}").exists() or (
            Path(f"/proc/{remote_pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z"
        )
    finally:
        proc.kill()
        proc.wait()


def test_pause_hangs_and_resume_restores(lab: Lab, fresh_host: Callable[[], LabHost]) -> None:
    """pause: TCP connects but no banner comes (a hung host); resume: it answers again."""
    host = fresh_host()
    lab.pause(host.name)
    try:
        with pytest.raises(TimeoutError):
            _banner(host, timeout=0.3)
    finally:
        lab.resume(host.name)
    assert _banner(host, timeout=5).startswith(b"SSH-")


def test_stop_kills_every_sshd_and_is_idempotent(private_lab: Lab) -> None:
    """stop kills every host's sshd; calling it again is harmless; context manager stops too."""
    private_lab.add_host("one")
    private_lab.add_host("two")
    hosts = private_lab.start()
    pids = [h.pid for h in hosts]
    with private_lab:
        pass
    private_lab.stop()
    for pid in pids:
        assert pid is not None and not Path(f"/proc/{pid}").exists()
    with pytest.raises(LabError):
        private_lab.start()


def test_inventory_yaml_describes_the_hosts(private_lab: Lab) -> None:
    """The inventory lists sites and hosts with address, port, roles and DRX_HOST_DIR, and
    defaults pointing at the lab's user, key and known_hosts with strict checking."""
    text = private_lab.inventory_yaml(
        {"site-a": ["db-a", "app-a"], "site-b": ["db-b"]},
        roles={"app-a": ["app", "web"]},
        active="site-b",
    )
    doc = yaml.safe_load(text)
    assert (private_lab.root / "inventory.yaml").read_text() == text
    assert doc["active"] == "site-b"
    assert doc["defaults"] == {
        "transport": "ssh",
        "user": private_lab.user,
        "identity_file": str(private_lab.identity_file),
        "known_hosts": str(private_lab.known_hosts),
        "host_key_policy": "strict",
        "connect_timeout": "5s",
    }
    db_a = doc["sites"]["site-a"]["hosts"]["db-a"]
    h = private_lab.host("db-a")
    assert db_a == {
        "address": h.address,
        "port": h.port,
        "roles": ["db"],
        "env": {"DRX_HOST_DIR": str(h.state_dir)},
    }
    assert doc["sites"]["site-a"]["hosts"]["app-a"]["roles"] == ["app", "web"]


def test_inventory_yaml_loads_as_a_drx_inventory(private_lab: Lab) -> None:
    """drx's own inventory loader accepts the lab inventory and sees the same host settings."""
    from orchestrator.model.inventory import load_inventory

    private_lab.inventory_yaml({"site-a": ["db-a"], "site-b": ["db-b"]})
    inventory = load_inventory(private_lab.root / "inventory.yaml")
    assert inventory.active == "site-a"
    for name in ("db-a", "db-b"):
        assert inventory.host(name).spec == private_lab.host_spec(name)


def test_lab_without_sshd_fails_loudly(tmp_path: Path) -> None:
    """A missing sshd binary is an error with a clear message, never a silent skip."""
    with pytest.raises(LabError, match="no sshd"):
        Lab(tmp_path / "lab", sshd="/nonexistent/sshd")


def test_cli_up_serves_until_sigterm(tmp_path: Path) -> None:
    """``python -m orchestrator.lab.sshd up`` starts hosts, writes and prints the inventory, writes
    the pidfile, and stops every sshd on SIGTERM."""
    root = Path(tempfile.mkdtemp(prefix="drx-lab-cli-"))
    pidfile = tmp_path / "lab.pid"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.lab",
            "up",
            "--dir",
            str(root),
            "--sites",
            "site-a:db-a,app-a",
            "site-b:db-b",
            "--pidfile",
            str(pidfile),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not pidfile.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert pidfile.read_text().strip() == str(proc.pid)
        doc = yaml.safe_load((root / "inventory.yaml").read_text())
        assert set(doc["sites"]) == {"site-a", "site-b"}
        host = doc["sites"]["site-b"]["hosts"]["db-b"]
        with socket.create_connection((host["address"], host["port"]), timeout=2) as s:
            assert s.recv(4) == b"SSH-"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert yaml.safe_load(out) == doc
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host["address"], host["port"]), timeout=2)
        assert not pidfile.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
