"""The live view on a real pseudo-terminal (pexpect), read back through a VT100 emulator
(pyte) so that assertions are about what the operator's screen shows: the RTO clock ticks on
while a gate asks, 40 steps fit 80×24 with the running step and the RTO line in sight, carried
steps of a resumed run show as carried, and the header is drawn once."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator

import pexpect
import pyte
import pytest

from orchestrator.run.runner import operator_identity
from tests.drill import World, world_dir


class Terminal:
    """drx on a pty of a given size, its output fed to a terminal emulator."""

    def __init__(self, world: World, argv: list[str], rows: int = 24, cols: int = 80):
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRX_")}
        env.update(TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
        env.pop("NO_COLOR", None)
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "orchestrator.cli", *argv, *world.args()],
            dimensions=(rows, cols),
            env=env,
            cwd=str(world.root),
        )

    def pump(self, seconds: float = 0.1) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.05)
                self.stream.feed(data)
                self.raw += data
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                return
            if time.monotonic() >= deadline:
                return

    @property
    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            if predicate(self.text()):
                return self.text()
            if not self.child.isalive():
                self.pump(0.2)
                if predicate(self.text()):
                    return self.text()
                break
        raise AssertionError(f"screen never matched; it shows:\n{self.text()}")

    def send(self, text: str) -> None:
        self.child.send(text)

    def exit_code(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.child.isalive() and time.monotonic() < deadline:
            self.pump(0.1)
        self.pump(0.1)
        self.child.close()
        assert self.child.exitstatus is not None, "drx did not end"
        return int(self.child.exitstatus)


def rto_seconds(screen: str) -> float:
    """The RTO the view shows, in seconds."""
    match = re.search(r"^RTO ([\d,]+(?:\.\d+)?) s\b", screen, re.MULTILINE)
    assert match, screen
    return float(match.group(1).replace(",", ""))


@pytest.fixture
def world() -> Iterator[World]:
    root = world_dir()
    w = World(root, "local")
    w.write_inventory()
    yield w
    shutil.rmtree(root, ignore_errors=True)


GATED = """
    name: gated
    rto_target: 10m
    steps:
      - {id: prep, hosts: db@target, run: 'true', undo: 'true'}
      - {id: approve, kind: manual, prompt: "Proceed to {{ target }}?", needs: [prep]}
      - {id: after, hosts: db@target, run: 'touch "$DRX_HOST_DIR/after"', needs: [approve], undo: 'true'}
