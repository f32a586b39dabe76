"""The SSH transport against real OpenSSH sshd hosts of the lab."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.errors import AuthenticationFailed, HostKeyError, HostUnreachable, TransportError
from orchestrator.lab.sshd import Lab, LabHost, generate_ed25519
from orchestrator.transport.base import STDOUT_KEEP_BYTES, TAIL_BYTES, CancelToken, HostSpec
from orchestrator.transport.ssh import SSHConnection, SSHTransport, parse_jump

pytestmark = pytest.mark.sshd


@pytest.fixture
def shared(lab: Lab, lab_hosts: Callable[[int], list[LabHost]]) -> HostSpec:
    """A HostSpec for a shared, running lab host."""
    return lab.host_spec(lab_hosts(1)[0].name)


@pytest.fixture
def conn(shared: HostSpec) -> Iterator[SSHConnection]:
    """An open connection to the shared lab host."""
    c = SSHTransport().connect(shared)
    yield c
    c.close()


def _pids_alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are still running (zombies count as dead)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z":
            alive.append(pid)
    return alive


def _known_hosts_with(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "known_hosts"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _other_key(tmp_path: Path) -> str:
    """The public part of a freshly generated ed25519 key no lab host has."""
    return generate_ed25519(tmp_path / "other_key", "other")


# --- running commands -----------------------------------------------------------------------


def test_run_returns_rc_stdout_and_interleaved_tail(conn: SSHConnection) -> None:
    """A command's exit code, stdout and stdout+stderr tail come back as printed."""
    r = conn.run("echo out; echo err >&2; exit 3")
    assert (r.rc, r.error, r.ok) == (3, None, False)
    assert r.stdout == "out\n"
    assert "out\n" in r.output_tail and "err\n" in r.output_tail
    assert r.ended_mono >= r.started_mono and r.duration_s >= 0


def test_exit_codes_are_passed_through(conn: SSHConnection) -> None:
    """0, 1 and arbitrary exit statuses reach the result unchanged."""
    assert conn.run("true").ok
    assert conn.run("false").rc == 1
    assert conn.run("exit 42").rc == 42


def test_runs_as_lab_user_with_host_dir_exported(conn: SSHConnection, shared: HostSpec) -> None:
    """Commands run as the inventory's user with host.env exported (DRX_HOST_DIR)."""
    r = conn.run('id -un; printf "%s\\n" "$DRX_HOST_DIR"')
    assert r.stdout.splitlines() == [shared.user, shared.env["DRX_HOST_DIR"]]


def test_env_values_are_exported_verbatim(conn: SSHConnection) -> None:
    """env values with quotes, spaces, $ and newlines arrive byte for byte, and run env wins
    over host env."""
    value = "a b'c\"d $HOME `x` \\ end\nline2"
    r = conn.run('printf "%s|%s" "$V" "$DRX_HOST_DIR"', env={"V": value, "DRX_HOST_DIR": "over"})
    assert r.stdout == f"{value}|over"


def test_invalid_env_name_is_refused(conn: SSHConnection) -> None:
    """An env name the shell cannot export is a programming error, not a remote failure."""
    with pytest.raises(ValueError):
        conn.run("true", env={"BAD-NAME": "x"})


def test_stdin_is_closed(conn: SSHConnection) -> None:
    """A command reading stdin sees end-of-file instead of hanging."""
    r = conn.run("cat; echo done", timeout=5)
    assert (r.rc, r.stdout) == (0, "done\n")


def test_syntax_error_is_a_failing_command_and_marker_stays_hidden(
    conn: SSHConnection, tmp_path: Path
) -> None:
    """A shell syntax error is rc 2 from the remote shell; the wrapper's process-group marker
    appears neither in the result nor in the log."""
    log = tmp_path / "log"
    r = conn.run("echo (", log_path=log)
    assert r.rc == 2 and r.error is None
    assert "syntax error" in r.output_tail
    assert "drx-pgid" not in r.output_tail and "drx-pgid" not in log.read_text()


def test_command_killed_by_signal_reports_signal(conn: SSHConnection) -> None:
    """A command whose shell dies of a signal has no rc and error "signal"."""
    r = conn.run("kill -KILL $$")
    assert (r.rc, r.error) == (None, "signal")


