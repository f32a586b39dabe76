"""The starter over real sshd: one process per connection starts every spooled command (their
parent) once it is ready, concurrent commands' outputs never mix, a host without python3 keeps
the wrapper, and a starter that dies is replaced."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.lab.sshd import Lab, LabHost
from orchestrator.run import preflight
from orchestrator.transport import ssh, starter
from orchestrator.transport.spool import SpoolKey
from orchestrator.transport.ssh import SSHConnection, SSHTransport
from tests.drill import World, world_dir
from tests.test_spool import _alive_in_group

pytestmark = pytest.mark.sshd


@pytest.fixture
def host(lab: Lab, lab_hosts: object) -> Iterator[tuple[Lab, LabHost]]:
    """One lab host."""
    found: LabHost = lab_hosts(1)[0]  # type: ignore[operator]
    yield lab, found


def _key(conn: SSHConnection) -> SpoolKey:
    return SpoolKey("test-" + secrets.token_hex(6), "step", conn.host.name, "1")


def _spool(conn: SSHConnection, key: SpoolKey, user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir) / ".drx" / "spool" / key.relative()


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def test_one_starter_starts_every_spooled_command(host: tuple[Lab, LabHost]) -> None:
    """Two spooled commands on one connection have the same parent, a python3 process: no
    wrapper shell per command."""
    lab, h = host
    with SSHTransport().connect(lab.host_spec(h.name)) as conn:
        assert conn.start_spooling(10)
        parents = []
        for _ in range(2):
            res = conn.run("echo $PPID; sleep 0.2", timeout=20, spool=_key(conn))
            assert res.rc == 0, res.output_tail
            parents.append(int(res.stdout))
        assert parents[0] == parents[1]
        argv = Path(f"/proc/{parents[0]}/cmdline").read_bytes().split(b"\0")
        assert b"python3" in argv[0] and b"-I" in argv


def test_concurrent_commands_keep_their_own_output(host: tuple[Lab, LabHost]) -> None:
    """Eight commands at once through one starter: each gets exactly its own output and rc."""
    lab, h = host
    with SSHTransport().connect(lab.host_spec(h.name)) as conn:
        assert conn.start_spooling(10)
        results: dict[int, tuple[int | None, str, str]] = {}

        def one(i: int) -> None:
            res = conn.run(
                f"for n in $(seq 1 200); do echo {i}-$n; done; echo e{i} >&2; exit {i}",
                timeout=30,
                spool=_key(conn),
            )
            results[i] = (res.rc, res.stdout, res.stderr)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i in range(8):
        expected = "".join(f"{i}-{n}\n" for n in range(1, 201))
        assert results[i] == (i, expected, f"e{i}\n")


def test_the_first_command_does_not_wait_for_the_starter(host: tuple[Lab, LabHost]) -> None:
    """The first spooled command of a connection runs at once through the wrapper while the
    starter starts; later ones go through the starter."""
    lab, h = host
    with SSHTransport().connect(lab.host_spec(h.name)) as conn:
        first = conn.run("echo $PPID", timeout=20, spool=_key(conn))
        assert conn.start_spooling(10)
        later = conn.run("echo $PPID", timeout=20, spool=_key(conn))
        assert first.rc == later.rc == 0
        starter_argv = Path(f"/proc/{int(later.stdout)}/cmdline").read_bytes()
    assert b"python3" in starter_argv
    assert int(first.stdout) != int(later.stdout)


def test_a_host_without_python3_keeps_the_wrapper(
    host: tuple[Lab, LabHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no such interpreter on the host, spooled commands still run (by the wrapper),
    with the same spool: pid, out, err, rc."""
    lab, h = host
    monkeypatch.setattr(starter, "PYTHON", "drx-no-such-python3")
    with SSHTransport().connect(lab.host_spec(h.name)) as conn:
        assert not conn.start_spooling(10)
        for _ in range(2):
            key = _key(conn)
            res = conn.run("echo fine; exit 5", timeout=20, spool=key)
            assert (res.rc, res.stdout) == (5, "fine\n")
            d = _spool(conn, key, h.user)
            assert sorted(p.name for p in d.iterdir()) == ["err", "out", "pid", "rc"]
            assert (d / "rc").read_text() == "5\n"