"""


def test_the_rto_clock_ticks_on_while_a_gate_asks(world: World) -> None:
    """While the gate waits, the view keeps redrawing: the RTO shown grows by the time waited;
    an answer that is not y/yes/n/no is refused with a hint, and 'yes' approves."""
    world.write_runbook(GATED)
    term = Terminal(world, ["failover", "site-b"])
    first = rto_seconds(term.wait_for(lambda s: "? approve: Proceed to site-b? [y/n]" in s))
    term.pump(1.5)
    later = rto_seconds(term.text())
    assert later >= first + 1.0, (first, later)
    term.send("maybe\r")
    term.wait_for(lambda s: "answer y, yes, n or no" in s)
    term.send("yes\r")
    assert term.exit_code() == 0, term.text()
    gate = world.step(world.summary(), "approve")
    assert gate["status"] == "succeeded" and gate["approved_via"] == "terminal"
    assert gate["approved_by"] == operator_identity()
    assert world.summary()["manual_wait_s"] >= 1.5
    assert world.host_file("db-b", "after").exists()


def test_no_declines_the_gate_and_says_how_to_undo(world: World) -> None:
    """'n' declines: the gate fails, nothing after it runs, and since 'prep' had changed
    things the run says so and gives the exact failback (and resume) command."""
    world.write_runbook(GATED)
    term = Terminal(world, ["failover", "site-b"])
    term.wait_for(lambda s: "? approve:" in s)
    term.send("n\r")
    assert term.exit_code() == 1
    assert world.step(world.summary(), "approve")["status"] == "failed"
    assert not world.host_file("db-b", "after").exists()
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.raw.decode(errors="replace"))
    out = out.replace("\r\n", "\n")
    run_id = world.summary()["run_id"]
    assert "the run stopped half-way: 1 step(s) had already changed things (prep)" in out
    options = f"-r {world.runbook} -i {world.inventory} --state-dir {world.state}"
    assert f"to undo them:        drx failback --run {run_id} {options}" in out, out[-1500:]
    assert f"drx resume {run_id} {options}" in out


def forty_steps() -> str:
    lines = ["name: many", "rto_target: 10m", "steps:"]
    for i in range(1, 36):
        needs = f", needs: [s{i - 1:02d}]" if i > 1 else ""
        lines.append(f"  - {{id: s{i:02d}, hosts: db@target, run: 'true', undo: 'true'{needs}}}")
    lines.append(
        "  - {id: long-step, hosts: app@target, run: 'sleep 3', undo: 'true', needs: [s35]}"
    )
    for i in range(36, 40):
        lines.append(
            f"  - {{id: s{i:02d}, hosts: db@target, run: 'true', undo: 'true', needs: [long-step]}}"
        )
    return "\n".join(lines) + "\n"


def test_forty_steps_fit_an_80_by_24_terminal(world: World) -> None:
    """40 steps in 80×24: while the long step runs, the screen shows the header, the running
    step, the count of what is folded and the RTO line, all at once (nothing scrolled away)."""
    world.write_runbook(forty_steps())
    term = Terminal(world, ["failover", "site-b", "--yes"])
    screen = term.wait_for(lambda s: re.search(r"▶\s+long-step", s) is not None and "RTO" in s)
    lines = term.lines
    header = next(line for line in lines if line.startswith("drx failover → site-b"))
    assert "35/40 done" in header and "1 running" in header, screen
    assert any("not shown" in line for line in lines), screen
    assert any(line.startswith("RTO ") for line in lines), screen
    assert any(re.match(r"·\s+s36\b", line) for line in lines), screen  # what comes next
    assert term.exit_code() == 0
    assert any(line.startswith("RTO ") for line in term.lines)


FLAKY = """
    name: flaky
    steps:
      - {id: one, hosts: db@target, run: 'true', undo: 'true'}
      - {id: two, hosts: db@target, run: 'true', undo: 'true', needs: [one]}
      - {id: three, hosts: db@target, run: 'test -e "$DRX_HOST_DIR/ok"', undo: 'true', needs: [two]}
      - {id: four, hosts: db@target, run: 'true', undo: 'true', needs: [three]}
"""


def test_a_resumed_run_shows_carried_steps_and_one_header(world: World, capsys) -> None:
    """Resuming a failed run at a terminal: the steps that already succeeded show as carried
    (not pending), the rest run, and the view's header is drawn once."""
    world.write_runbook(FLAKY)
    code, _ = world.run(capsys, "failover", "site-b", "--yes")
    assert code == 1
    world.host_file("db-b", "ok").touch()
    term = Terminal(world, ["resume"], rows=40)
    assert term.exit_code() == 0, term.text()
    lines = term.lines
    assert sum(1 for line in lines if line.startswith("drx failover")) == 1, term.text()
    for step in ("one", "two"):
        row = next(line for line in lines if re.match(rf"^\S\s+{step}\b", line))
        assert row.startswith("↺") and row.rstrip().endswith("carried"), row
    for step in ("three", "four"):
        row = next(line for line in lines if re.match(rf"^\S\s+{step}\b", line))
        assert row.startswith("✔"), row
    summary = json.loads(json.dumps(world.summary()))
    assert world.step(summary, "one")["carried_from"]


def test_a_long_gate_question_still_leaves_the_rto_line_in_sight(world: World) -> None:
    """A gate whose question wraps over several lines, after 35 steps, in 80×24: the header,
    the RTO line and the whole question (up to its [y/n]) are on the screen together."""
    long_prompt = "Move " + "traffic and every queue consumer " * 7 + "to {{ target }}?"
    text = forty_steps().replace(
        "  - {id: long-step, hosts: app@target, run: 'sleep 3', undo: 'true', needs: [s35]}",
        f'  - {{id: long-step, kind: manual, prompt: "{long_prompt}", needs: [s35]}}',
    )
    world.write_runbook(text)
    term = Terminal(world, ["failover", "site-b"])
    screen = term.wait_for(lambda s: "to site-b? [y/n]" in s.replace("\n", ""))
    lines = term.lines
    assert any(line.startswith("drx failover → site-b") for line in lines), screen
    assert any(line.startswith("RTO ") for line in lines), screen
    assert any(line.startswith("? long-step: Move traffic") for line in lines), screen
    term.send("y\r")
    assert term.exit_code() == 0, term.text()