def test_sudo_failure_is_a_failing_command(conn: SSHConnection) -> None:
    """The lab user has no sudo: ``sudo=True`` is reported as a failed command, not a crash."""
    r = conn.run("id -u", sudo=True, timeout=10)
    assert r.error is None and r.rc not in (0, None)
    assert "sudo" in r.output_tail


def test_log_streams_stdout_and_stderr_and_creates_dirs(
    conn: SSHConnection, tmp_path: Path
) -> None:
    """The log file (parent dirs created) gets all of stdout and stderr."""
    log = tmp_path / "a" / "b" / "step.log"
    r = conn.run("echo one; echo two >&2; printf 'no newline'", log_path=log)
    assert r.ok
    text = log.read_text()
    assert "one\n" in text and "two\n" in text and text.endswith("no newline")


def test_redaction_survives_a_secret_split_across_reads(
    conn: SSHConnection, tmp_path: Path
) -> None:
    """A secret printed in two pieces (separate reads) is still redacted in log, stdout and
    tail."""
    log = tmp_path / "log"
    r = conn.run(
        "printf 'token=sup'; sleep 0.3; printf 'ersecret ok\\n'; echo supersecret >&2",
        log_path=log,
        redact=lambda s: s.replace("supersecret", "***"),
    )
    assert r.ok
    for text in (log.read_text(), r.stdout, r.output_tail):
        assert "supersecret" not in text and "token=*** ok" in text


def test_large_output_goes_to_log_with_bounded_memory(conn: SSHConnection, tmp_path: Path) -> None:
    """50 MB of output is streamed to the log in full while memory holds only the tails."""
    log = tmp_path / "big.log"
    size = 50 * 1024 * 1024
    tracemalloc.start()
    try:
        r = conn.run(f"yes 0123456789abcdef | head -c {size}; echo END-OF-OUTPUT", log_path=log)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.ok
    assert log.stat().st_size == size + len("END-OF-OUTPUT\n")
    assert peak < 24 * 1024 * 1024  # window + read buffer, far below the 50 MB printed

    def expected_end(n: int) -> str:
        """The last n characters of what the command printed ("yes" repeats a 17-byte line)."""
        end = "END-OF-OUTPUT\n"
        line = "0123456789abcdef\n"
        return "".join(line[i % 17] for i in range(size - (n - len(end)), size)) + end

    assert r.stdout == expected_end(STDOUT_KEEP_BYTES)
    assert r.output_tail == expected_end(TAIL_BYTES)


def test_concurrent_runs_share_one_connection(conn: SSHConnection) -> None:
    """Eight commands on one connection run at the same time, each with its own output."""
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: conn.run(f"sleep 0.5; echo {i}"), range(8)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(8)]
    assert max(r.started_mono for r in results) < min(r.ended_mono for r in results)


def test_more_concurrent_runs_than_sessions_wait_for_a_slot(shared: HostSpec) -> None:
    """Beyond max_sessions, runs queue for a channel instead of being refused by sshd."""
    with SSHTransport(max_sessions=3).connect(shared) as c, ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: c.run(f"echo {i}"), range(12)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(12)]


def test_socket_has_tcp_nodelay(conn: SSHConnection) -> None:
    """TCP_NODELAY is on (the per-command latency lever: ~41 ms -> ~2.5 ms)."""
    sock = conn.paramiko_transport.sock
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# --- timeout, cancel, lost link -------------------------------------------------------------

# The command records the pids of its process tree, and both the shell and a background child
# would create a file a second later if they lived on.
TREE = (
    'echo $$ > "$DRX_HOST_DIR/pids.$T"; '
    '(sleep 1; touch "$DRX_HOST_DIR/child.$T") & echo $! >> "$DRX_HOST_DIR/pids.$T"; '
    'touch "$DRX_HOST_DIR/started.$T"; sleep 1; touch "$DRX_HOST_DIR/parent.$T"'
)


