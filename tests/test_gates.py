"""Manual gates at a real terminal (a pty): the operator answers the prompt, and Ctrl-C while
the prompt waits cancels the run instead of hanging on the terminal."""

from __future__ import annotations

import contextlib
import getpass
import os
import pty
import select
import shutil
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from tests.drill import World, world_dir

RUNBOOK = """
    name: gated
    steps:
      - {id: prep, hosts: db@target, run: 'true', undo: 'true'}
      - {id: approve, kind: manual, prompt: "Proceed to {{ target }}?", needs: [prep]}
      - {id: after, hosts: db@target, run: 'touch "$DRX_HOST_DIR/after"', needs: [approve], undo: 'true'}
"""


@pytest.fixture
def local_world() -> Iterator[World]:
    root = world_dir()
    w = World(root, "local")
    w.write_inventory()
    w.write_runbook(RUNBOOK)
    yield w
    shutil.rmtree(root, ignore_errors=True)


def _spawn_on_pty(world: World) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: drx on the pty, as an operator would run it
        os.environ["TERM"] = "xterm"
        argv = [sys.executable, "-m", "orchestrator.cli", "failover", "site-b", *world.args()]
        os.execv(sys.executable, argv)
    return pid, fd


def _read_until(fd: int, text: str, timeout: float = 15.0) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        assert time.monotonic() < deadline, f"never saw {text!r} in {seen[-800:]!r}"
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen.decode(errors="replace")


def _wait(pid: int, fd: int) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with_output = select.select([fd], [], [], 0.1)[0]
        if with_output:
            with contextlib.suppress(OSError):
                os.read(fd, 65536)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            os.close(fd)
            return os.waitstatus_to_exitcode(status)
    raise AssertionError("drx did not end")


def test_operator_approves_a_gate_at_the_terminal(local_world: World) -> None:
    """At a terminal the gate shows its rendered prompt; 'y COMMENT' approves it, and the comment
    is recorded with the approver as user@host."""
    pid, fd = _spawn_on_pty(local_world)
    _read_until(fd, "Proceed to site-b?")
    os.write(fd, b"y checked with the DBA\r")
    assert _wait(pid, fd) == 0
    gate = local_world.step(local_world.summary(), "approve")
    assert gate["status"] == "succeeded"
    assert gate["approved_by"] == f"{getpass.getuser()}@{socket.gethostname()}"
    assert gate["approved_via"] == "terminal"
    assert gate["approval_comment"] == "checked with the DBA"
    assert local_world.host_file("db-b", "after").exists()


def test_ctrl_c_at_a_waiting_gate_cancels_the_run(local_world: World) -> None:
    """Ctrl-C while the prompt waits: the gate is cancelled, nothing after it runs, exit 130."""
    pid, fd = _spawn_on_pty(local_world)
    _read_until(fd, "Proceed to site-b?")
    os.write(fd, b"\x03")
    assert _wait(pid, fd) == 130
    summary = local_world.summary()
    assert summary["status"] == "cancelled"
    assert local_world.step(summary, "approve")["status"] == "cancelled"
    assert local_world.step(summary, "after")["status"] == "cancelled"
    assert not local_world.host_file("db-b", "after").exists()


def test_drx_approve_answers_a_gate_the_terminal_is_asking(local_world: World) -> None:
    """The first answer wins: while the terminal asks, drx approve from another process
    answers the gate; the terminal stops asking (a late 'n' there changes nothing) and the run
    goes on, recorded as approved via drx approve."""
    import subprocess

    pid, fd = _spawn_on_pty(local_world)
    _read_until(fd, "Proceed to site-b?")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "approve",
            "latest",
            "approve",
            "--comment",
            "from the bridge",
            "--state-dir",
            str(local_world.state),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    os.write(fd, b"n\r")  # too late: the gate was answered
    assert _wait(pid, fd) == 0
    gate = local_world.step(local_world.summary(), "approve")
    assert gate["status"] == "succeeded" and gate["approved_via"] == "drx approve"
    assert gate["approval_comment"] == "from the bridge"
    assert local_world.host_file("db-b", "after").exists()
