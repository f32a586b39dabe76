"""The fake transport used by scheduler tests."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator.errors import AuthenticationFailed, HostKeyError, HostUnreachable, TransportError
from orchestrator.transport.base import CancelToken, HostSpec
from orchestrator.transport.fake import FakeReply, FakeTransport


def _spec(name: str = "db-a", **env: str) -> HostSpec:
    return HostSpec(name=name, address="10.0.0.1", env=env)


def test_default_handler_succeeds_and_records() -> None:
    """Without a handler every command exits 0, and each run is recorded."""
    t = FakeTransport()
    r = t.connect(_spec()).run("echo hi")
    assert r.ok and r.stdout == ""
    assert [(c.host, c.command, c.result.rc) for c in t.calls] == [("db-a", "echo hi", 0)]


def test_handler_int_and_reply_shape_the_result(tmp_path: Path) -> None:
    """An int is the rc; a FakeReply gives rc and output, which go through log and redaction."""

    def handler(host: HostSpec, command: str) -> FakeReply | int:
        if command == "fail":
            return 3
        return FakeReply(rc=0, stdout="token=s3cret\n", stderr="warn\n")

    conn = FakeTransport(handler).connect(_spec())
    assert conn.run("fail").rc == 3
    log = tmp_path / "x" / "log"
    r = conn.run("show", log_path=log, redact=lambda s: s.replace("s3cret", "***"))
    assert (r.rc, r.stdout) == (0, "token=***\n")
    assert r.output_tail == "token=***\nwarn\n" == log.read_text()


def test_records_merged_env_sudo_and_timeout() -> None:
    """Calls record the merged env (run env over host env), sudo and timeout."""
    t = FakeTransport()
    t.connect(_spec(A="1", B="2")).run("x", env={"B": "3"}, sudo=True, timeout=4.0)
    call = t.calls[0]
    assert (dict(call.env), call.sudo, call.timeout) == ({"A": "1", "B": "3"}, True, 4.0)


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("unreachable", HostUnreachable),
        ("auth_failing", AuthenticationFailed),
        ("bad_host_key", HostKeyError),
    ],
)
def test_connect_failures_per_host(option: str, error: type[Exception]) -> None:
    """Hosts named in unreachable/auth_failing/bad_host_key fail to connect accordingly;
    other hosts connect, and every attempt is recorded."""
    t = FakeTransport(**{option: {"db-b"}})
    with pytest.raises(error):
        t.connect(_spec("db-b"))
    t.connect(_spec("db-a"))
    assert t.connects == ["db-b", "db-a"]


def test_failures_can_be_switched_on_later() -> None:
    """The failure sets are live: a host can become unreachable during a test."""
    t = FakeTransport()
    t.connect(_spec())
    t.unreachable.add("db-a")
    with pytest.raises(HostUnreachable):
        t.connect(_spec())


def test_delay_longer_than_timeout_times_out() -> None:
    """A reply slower than the timeout ends at the timeout with error "timeout" and no rc."""
    t = FakeTransport(lambda h, c: FakeReply(rc=0, stdout="late\n", delay_s=5))
    r = t.connect(_spec()).run("slow", timeout=0.05)
    assert (r.rc, r.error, r.stdout) == (None, "timeout", "")
    assert r.duration_s < 5


def test_cancel_interrupts_a_delay() -> None:
    """Setting the CancelToken ends a delayed reply with error "cancelled"."""
    t = FakeTransport(lambda h, c: FakeReply(delay_s=5))
    token = CancelToken()
    threading.Timer(0.05, token.set).start()
    r = t.connect(_spec()).run("slow", cancel=token)
    assert (r.rc, r.error) == (None, "cancelled") and r.duration_s < 5


def test_disconnect_reply() -> None:
    """FakeReply(disconnect=True) is a connection lost mid-command."""
    t = FakeTransport(lambda h, c: FakeReply(disconnect=True))
    r = t.connect(_spec()).run("x")
    assert (r.rc, r.error) == (None, "disconnected")


def test_closed_connection_raises() -> None:
    """run after close raises TransportError, like a lost SSH connection."""
    conn = FakeTransport().connect(_spec())
    conn.close()
    with pytest.raises(TransportError):
        conn.run("x")


def test_parallel_calls_are_recorded_with_overlap() -> None:
    """Concurrent runs are all recorded, with start/end times showing that they overlapped."""
    t = FakeTransport(lambda h, c: FakeReply(delay_s=0.2))
    conns = [t.connect(_spec(f"h{i}")) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda c: c.run("work"), conns))
    calls = t.calls
    assert sorted(c.host for c in calls) == [f"h{i}" for i in range(6)]
    assert max(c.started for c in calls) < min(c.ended for c in calls)
    assert t.commands("h3") == ["work"]