def _assert_tree_dead(state: Path, tag: str) -> None:
    pids = [int(p) for p in (state / f"pids.{tag}").read_text().split()]
    assert len(pids) == 2
    assert _pids_alive(pids) == []
    time.sleep(1.3)  # past the moment either process would have created its file
    assert not (state / f"child.{tag}").exists()
    assert not (state / f"parent.{tag}").exists()


def test_timeout_kills_the_remote_process_tree(conn: SSHConnection, shared: HostSpec) -> None:
    """On timeout the command and its background child are killed on the host."""
    r = conn.run(TREE, timeout=0.4, env={"T": "timeout"})
    assert (r.rc, r.error) == (None, "timeout")
    assert r.duration_s >= 0.4
    _assert_tree_dead(Path(shared.env["DRX_HOST_DIR"]), "timeout")


def test_timeout_stops_a_command_flooding_output(conn: SSHConnection, shared: HostSpec) -> None:
    """A command printing without pause still times out, and is killed on the host."""
    r = conn.run('echo $$ > "$DRX_HOST_DIR/pids.flood"; exec yes', timeout=0.5)
    assert (r.rc, r.error) == (None, "timeout")
    assert "y\ny\ny\n" in r.output_tail
    pid = int((Path(shared.env["DRX_HOST_DIR"]) / "pids.flood").read_text())
    assert _pids_alive([pid]) == []


def test_cancel_kills_the_remote_process_tree(conn: SSHConnection, shared: HostSpec) -> None:
    """Setting the CancelToken mid-command kills the command tree; error "cancelled"."""
    state = Path(shared.env["DRX_HOST_DIR"])
    token = CancelToken()
    results = []
    worker = threading.Thread(
        target=lambda: results.append(conn.run(TREE, env={"T": "cancel"}, cancel=token))
    )
    worker.start()
    deadline = time.monotonic() + 5
    while not (state / "started.cancel").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    token.set()
    worker.join(10)
    assert (results[0].rc, results[0].error) == (None, "cancelled")
    _assert_tree_dead(state, "cancel")


def test_cancelled_before_start_runs_nothing(conn: SSHConnection, shared: HostSpec) -> None:
    """A run whose token is already set returns "cancelled" without touching the host."""
    token = CancelToken()
    token.set()
    r = conn.run('touch "$DRX_HOST_DIR/never"', cancel=token)
    assert (r.rc, r.error) == (None, "cancelled")
    assert not (Path(shared.env["DRX_HOST_DIR"]) / "never").exists()


def test_lost_connection_mid_command_is_disconnected(
    lab: Lab, fresh_host: Callable[[], LabHost]
) -> None:
    """A host dying mid-command gives error "disconnected"; later runs raise TransportError."""
    host = fresh_host()
    c = SSHTransport().connect(lab.host_spec(host.name))
    results = []
    worker = threading.Thread(
        target=lambda: results.append(c.run('touch "$DRX_HOST_DIR/started"; sleep 10'))
    )
    worker.start()
    deadline = time.monotonic() + 5
    while not (host.state_dir / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    lab.kill(host.name)
    worker.join(10)
    assert (results[0].rc, results[0].error) == (None, "disconnected")
    assert not c.alive
    with pytest.raises(TransportError):
        c.run("true")
    c.close()


# --- connecting -----------------------------------------------------------------------------


def test_host_down_is_unreachable_fast(lab: Lab, fresh_host: Callable[[], LabHost]) -> None:
    """A host whose sshd is dead refuses the connection: HostUnreachable at once."""
    host = fresh_host()
    lab.kill(host.name)
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="connection refused"):
        SSHTransport().connect(lab.host_spec(host.name, connect_timeout=5.0))
    assert time.monotonic() - started < 2.0


def test_hung_host_is_unreachable_within_connect_timeout(
    lab: Lab, fresh_host: Callable[[], LabHost]
) -> None:
    """A host that accepts TCP but never answers (SIGSTOPped sshd) fails after
    connect_timeout with HostUnreachable."""
    host = fresh_host()
    lab.pause(host.name)
    try:
        started = time.monotonic()
        with pytest.raises(HostUnreachable, match=r"no SSH handshake within 0\.5s"):
            SSHTransport().connect(lab.host_spec(host.name, connect_timeout=0.5))
        elapsed = time.monotonic() - started
    finally:
        lab.resume(host.name)
    assert 0.4 <= elapsed < 3.0