def test_a_dead_starter_is_replaced(host: tuple[Lab, LabHost]) -> None:
    """The starter killed while a command runs: that command reports the loss (its outcome is
    the spool's), and the next command on the connection runs through a new starter."""
    lab, h = host
    with SSHTransport().connect(lab.host_spec(h.name)) as conn:
        assert conn.start_spooling(10)
        key = _key(conn)
        box: dict[str, object] = {}
        t = threading.Thread(
            target=lambda: box.update(res=conn.run("sleep 3", timeout=30, spool=key))
        )
        t.start()
        pid_file = _spool(conn, key, h.user) / "pid"
        end = time.monotonic() + 15
        while not pid_file.exists():
            assert time.monotonic() < end
            time.sleep(0.05)
        old = _parent(int(pid_file.read_text().split()[0]))
        os.kill(old, signal.SIGKILL)
        t.join(20)
        assert getattr(box["res"], "error", None) == "disconnected"
        assert conn.start_spooling(10)
        res = conn.run("echo $PPID", timeout=20, spool=_key(conn))
        assert res.rc == 0 and int(res.stdout) != old


def test_the_command_sees_its_spool_directory(host: tuple[Lab, LabHost]) -> None:
    """``$__drx_d`` names the attempt's directory in the command's shell, as under the
    wrapper (runbooks read the attempt from it)."""
    lab, h = host
    with SSHTransport().connect(lab.host_spec(h.name)) as conn:
        assert conn.start_spooling(10)
        key = _key(conn)
        res = conn.run('echo "$__drx_d"', timeout=20, spool=key)
    assert res.rc == 0 and res.stdout == f"{_spool(conn, key, h.user)}\n"


def test_the_command_sees_what_the_wrapper_gives_it(host: tuple[Lab, LabHost]) -> None:
    """Environment (no LC_CTYPE of python's own), umask, open-file limit and traps are the
    same through the starter as through the wrapper."""
    lab, h = host
    seen = []
    for use in (True, False):
        with SSHTransport(starter=use).connect(lab.host_spec(h.name)) as conn:
            assert conn.start_spooling(10) == use
            res = conn.run("env | sort; umask; ulimit -n; trap", timeout=20, spool=_key(conn))
            assert res.rc == 0, res.output_tail
            seen.append({line for line in res.stdout.splitlines() if not line.startswith("SSH_")})
    assert seen[0] == seen[1]


def test_sudo_through_the_starter(host: tuple[Lab, LabHost]) -> None:
    """A sudo command started by the starter runs as root with its env, leaves the spool's
    files (the login user's), and on timeout its whole group (root's processes) is killed."""
    lab, h = host
    dropin = lab.install_sudoers(["/usr/bin/sh", "/bin/sh"], purpose="drx starter sudo test")
    try:
        with SSHTransport(kill_grace_s=0.5).connect(lab.host_spec(h.name)) as conn:
            assert conn.start_spooling(10)
            key = _key(conn)
            res = conn.run(
                'id -u; echo "$WHO"', env={"WHO": "me"}, sudo=True, timeout=20, spool=key
            )
            assert (res.rc, res.stdout) == (0, "0\nme\n"), res.output_tail
            d = _spool(conn, key, h.user)
            assert (d / "rc").read_text() == "0\n"
            assert (d / "out").stat().st_uid == pwd.getpwnam(h.user).pw_uid
            key = _key(conn)
            res = conn.run("sleep 60 & sleep 60", sudo=True, timeout=1, spool=key)
            assert res.error == "timeout"
            pgid = int((_spool(conn, key, h.user) / "pid").read_text().split()[1])
            end = time.monotonic() + 10
            while _alive_in_group(pgid):
                assert time.monotonic() < end, _alive_in_group(pgid)
                time.sleep(0.05)
            assert not (_spool(conn, key, h.user) / "rc").exists()
    finally:
        lab.remove_sudoers(dropin)


