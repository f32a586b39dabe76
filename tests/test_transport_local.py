"""The local transport, and the output handling (log, redaction, tails) all transports share."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from orchestrator.transport.base import (
    MAX_PARTIAL_LINE,
    STDOUT_KEEP_BYTES,
    TAIL_BYTES,
    CancelToken,
    HostSpec,
    OutputCollector,
    shell_command,
)
from orchestrator.transport.local import LocalConnection, LocalTransport


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """The host's state directory (exported as DRX_HOST_DIR)."""
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def conn(state: Path) -> LocalConnection:
    """A local connection for a host with DRX_HOST_DIR in its env."""
    spec = HostSpec(
        name="control", address="localhost", transport="local", env={"DRX_HOST_DIR": str(state)}
    )
    return LocalTransport().connect(spec)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_run_returns_rc_stdout_and_tail(conn: LocalConnection) -> None:
    """Exit code, stdout and the interleaved tail come back as printed."""
    r = conn.run("echo out; echo err >&2; exit 5")
    assert (r.rc, r.error, r.stdout) == (5, None, "out\n")
    assert "out\n" in r.output_tail and "err\n" in r.output_tail


def test_env_is_exported_and_run_env_wins(conn: LocalConnection, state: Path) -> None:
    """host.env and run env are exported verbatim; run env overrides host env."""
    value = "a b'c\"d $x\nz"
    r = conn.run('printf "%s|%s" "$DRX_HOST_DIR" "$V"', env={"V": value})
    assert r.stdout == f"{state}|{value}"
    assert conn.run('printf "%s" "$DRX_HOST_DIR"', env={"DRX_HOST_DIR": "o"}).stdout == "o"


def test_runs_in_its_own_session(conn: LocalConnection) -> None:
    """Commands lead a session of their own, so a Ctrl-C to drx's group does not reach them."""
    r = conn.run("echo $$; cut -d' ' -f6 /proc/$$/stat")
    pid, sid = (int(x) for x in r.stdout.split())
    assert pid == sid != os.getsid(0)


def test_stdin_is_closed(conn: LocalConnection) -> None:
    """A command reading stdin sees end-of-file."""
    assert conn.run("cat; echo done", timeout=5).stdout == "done\n"


def test_signal_death_is_reported_like_a_shell(conn: LocalConnection) -> None:
    """A command killed by signal N has rc 128+N, as a shell would report it."""
    assert conn.run("kill -KILL $$").rc == 128 + 9


