"""The host-side spool, locally and over real sshd: commands run detached and outlive drx,
nothing secret is in any process's argv, a timeout kills the command's group, a successful
attempt leaves nothing behind, and an unsafe spool directory is refused at the pre-flight."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.sshd import Lab, LabHost
from orchestrator.model.inventory import Host
from orchestrator.run.preflight import SpoolRefused, prove
from orchestrator.transport.base import Connection, HostSpec
from orchestrator.transport.local import LocalTransport
from orchestrator.transport.spool import SpoolKey, cleanup_program, words
from orchestrator.transport.ssh import SSHTransport

SECRET = "s3cr3t-" + secrets.token_hex(8)


@dataclass
class Side:
    """One way to reach a host: its spec, an open connection, and where its spool lives."""

    kind: str
    spec: HostSpec
    conn: Connection
    root: Path  # the spool directory, as this (root) test process can read it
    starter: bool = False  # over SSH: spooled commands go through the connection's starter

    def key(self, step: str = "step", attempt: str = "1", **kw: Any) -> SpoolKey:
        run = "test-" + secrets.token_hex(6)
        local_root = self.root if self.kind == "local" else None
        return SpoolKey(run, step, self.spec.name, attempt, local_root, **kw)

    def dir(self, key: SpoolKey) -> Path:
        return self.root / key.relative()


@pytest.fixture(params=["local", "ssh", "ssh-wrapper"])
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Side]:
    """A connection to a local host and to a real sshd host (spooled commands started by the
    connection's starter, or by a wrapper each), with their spool directories."""
    if request.param == "local":
        spec = HostSpec(name="here", address="localhost", transport="local")
        conn: Connection = LocalTransport(kill_grace_s=0.5).connect(spec)
        s = Side("local", spec, conn, tmp_path / "spool")
    else:
        lab: Lab = request.getfixturevalue("lab")
        host: LabHost = request.getfixturevalue("lab_hosts")(1)[0]
        spec = lab.host_spec(host.name)
        starter = request.param == "ssh"
        ssh = SSHTransport(kill_grace_s=0.5, starter=starter).connect(spec)
        # the starter, once ready, starts the spooled commands (the wrapper until then)
        assert ssh.start_spooling(10) == starter
        conn = ssh
        home = Path(pwd.getpwnam(host.user).pw_dir)
        s = Side("ssh", spec, conn, home / ".drx" / "spool", starter)
    yield s
    s.conn.close()


def _cmdlines() -> list[bytes]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found.append(f.read())
            except OSError:
                pass
    return found


def _argv_hits(body: Callable[[], Any], needle: str) -> tuple[Any, int, int]:
    """Run ``body`` while reading every process's argv over and over: (its result, how many
    argvs held ``needle``, how many scans were made)."""
    hits, scans = 0, 0
    stop = threading.Event()

    def scan() -> None:
        nonlocal hits, scans
        while not stop.is_set():
            hits += sum(needle.encode() in c for c in _cmdlines())
            scans += 1

    t = threading.Thread(target=scan)
    t.start()
    try:
        result = body()
    finally:
        stop.set()
        t.join()
    return result, hits, scans


def test_the_argv_scan_sees_a_secret_in_an_argv() -> None:
    """The scan used below does find a secret that is in some process's argv."""
    proc = subprocess.Popen(["sh", "-c", "sleep 0.6", SECRET])
    try:
        _, hits, _ = _argv_hits(lambda: time.sleep(0.3), SECRET)
    finally:
        proc.kill()
        proc.wait()
    assert hits > 0


@pytest.mark.parametrize("spooled", [True, False])
def test_no_secret_in_any_argv_while_a_step_runs(side: Side, spooled: bool) -> None:
    """While a command with a secret in its env and its text runs, no /proc/*/cmdline on the
    machine (controller and host alike) holds the secret; the command still sees it."""
    key = side.key() if spooled else None
    res, hits, scans = _argv_hits(
        lambda: side.conn.run(
            f'sleep 1; [ "$TOKEN" = {SECRET} ] && echo same',
            env={"TOKEN": SECRET},
            timeout=20,
            spool=key,
        ),
        SECRET,
    )
    assert res.ok and res.stdout == "same\n", res
    assert scans > 5
    assert hits == 0


def test_a_command_over_128_kib_runs(side: Side) -> None:
    """A 300 KiB command runs (no 'Argument list too long': it is not in an argv)."""
    blob = "A" * (300 * 1024)
    res = side.conn.run(f"x='{blob}'; echo ${{#x}}", timeout=30, spool=side.key())
    assert (res.rc, res.stdout) == (0, f"{len(blob)}\n"), res.output_tail


def _wait_for(path: Path, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_an_attempt_leaves_pid_out_err_rc_until_drx_removes_it(side: Side) -> None:
    """An attempt leaves pid, out, err and rc (0700, files 0600), success or not: only drx,
    once the outcome is journaled, removes it (with its empty parents)."""
    bad = side.key()
    res = side.conn.run("echo out; echo err >&2; exit 3", timeout=20, spool=bad)
    assert (res.rc, res.stdout, res.stderr) == (3, "out\n", "err\n")
    d = side.dir(bad)
    assert sorted(p.name for p in d.iterdir()) == ["err", "out", "pid", "rc"]
    assert (d.stat().st_mode & 0o777) == 0o700
    assert {p.stat().st_mode & 0o777 for p in d.iterdir()} == {0o600}
    assert (d / "rc").read_text() == "3\n" and (d / "out").read_text() == "out\n"
    pid, pgid = (d / "pid").read_text().split()
    assert int(pid) > 0 and int(pgid) > 0
    good = side.key()
    res = side.conn.run("echo fine", timeout=20, spool=good)
    assert res.ok and res.stdout == "fine\n"
    assert (side.dir(good) / "rc").read_text() == "0\n"
    dirs = [words(k, side.spec) for k in (bad, good)]
    assert side.conn.run(cleanup_program(dirs), timeout=20).ok
    for key in (bad, good):
        assert not (side.root / key.run_id).exists()


def test_one_cleanup_removes_many_attempts_and_keeps_what_is_not_spent(side: Side) -> None:
    """Attempts of several steps of one run go in one clean-up (one rm, one rmdir): their
    directories and the parents they leave empty go; a step directory that still holds an
    attempt not cleaned up stays, with that attempt."""
    from dataclasses import replace

    first = side.key(step="a")
    keys = [
        first,
        replace(first, attempt="2"),
        replace(first, step="b"),
        replace(first, step="c", attempt="3"),
    ]
    kept = replace(first, step="c", attempt="1")
    for key in [*keys, kept]:
        assert side.conn.run("true", timeout=20, spool=key).ok
    assert side.conn.run(cleanup_program([words(k, side.spec) for k in keys]), timeout=20).ok
    run_dir = side.root / first.run_id
    assert sorted(p.name for p in run_dir.iterdir()) == ["c"]
    assert (side.dir(kept) / "rc").read_text() == "0\n"
    assert not (side.dir(keys[3])).exists()
    assert side.conn.run(cleanup_program([words(kept, side.spec)]), timeout=20).ok
    assert not run_dir.exists()


def test_output_streams_while_the_command_runs(side: Side, tmp_path: Path) -> None:
    """The log shows the first line while the command is still running."""
    log = tmp_path / "log"
    key = side.key()
    t = threading.Thread(
        target=side.conn.run,
        args=("echo first; sleep 2; echo second",),
        kwargs={"timeout": 20, "spool": key, "log_path": log},
    )
    t.start()
    try:
        _wait_for(log, 10)
        end = time.monotonic() + 10
        while "first" not in log.read_text():
            assert time.monotonic() < end
            time.sleep(0.05)
        assert "second" not in log.read_text()
    finally:
        t.join()
    assert log.read_text() == "first\nsecond\n"


def _alive_in_group(pgid: int) -> list[int]:
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            alive.append(int(entry))
    return alive


def test_a_timeout_kills_the_whole_group(side: Side) -> None:
    """On timeout the spooled command and every child in its process group are gone."""
    key = side.key()
    res = side.conn.run("sleep 60 & sleep 60; echo never", timeout=1, spool=key)
    assert (res.rc, res.error) == (None, "timeout")
    _, pgid = (side.dir(key) / "pid").read_text().split()
    end = time.monotonic() + 10
    while _alive_in_group(int(pgid)):
        assert time.monotonic() < end, _alive_in_group(int(pgid))
        time.sleep(0.05)
    assert not (side.dir(key) / "rc").exists()


_CHILD = """
import json, sys
from orchestrator.transport.base import HostSpec
from orchestrator.transport.spool import SpoolKey, cleanup_program, words
spec, key, root, starter = json.loads(sys.argv[1])
spec = HostSpec(**spec)
key = SpoolKey(root=None if root is None else __import__("pathlib").Path(root), **key)
if spec.transport == "local":
    from orchestrator.transport.local import LocalTransport
    conn = LocalTransport().connect(spec)
else:
    from orchestrator.transport.ssh import SSHTransport
    conn = SSHTransport(starter=starter).connect(spec)
    assert conn.start_spooling(10) == starter
print("connected", flush=True)
conn.run("sleep 2; echo done; exit 4", timeout=30, spool=key)
"""


def test_the_command_outlives_its_controller(side: Side) -> None:
    """drx SIGKILLed while a spooled command runs: the command runs on to its end and the
    spool holds its rc and its output."""
    key = side.key()
    fields = {k: v for k, v in asdict(key).items() if k != "root"}
    root = None if key.root is None else str(key.root)
    arg = json.dumps([asdict(side.spec), fields, root, side.starter])
    child = subprocess.Popen([sys.executable, "-c", _CHILD, arg], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "connected\n"
        _wait_for(side.dir(key) / "pid", 20)
        time.sleep(0.3)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        _wait_for(side.dir(key) / "rc", 20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    d = side.dir(key)
    assert (d / "rc").read_text() == "4\n"
    assert (d / "out").read_text() == "done\n"


def _host(spec: HostSpec) -> Host:
    return Host(name=spec.name, site="s", address=spec.address, roles=(), vars={}, spec=spec)


@pytest.mark.sshd
def test_preflight_refuses_an_unsafe_spool_directory(lab: Lab, lab_hosts: Any) -> None:
    """A spool directory writable by others, owned by another user, or a symlink is refused
    for that host at the pre-flight, with the reason; nothing is created through it."""
    host = lab_hosts(1)[0]
    base = Path(f"/tmp/drx-spool-test-{secrets.token_hex(4)}")
    try:
        spec = lab.host_spec(host.name)
        with SSHTransport().connect(spec) as c:
            assert c.run(
                f"mkdir -p {base}/open/spool {base}/real && chmod 777 {base}/open/spool"
            ).ok
            assert c.run(f"ln -s {base}/real {base}/link").ok
        os.makedirs(base / "theirs" / "spool", mode=0o700)  # root's
        cases = {
            "open": "writable by group or others",
            "theirs": "owned by uid 0",
            "link": "is a symlink",
        }
        for name, why in cases.items():
            where = f"{base}/{name}/spool" if name != "link" else f"{base}/link"
            h = _host(lab.host_spec(host.name, spool_dir=where))
            with pytest.raises(SpoolRefused, match=why):
                prove(SSHTransport(), h)
        assert not any((base / "real").iterdir())
        prove(
            SSHTransport(), _host(lab.host_spec(host.name, spool_dir=f"{base}/new/spool"))
        ).close()
        assert (base / "new" / "spool").is_dir()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_spool_that_cannot_be_made_fails_the_command(side: Side, tmp_path: Path) -> None:
    """When the spool directory cannot be created the command does not run and fails."""
    if side.kind == "ssh":
        spec = HostSpec(**{**asdict(side.spec), "spool_dir": "/proc/drx-no"})
        ssh = SSHTransport(starter=side.starter).connect(spec)
        assert ssh.start_spooling(10) == side.starter
        conn: Connection = ssh
    else:
        conn = side.conn
    key = SpoolKey("r", "s", "h", "1", Path("/proc/drx-no"))
    try:
        res = conn.run("touch should-not", timeout=20, spool=key)
    finally:
        if conn is not side.conn:
            conn.close()
    assert res.rc == 125 and not res.ok


@pytest.mark.parametrize("world", ["local", "ssh"], indirect=True)
def test_a_run_removes_its_spent_spools_and_keeps_a_failure(world: Any, capsys: Any) -> None:
    """At the end of a run the spools of its successful attempts (and its checks' polls) are
    gone, empty parents too; the failed attempt's spool stays, with its rc and output."""
    world.write_runbook(
        """
        name: spent
        steps:
          - {id: ok, hosts: db@target, run: 'echo fine', undo: 'true'}
          - {id: poll, kind: check, hosts: db@target, run: 'exit 0', needs: [ok]}
          - {id: bad, hosts: db@target, run: 'echo broken; exit 7', undo: 'true', needs: [poll]}
        """
    )
    code, _ = world.run(capsys, "failover", "site-b")
    assert code == 1
    run_id = world.summary()["run_id"]
    if world.transport == "local":
        root = world.state / "spool" / run_id
    else:
        root = Path(pwd.getpwnam("drxlab").pw_dir) / ".drx" / "spool" / run_id
    host = "db-b"  # the inventory name (the lab host behind it may be shared-N)

    def left() -> list[str]:
        while True:
            try:
                return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
            except FileNotFoundError:  # removed while walked
                time.sleep(0.01)

    try:
        # over SSH drx does not wait for the removal (the starter or a command makes it after
        # drx has gone): it is done within a few seconds
        deadline = time.monotonic() + 10
        while world.transport == "ssh" and len(left()) > 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left() == [
            "bad",
            f"bad/{host}",
            f"bad/{host}/1",
            f"bad/{host}/1/err",
            f"bad/{host}/1/out",
            f"bad/{host}/1/pid",
            f"bad/{host}/1/rc",
        ]
        assert (root / f"bad/{host}/1/out").read_text() == "broken\n"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_spooled_output_arrives_byte_for_byte(side: Side) -> None:
    """Streamed through the spool, stdout and stderr arrive exactly: leading blanks,
    backslashes, a last line without newline, and more lines than are copied without cat."""
    command = (
        "printf '%s\\n' '  lead \\ back'; seq 1 100; printf 'no newline'; "
        "printf 'e1\\n  e2' >&2; sleep 0.3; echo late"
    )
    res = side.conn.run(command, timeout=20, spool=side.key())
    numbers = "".join(f"{i}\n" for i in range(1, 101))
    assert res.rc == 0
    assert res.stdout == "  lead \\ back\n" + numbers + "no newlinelate\n"
    assert res.stderr == "e1\n  e2"


def test_the_command_keeps_the_default_sigpipe(side: Side) -> None:
    """The wrapper ignores SIGPIPE (to outlive drx), the command does not: ``yes | head`` ends
    quietly, with no 'Broken pipe' from ``yes``."""
    key = side.key()
    res = side.conn.run("yes | head -n 1", timeout=20, spool=key)
    assert res.rc == 0
    assert (side.dir(key) / "out").read_text() == "y\n"
    assert (side.dir(key) / "err").read_text() == ""


def test_a_plain_program_call_is_the_runner_itself(side: Side) -> None:
    """A spooled command of plain words is exec'ed by the runner (no fork of its own): its pid
    is the runner's pid in the spool's pid file; a command with shell syntax is not."""
    key = side.key()
    assert side.conn.run("cat /proc/self/stat", timeout=20, spool=key).rc == 0
    runner = (side.dir(key) / "pid").read_text().split()[0]
    assert (side.dir(key) / "out").read_text().split()[0] == runner
    key = side.key(attempt="2")
    assert side.conn.run("cat /proc/self/stat; true", timeout=20, spool=key).rc == 0
    runner = (side.dir(key) / "pid").read_text().split()[0]
    assert (side.dir(key) / "out").read_text().split()[3] == runner


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every lab user can write (pytest's own are 0700)."""
    from tests.drill import world_dir

    path = world_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_fenced_run_starts_nothing_and_the_fence_lists_what_had_started(
    side: Side, shared: Path
) -> None:
    """Fencing a run (what a controller taking it over does first) lists the attempts that
    had started on the host — ended (rc), still running (live), or started and lost — and
    not those never claimed (a pre-created directory) nor a check's polls; after it, no
    command of that run starts, through the wrapper or the starter: it leaves ``fenced`` and
    fails with the spool's rc, its command unrun."""
    from dataclasses import replace

    from orchestrator.record.events import HostStarted
    from orchestrator.run.recover import Found, Recovery, fence
    from orchestrator.transport.spool import SPOOL_FAILED_RC

    ended = side.key(step="ended")
    live = replace(ended, step="live")
    poll = replace(ended, step="poll", attempt="1.2")
    lost = replace(ended, step="lost")
    unclaimed = replace(ended, step="never")
    nested = replace(ended, step="site/db/deep")  # a nested site plan's step
    unspawned = replace(ended, step="unspawned")
    assert side.conn.run("exit 3", timeout=20, spool=ended).rc == 3
    assert side.conn.run("exit 4", timeout=20, spool=nested).rc == 4
    assert side.conn.run("true", timeout=20, spool=poll).ok
    runner = threading.Thread(
        target=side.conn.run, args=("sleep 3",), kwargs={"timeout": 20, "spool": live}
    )
    runner.start()
    _wait_for(side.dir(live) / "pid", 20)
    # a wrapper killed with its host: claimed, a pid long gone, no rc
    for key in (lost, unclaimed):
        side.dir(key).mkdir(parents=True)
    (side.dir(lost) / "out").write_text("")
    (side.dir(lost) / "pid").write_text("999999 999999\n")
    # a program the starter could not spawn: rc, and no pid ever
    side.dir(unspawned).mkdir(parents=True)
    (side.dir(unspawned) / "out").write_text("")
    (side.dir(unspawned) / "rc").write_text("127\n")
    uid = side.dir(ended).stat().st_uid
    made = [side.dir(lost), side.dir(unclaimed), side.dir(unspawned)]
    for path in [*made, *side.dir(lost).iterdir(), *side.dir(unspawned).iterdir()]:
        os.chown(path, uid, uid)

    t0 = time.monotonic()
    found = fence(ended.run_id, {side.spec.name: side.conn}, side.root, {})
    assert time.monotonic() - t0 < 3.0  # nothing waited for: every claim had said which
    assert {k: (r.found, r.rc, r.attempt) for k, r in found.items()} == {
        ("ended", side.spec.name): (Found.ENDED, 3, 1),
        ("live", side.spec.name): (Found.LIVE, None, 1),
        ("lost", side.spec.name): (Found.STARTED, None, 1),
        ("site/db/deep", side.spec.name): (Found.ENDED, 4, 1),
        ("unspawned", side.spec.name): (Found.ENDED, 127, 1),
    }
    again = fence(ended.run_id, {side.spec.name: side.conn}, side.root, {}, rerun=True)
    assert again[("lost", side.spec.name)].found is Found.NOTHING
    # what the journal recorded is its own business, unless the probe before the fence found
    # no trace of that attempt (it started in between: the fence's answer is the one to take)
    started = [HostStarted(step=s, host=side.spec.name, attempt=1) for s in ("ended", "live")]
    known = {
        ("ended", side.spec.name): Recovery("ended", side.spec.name, 1, ended),
        ("live", side.spec.name): Recovery("live", side.spec.name, 1, live, found=Found.ENDED),
    }
    merged = fence(ended.run_id, {side.spec.name: side.conn}, side.root, known, started)
    assert merged[("ended", side.spec.name)].found is Found.ENDED
    assert merged[("live", side.spec.name)] is known[("live", side.spec.name)]
    runner.join(20)

    marker = shared / "ran"
    late = replace(ended, step="late")
    assert side.conn.run(f"touch {marker}.ok", timeout=20).ok  # the lab user can write there
    res = side.conn.run(f"touch {marker}", timeout=20, spool=late)
    assert res.rc == SPOOL_FAILED_RC and "another controller has taken this run over" in res.stderr
    assert not marker.exists() and (side.dir(late) / "fenced").exists()
    assert not (side.dir(late) / "pid").exists()
    # the pre-created directory of a first attempt is claimed by nobody after the fence
    res = side.conn.run(f"touch {marker}", timeout=20, spool=unclaimed)
    assert res.rc == SPOOL_FAILED_RC and not marker.exists()


def test_an_attempt_runs_once_however_often_it_is_started(side: Side, shared: Path) -> None:
    """An attempt's directory is claimed by its first start (``out`` made exclusively): the
    same attempt started again runs nothing."""
    from orchestrator.transport.spool import SPOOL_FAILED_RC

    key = side.key()
    log = shared / "log"
    assert side.conn.run(f"echo x >> {log}", timeout=20, spool=key).ok
    assert side.conn.run(f"echo x >> {log}", timeout=20, spool=key).rc == SPOOL_FAILED_RC
    assert log.read_text() == "x\n"