def test_restarted_host_accepts_new_connections(
    lab: Lab, fresh_host: Callable[[], LabHost]
) -> None:
    """After restart, the same host (address, port, key) accepts connections again."""
    host = fresh_host()
    lab.kill(host.name)
    lab.restart(host.name)
    with SSHTransport().connect(lab.host_spec(host.name)) as c:
        assert c.run("true").ok


def test_wrong_key_is_authentication_failed(shared: HostSpec, tmp_path: Path) -> None:
    """A client key the host does not authorise raises AuthenticationFailed."""
    _other_key(tmp_path)
    spec = replace(shared, identity_file=str(tmp_path / "other_key"))
    with pytest.raises(AuthenticationFailed):
        SSHTransport().connect(spec)


def test_missing_identity_file_is_authentication_failed(shared: HostSpec, tmp_path: Path) -> None:
    """An identity file that does not exist is reported as an authentication failure."""
    spec = replace(shared, identity_file=str(tmp_path / "nope"))
    with pytest.raises(AuthenticationFailed, match="nope"):
        SSHTransport().connect(spec)


def test_identity_file_tilde_is_expanded(
    shared: HostSpec, _isolated_ssh_home: Path, lab: Lab
) -> None:
    """identity_file ``~/...`` is the home directory's file."""
    (_isolated_ssh_home / "lab_key").write_bytes(lab.identity_file.read_bytes())
    with SSHTransport().connect(replace(shared, identity_file="~/lab_key")) as c:
        assert c.run("true").ok


def test_user_ssh_config_is_ignored(shared: HostSpec, _isolated_ssh_home: Path) -> None:
    """A ~/.ssh/config redirecting every host elsewhere has no effect."""
    ssh = _isolated_ssh_home / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text("Host *\n  HostName 192.0.2.1\n  Port 1\n  User nobody\n")
    with SSHTransport().connect(shared) as c:
        assert c.run("id -un").stdout == f"{shared.user}\n"


def test_strict_refuses_unknown_host_key(shared: HostSpec, tmp_path: Path) -> None:
    """strict: a host missing from known_hosts is refused as "unknown host key"."""
    spec = replace(shared, known_hosts=_known_hosts_with(tmp_path, []))
    with pytest.raises(HostKeyError, match="unknown host key"):
        SSHTransport().connect(spec)


def test_strict_refuses_missing_known_hosts_file(shared: HostSpec, tmp_path: Path) -> None:
    """strict with no known_hosts file at all refuses every host."""
    spec = replace(shared, known_hosts=str(tmp_path / "absent"))
    with pytest.raises(HostKeyError, match="unknown host key"):
        SSHTransport().connect(spec)


def test_strict_refuses_changed_host_key(shared: HostSpec, tmp_path: Path) -> None:
    """strict: a host whose key differs from known_hosts is refused as "host key changed"."""
    name = f"[{shared.address}]:{shared.port}"
    spec = replace(
        shared, known_hosts=_known_hosts_with(tmp_path, [f"{name} {_other_key(tmp_path)}"])
    )
    with pytest.raises(HostKeyError, match="host key changed"):
        SSHTransport().connect(spec)


def test_accept_new_records_key_then_refuses_a_change(
    shared: HostSpec, tmp_path: Path, lab: Lab
) -> None:
    """accept-new: an unknown host is trusted and its key appended ([addr]:port form) once;
    a changed key is still refused."""
    known = tmp_path / "sub" / "known_hosts"  # the file and its directory do not exist yet
    spec = replace(shared, known_hosts=str(known), host_key_policy="accept-new")
    for _ in range(2):
        with SSHTransport().connect(spec) as c:
            assert c.run("true").ok
    host_pub = (lab.host(shared.name).host_key.parent / "ssh_host_ed25519_key.pub").read_text()
    assert (
        known.read_text() == f"[{shared.address}]:{shared.port} {' '.join(host_pub.split()[:2])}\n"
    )
    # Now the recorded key is replaced by another: a changed key.
    known.write_text(f"[{shared.address}]:{shared.port} {_other_key(tmp_path)}\n")
    with pytest.raises(HostKeyError, match="host key changed"):
        SSHTransport().connect(spec)