def test_sudo_wraps_command_and_keeps_env(
    conn: LocalConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sudo=True runs ``sudo -n sh -c ...`` with the exports inside (sudo resets the env)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sudo"
    # A stand-in sudo: insists on -n and, like the real one, starts from an empty environment.
    fake.write_text('#!/bin/sh\n[ "$1" = "-n" ] || exit 99\nshift\nexec env -i FAKE_SUDO=1 "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    r = conn.run('printf "%s %s" "$FAKE_SUDO" "$V"', env={"V": "kept"}, sudo=True)
    assert (r.rc, r.stdout) == (0, "1 kept")


def test_sudo_naming_a_user_runs_as_that_user(
    conn: LocalConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sudo="postgres" runs ``sudo -n -u postgres sh -c ...``: the user goes to sudo's -u."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sudo"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = "-n" ] && [ "$2" = "-u" ] || exit 99\nuser=$3; shift 3\n'
        'exec env -i AS_USER="$user" "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    r = conn.run('printf "%s %s" "$AS_USER" "$V"', env={"V": "kept"}, sudo="postgres")
    assert (r.rc, r.stdout) == (0, "postgres kept")


def test_sudo_unavailable_is_a_failing_command(
    conn: LocalConnection, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a usable sudo the command fails with rc != 0, it does not raise."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no sudo here
    r = conn.run("true", sudo=True)
    assert r.error is None and r.rc not in (0, None)


TREE = (
    'echo $$ > "$DRX_HOST_DIR/pids"; (sleep 1; touch "$DRX_HOST_DIR/child") & '
    'echo $! >> "$DRX_HOST_DIR/pids"; touch "$DRX_HOST_DIR/started"; '
    'sleep 1; touch "$DRX_HOST_DIR/parent"'
)


def _assert_tree_dead(state: Path) -> None:
    pids = [int(p) for p in (state / "pids").read_text().split()]
    assert len(pids) == 2 and not any(_alive(p) for p in pids)
    time.sleep(1.3)  # past the moment either process would have created its file
    assert not (state / "child").exists() and not (state / "parent").exists()


def test_timeout_kills_the_process_group(conn: LocalConnection, state: Path) -> None:
    """On timeout the command and its background child are killed; error "timeout"."""
    r = conn.run(TREE, timeout=0.3)
    assert (r.rc, r.error) == (None, "timeout")
    _assert_tree_dead(state)


def test_timeout_stops_a_command_flooding_output(conn: LocalConnection, state: Path) -> None:
    """A command printing without pause still times out and is killed."""
    r = conn.run('echo $$ > "$DRX_HOST_DIR/pid"; exec yes', timeout=0.3)
    assert (r.rc, r.error) == (None, "timeout")
    assert "y\ny\ny\n" in r.output_tail
    assert not _alive(int((state / "pid").read_text()))


def test_cancel_kills_the_process_group(conn: LocalConnection, state: Path) -> None:
    """Setting the CancelToken kills the command tree; error "cancelled"."""
    token = CancelToken()
    results = []
    worker = threading.Thread(target=lambda: results.append(conn.run(TREE, cancel=token)))
    worker.start()
    deadline = time.monotonic() + 5
    while not (state / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    token.set()
    worker.join(10)
    assert (results[0].rc, results[0].error) == (None, "cancelled")
    _assert_tree_dead(state)


def test_cancelled_before_start_runs_nothing(conn: LocalConnection, state: Path) -> None:
    """A run whose token is already set does not start the command."""
    token = CancelToken()
    token.set()
    r = conn.run('touch "$DRX_HOST_DIR/never"', cancel=token)
    assert r.error == "cancelled" and not (state / "never").exists()


def test_large_output_streams_to_log_with_bounded_tails(
    conn: LocalConnection, tmp_path: Path
) -> None:
    """20 MB of output is in the log in full; the result keeps only the bounded tails."""
    log = tmp_path / "logs" / "big.log"
    size = 20 * 1024 * 1024
    r = conn.run(f"yes abc | head -c {size}; echo END", log_path=log)
    assert r.ok and log.stat().st_size == size + 4
    assert len(r.stdout) == STDOUT_KEEP_BYTES and len(r.output_tail) == TAIL_BYTES
    assert r.output_tail.endswith("abc\nabc\nEND\n")


def test_redaction_across_reads(conn: LocalConnection, tmp_path: Path) -> None:
    """A secret written in two pieces is redacted in log, stdout and tail."""
    log = tmp_path / "log"
    r = conn.run(
        "printf 'pw=hun'; sleep 0.2; printf 'ter2 end\\n'",
        log_path=log,
        redact=lambda s: s.replace("hunter2", "***"),
    )
    for text in (log.read_text(), r.stdout, r.output_tail):
        assert "hunter2" not in text and "pw=*** end" in text


# --- OutputCollector and shell_command ------------------------------------------------------


def test_collector_redacts_secret_split_at_any_byte(tmp_path: Path) -> None:
    """Wherever a read boundary falls inside a secret, log and tails are redacted."""
    data = b"first line\nthe secret=s3cr3t-value here\nlast"
    for cut in range(1, len(data)):
        log = tmp_path / f"log{cut}"
        c = OutputCollector(log, lambda s: s.replace("s3cr3t-value", "***"))
        c.feed("stdout", data[:cut])
        c.feed("stdout", data[cut:])
        c.close()
        expected = "first line\nthe secret=*** here\nlast"
        assert log.read_text() == expected and c.stdout == expected and c.tail == expected


def test_collector_keeps_utf8_split_across_reads() -> None:
    """A multi-byte character split between two reads is decoded intact."""
    c = OutputCollector()
    data = "héllo ✓\n".encode()
    c.feed("stdout", data[:2])
    c.feed("stdout", data[2:])
    c.close()
    assert c.stdout == "héllo ✓\n"


def test_collector_bounds_memory_for_an_endless_line() -> None:
    """A huge line without newline is flushed in pieces: the pending buffer stays bounded."""
    c = OutputCollector()
    chunk = b"x" * 65536
    for _ in range(40):  # 2.5 MB, no newline
        c.feed("stdout", chunk)
        assert len(c._pending["stdout"]) <= MAX_PARTIAL_LINE + len(chunk)
    c.close()
    assert len(c.stdout) == STDOUT_KEEP_BYTES and set(c.stdout) == {"x"}


def test_collector_tail_interleaves_streams() -> None:
    """The tail holds stdout and stderr lines in the order they were emitted."""
    c = OutputCollector()
    c.feed("stdout", b"a\n")
    c.feed("stderr", b"b\n")
    c.feed("stdout", b"c\n")
    c.close()
    assert (c.tail, c.stdout) == ("a\nb\nc\n", "a\nc\n")


def test_shell_command_quotes_and_sudo() -> None:
    """Exports are shell-quoted and go inside the sudo shell; bad names are refused."""
    assert shell_command("echo", {"A": "x y"}, False) == "export A='x y'\necho"
    assert shell_command("echo", {"A": "1"}, True) == "exec sudo -n sh -c 'export A=1\necho'"
    with pytest.raises(ValueError):
        shell_command("echo", {"1A": "x"}, False)