def test_a_few_commands_keep_the_wrapper_many_start_the_starter_at_once(
    host: tuple[Lab, LabHost],
) -> None:
    """Told it will run a few spooled commands, a connection runs them through the wrapper (no
    python3 started for them), and starts a starter only once more come; told it will run
    many, it starts its starter before the first."""
    lab, h = host
    parent = "tr '\\0' ' ' </proc/$PPID/cmdline"
    with SSHTransport().connect(lab.host_spec(h.name)) as conn:
        conn.expect_spooled(3)
        for _ in range(3):
            res = conn.run(parent, timeout=20, spool=_key(conn))
            assert res.rc == 0 and "python3" not in res.stdout, res.stdout
        assert conn.starter_state == "none"
        for _ in range(ssh.STARTER_MIN_COMMANDS - 3):
            assert conn.run("true", timeout=20, spool=_key(conn)).ok
        assert conn.starter_state in ("starting", "ready")
        assert conn.start_spooling(10)
        assert "python3" in conn.run(parent, timeout=20, spool=_key(conn)).stdout
    with SSHTransport().connect(lab.host_spec(h.name)) as conn:
        assert conn.starter_state == "none"
        conn.expect_spooled(ssh.STARTER_MIN_COMMANDS)
        assert conn.starter_state in ("starting", "ready")