def test_ignore_accepts_any_key(shared: HostSpec, tmp_path: Path) -> None:
    """ignore: a wrong known_hosts entry does not matter, and nothing is written."""
    line = f"[{shared.address}]:{shared.port} {_other_key(tmp_path)}"
    path = _known_hosts_with(tmp_path, [line])
    with SSHTransport().connect(replace(shared, known_hosts=path, host_key_policy="ignore")) as c:
        assert c.run("true").ok
    assert Path(path).read_text() == line + "\n"


# --- bastion --------------------------------------------------------------------------------


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        chain.append(pid)
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        pid = int(stat.rsplit(b")", 1)[1].split()[1])
    return chain


def test_proxy_jump_goes_through_the_bastion(
    lab: Lab, lab_hosts: Callable[[int], list[LabHost]]
) -> None:
    """With proxy_jump the target's TCP connection is made by the bastion's sshd, not by us;
    closing the connection also closes the bastion connection."""
    bastion, target = lab_hosts(2)
    spec = lab.host_spec(target.name, proxy_jump=f"{bastion.user}@{bastion.address}:{bastion.port}")
    c = SSHTransport().connect(spec)
    try:
        # SSH_CONNECTION = "client_ip client_port server_ip server_port" as the target sees it.
        client_ip, client_port, server_ip, server_port = c.run(
            'printf "%s" "$SSH_CONNECTION"'
        ).stdout.split()
        assert (server_ip, int(server_port)) == (target.address, target.port)
        ss = subprocess.run(
            ["ss", "-tnpH", "state", "established", "src", f"{client_ip}:{client_port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        owner = int(re.findall(r"pid=(\d+)", ss)[0])
        assert bastion.pid in _ancestors(owner)  # a process of the bastion's sshd tree
        assert owner != os.getpid()  # not a socket of ours: the bastion made it
    finally:
        c.close()
    assert not c.alive
    # The bastion's session process that made that connection ends with our bastion connection.
    deadline = time.monotonic() + 5
    while _pids_alive([owner]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _pids_alive([owner]) == []


def test_bastion_host_key_is_checked_too(
    lab: Lab, lab_hosts: Callable[[int], list[LabHost]], tmp_path: Path
) -> None:
    """The bastion's host key is checked against the same known_hosts and policy."""
    bastion, target = lab_hosts(2)
    only_target = [
        line
        for line in lab.known_hosts.read_text().splitlines()
        if line.startswith(f"[{target.address}]:{target.port} ")
    ]
    spec = lab.host_spec(
        target.name,
        proxy_jump=f"{bastion.user}@{bastion.address}:{bastion.port}",
        known_hosts=_known_hosts_with(tmp_path, only_target),
    )
    with pytest.raises(HostKeyError, match=r"bastion .*unknown host key"):
        SSHTransport().connect(spec)


def test_dead_bastion_is_unreachable(
    lab: Lab, fresh_host: Callable[[], LabHost], lab_hosts: Callable[[int], list[LabHost]]
) -> None:
    """A proxy_jump to a dead bastion raises HostUnreachable naming the bastion."""
    bastion = fresh_host()
    target = lab_hosts(1)[0]
    lab.kill(bastion.name)
    spec = lab.host_spec(target.name, proxy_jump=f"{bastion.address}:{bastion.port}")
    with pytest.raises(HostUnreachable, match="bastion"):
        SSHTransport().connect(spec)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("ops@jump:2222", ("ops", "jump", 2222)),
        ("jump", ("me", "jump", 22)),
        ("jump:2200", ("me", "jump", 2200)),
        ("ops@[::1]:2222", ("ops", "::1", 2222)),
    ],
)
def test_parse_jump(text: str, parsed: tuple[str, str, int]) -> None:
    """proxy_jump strings split into user (default: the host's), host and port (default 22)."""
    assert parse_jump(text, "me") == parsed