def _gone(path: Path, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


def test_the_starter_removes_spent_spools_after_its_commands_and_drx(
    host: tuple[Lab, LabHost],
) -> None:
    """Spools handed to the starter for removal stay while any command it started runs and
    while drx is connected; once both have ended they are gone, with their empty parents."""
    lab, h = host
    conn = SSHTransport().connect(lab.host_spec(h.name))
    try:
        assert conn.start_spooling(10)
        spent = _key(conn)
        assert conn.run("echo done", timeout=20, spool=spent).ok
        slow = _key(conn)
        ran = threading.Thread(target=conn.run, args=("sleep 1",), kwargs={"spool": slow})
        ran.start()
        conn.discard_spools([spent])
        path = _spool(conn, spent, lab.user)
        time.sleep(0.3)
        assert (path / "rc").exists()  # the sleep still runs
        ran.join()
        time.sleep(0.3)
        assert path.exists()  # drx still connected
    finally:
        conn.close()
    assert _gone(path.parent.parent.parent)  # the attempt, its host, step and run directories
    assert (_spool(conn, slow, lab.user) / "rc").exists()  # not handed over: kept


def test_without_a_starter_spent_spools_are_removed_after_drx_has_gone(
    host: tuple[Lab, LabHost],
) -> None:
    """Without a starter the removal is a command of its own that drx does not wait for: it
    completes after the connection has closed."""
    lab, h = host
    conn = SSHTransport(starter=False).connect(lab.host_spec(h.name))
    keys = [_key(conn) for _ in range(3)]
    try:
        for key in keys:
            assert conn.run("echo done", timeout=20, spool=key).ok
        conn.discard_spools(keys)
    finally:
        conn.close()
    for key in keys:
        assert _gone(_spool(conn, key, lab.user).parent.parent.parent)


def _parent_of_self(res_stdout: str) -> bytes:
    """The command line of the parent of the process whose /proc/self/stat is ``res_stdout``."""
    stat = res_stdout
    ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
    return Path(f"/proc/{ppid}/cmdline").read_bytes()


def test_a_plain_program_call_is_spawned_without_a_shell(host: tuple[Lab, LabHost]) -> None:
    """A plain program call (words only) is the starter's own child, with the step's env
    exported; one that cannot be found ends 127 as under a shell, with its rc in the spool;
    with PATH among the exports the program is looked up in that PATH."""
    lab, h = host
    with SSHTransport().connect(lab.host_spec(h.name)) as conn:
        assert conn.start_spooling(10)
        res = conn.run("cat /proc/self/stat", timeout=20, spool=_key(conn))
        assert res.rc == 0 and b"python3" in _parent_of_self(res.stdout)
        res = conn.run("env", timeout=20, spool=_key(conn), env={"DRX_X": "a b=c"})
        assert "DRX_X=a b=c\n" in res.stdout
        missing = _key(conn)
        res = conn.run("/no/such/program --flag", timeout=20, spool=missing)
        assert res.rc == 127 and "/no/such/program: not found" in res.stderr
        assert (_spool(conn, missing, lab.user) / "rc").read_text() == "127\n"
        # looked up in the PATH the step exports, as a shell does: here, nowhere
        res = conn.run("cat /proc/self/stat", timeout=20, spool=_key(conn), env={"PATH": "/no"})
        assert res.rc == 127 and "not found" in res.stderr


def _chain(steps: int) -> str:
    """A runbook of ``steps`` steps in a row on app@target; the first writes the command line
    of its shell's parent (the starter's python3, or sshd under the wrapper) to a host file."""
    first = "tr '\\0' ' ' </proc/$PPID/cmdline >\"$DRX_HOST_DIR/parent\""
    chain: list[dict[str, object]] = [{"id": "s0", "hosts": "app@target", "run": first}]
    chain += [
        {"id": f"s{i}", "hosts": "app@target", "run": "true", "needs": [f"s{i - 1}"]}
        for i in range(1, steps)
    ]
    return yaml.safe_dump({"name": "warm", "steps": chain}, sort_keys=False)


@pytest.fixture
def warm_world(lab: Lab, lab_hosts: object) -> Iterator[World]:
    """A failover world of two lab hosts (app-a, app-b)."""
    shared: list[LabHost] = lab_hosts(2)  # type: ignore[operator]
    root = world_dir()
    w = World(root, "ssh", lab=lab, sites={"site-a": ["app-a"], "site-b": ["app-b"]})
    w.lab_names = {"app-a": shared[0].name, "app-b": shared[1].name}
    w.write_inventory()
    yield w
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    ("steps", "through"),
    [(ssh.STARTER_MIN_COMMANDS, "starter"), (ssh.STARTER_MIN_COMMANDS - 1, "wrapper")],
)
def test_the_pre_flight_readies_the_starter_of_a_host_with_many_commands(
    warm_world: World, capsys: pytest.CaptureFixture[str], steps: int, through: str
) -> None:
    """A host the run gives enough spooled commands has its starter started and ready in the
    pre-flight, so that even the run's first command goes through it (its start-up is not
    inside the measured RTO); a host with a few keeps the wrapper, and no python3 starts."""
    warm_world.write_runbook(_chain(steps))
    code, err = warm_world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    parent = warm_world.host_file("app-b", "parent").read_text()
    assert ("python3" in parent) == (through == "starter"), parent
    if through == "wrapper":
        assert parent.startswith("sshd"), parent


def test_the_pre_flight_goes_on_without_a_starter_where_python3_is_missing(
    warm_world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No python3 on the host: the pre-flight does not wait out its limit for a starter that
    cannot start, and every command runs through the wrapper."""
    monkeypatch.setattr(starter, "PYTHON", "drx-no-such-python3")
    monkeypatch.setattr(preflight, "STARTER_WARM_S", 60.0)
    warm_world.write_runbook(_chain(ssh.STARTER_MIN_COMMANDS))
    t0 = time.monotonic()
    code, err = warm_world.run(capsys, "failover", "site-b", "--yes")
    assert code == 0, err
    assert time.monotonic() - t0 < 30
    assert "python3" not in warm_world.host_file("app-b", "parent").read_text()
