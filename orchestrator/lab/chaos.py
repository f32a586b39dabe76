"""A fault campaign: randomized schedules of faults during drills with shared state in etcd.

Two controllers (each a real ``drx`` process with its own local directory) share one etcd
prefix of a 3-member lab cluster; the runbook's commands run on four real sshd hosts
(``db-a``/``app-a`` at site-a, ``db-b``/``app-b`` at site-b). Each schedule runs one drill in
the direction the state demands (a failover to site-b when site-a is active, else a failback)
from one controller, injects one fault at a random moment of it, and then recovers from the
other controller (``drx resume``, with ``--rerun-inflight`` only when drx refuses for an
in-flight step whose outcome it cannot know) until the drill has succeeded. Faults:

- ``holder-sigkill``: the lock holder is SIGKILLed; recovery waits for its lease to expire;
- ``holder-sigstop``: the holder is SIGSTOPped; once the other controller holds the lock the
  holder gets SIGCONT (it must start nothing more);
- ``etcd-leader`` / ``etcd-member``: an etcd member (the leader, or a follower) is SIGKILLed and
  restarted after a moment;
- ``sshd``: a host's sshd and every session it serves are killed, and restarted after a moment;
- and in 40 % of the recoveries a second fault: the recovering controller is SIGKILLed at a
  random moment of its recovery, and the first controller recovers from there.

Every command of the runbook appends ``begin``/``end`` lines to ``chaos.log`` on its host: run
id, step, attempt (from the spool), the invoking controller (its holder tag) and the host's
clock. After each schedule these host-side lines are checked against the shared journal:

1. no command ran to its end twice unless the earlier one was recorded as failed or unknown;
2. after a takeover, the earlier holder starts nothing (no ``begin`` of an older holder after
   the newer holder's first ``begin``);
3. every host attempt the journal records as succeeded ran on its host, and none it took from
   the spool as failed ran to its end;
4. the active site in the store is the one the journal's last succeeded run says, and the one
   the hosts were switched to;
5. every command a host shows ran to its end is in the journal (its run, or the run that
   re-attached to it or read its outcome from the spool).

Schedule K of seed S draws from ``random.Random(f"{S}:{K}")``: ``--seed S --first K
--schedules 1`` replays it (against a fresh lab, so the direction may differ). Everything started
— etcd members, sshd hosts, drx processes — is stopped by pid at the end, also on failure.

CLI::

    python -m orchestrator.lab.chaos --schedules 100 --seed 7
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.lab.etcd import EtcdCluster
from orchestrator.lab.sshd import Lab
from orchestrator.record.etcd_store import EtcdStore
from orchestrator.record.store import open_store
from orchestrator.vocab import Direction, RunStatus, StepStatus

#: the lease of the lock (etcd's smallest)
TTL_S = 2.0
#: seconds one drx command may take before the campaign gives up on it
COMMAND_TIMEOUT_S = 90.0
#: recoveries tried per schedule before it counts as unrecovered
MAX_RECOVERIES = 6
#: the share of recoveries whose first drx is SIGKILLed too (then the first controller
#: recovers from that)
SECOND_FAULT = 0.4
SITES = {"site-a": ["db-a", "app-a"], "site-b": ["db-b", "app-b"]}
HOSTS = [h for names in SITES.values() for h in names]
FAULTS = ("holder-sigkill", "holder-sigstop", "etcd-leader", "etcd-member", "sshd")
LOG = "chaos.log"

#: one line on the host per command start and end: phase, run, step, attempt, holder, host, time
MARK = (
    'echo "{phase} {{{{ run_id }}}} {step} ${{__drx_d##*/}} {{{{ vars.holder }}}} '
    '{{{{ host.name }}}} $(date +%s.%N)" >> "$DRX_HOST_DIR/{log}"'
)


def _command(step: str, extra: str = "") -> str:
    begin = MARK.format(phase="begin", step=step, log=LOG)
    end = MARK.format(phase="end", step=step, log=LOG)
    return f"{begin}; sleep {{{{ vars.pace }}}}; {extra}{end}"


def runbook_text() -> str:
    """The drill: a freeze at the source, a slow sync and a warm-up in parallel, the fence of
    the source, the promotion, and the switch (it writes the active site on app-b)."""
    steps = [
        ("freeze", "app-a", []),
        ("sync", "db-b", ["freeze"]),
        ("warm", "app-b", ["freeze"]),
        ("fence", "db-a", ["sync"]),
        ("promote", "db-b", ["fence"]),
        ("switch", "app-b", ["promote", "warm"]),
    ]
    out: list[dict[str, Any]] = []
    for sid, host, needs in steps:
        run_extra = undo_extra = ""
        if sid == "switch":
            run_extra = 'echo site-b > "$DRX_HOST_DIR/active"; '
            undo_extra = 'echo site-a > "$DRX_HOST_DIR/active"; '
        if sid == "sync":
            run_extra = undo_extra = "sleep {{ vars.pace }}; "
        entry: dict[str, Any] = {
            "id": sid,
            "hosts": host,
            "run": _command(sid, run_extra),
            "undo": _command(f"undo-{sid}", undo_extra),  # a failback journals undo-<id>
            "retries": 2,
            "retry_delay": "500ms",
            "timeout": "30s",
        }
        if needs:
            entry["needs"] = needs
        out.append(entry)
    doc = {"name": "chaos", "rto_target": "5m", "steps": out}
    return yaml.safe_dump(doc, sort_keys=False, width=200)


# -- host-side truth and the journal ------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """One line of a host's chaos.log."""

    phase: str
    run: str
    step: str
    attempt: str
    holder: str
    host: str
    t: float


def parse_marks(text: str) -> list[Mark]:
    marks = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 7:
            continue
        try:
            t = float(parts[6])
        except ValueError:
            continue
        marks.append(Mark(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], t))
    return marks


@dataclass
class Journal:
    """What the shared journal says about one schedule's runs."""

    runs: list[str]
    events: dict[str, list[dict[str, Any]]]
    summaries: dict[str, dict[str, Any] | None]

    def direction(self, run: str) -> str:
        first = self.events[run][0] if self.events[run] else {}
        return str(first.get("direction", ""))

    def host_finished(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (run, e)
            for run in self.runs
            for e in self.events[run]
            if e.get("event") == "host_finished"
        ]


def check(
    journal: Journal,
    marks: list[Mark],
    holders: list[str],
    active: str | None,
    host_active: str | None,
) -> list[str]:
    """The invariants of the module docstring; one sentence per violation."""
    found: list[str] = []
    runs = set(journal.runs)
    finished = journal.host_finished()
    ends = [m for m in marks if m.phase == "end"]
    begins = [m for m in marks if m.phase == "begin"]

    def recorded_not_succeeded(m: Mark) -> bool:
        for run, e in finished:
            if e.get("step") != m.step or e.get("host") != m.host:
                continue
            same = (run == m.run and str(e.get("attempt")) == m.attempt) or (
                e.get("from_run") == m.run
            )
            if same and e.get("status") != StepStatus.SUCCEEDED:
                return True
        return any(
            e.get("event") == "step_finished"
            and e.get("step") == m.step
            and e.get("outcome_unknown")
            for e in journal.events.get(m.run, [])
        )

    # 1. no command ran twice unless retried after a recorded failure
    seen_begin: Counter[tuple[str, str, str, str]] = Counter(
        (m.run, m.step, m.host, m.attempt) for m in begins
    )
    for key, n in seen_begin.items():
        if n > 1:
            found.append(f"attempt {key[3]} of {key[1]} on {key[2]} (run {key[0]}) began {n} times")
    by_step: dict[tuple[str, str, str], list[Mark]] = {}
    for m in ends:
        direction = journal.direction(m.run) if m.run in runs else "?"
        by_step.setdefault((direction, m.step, m.host), []).append(m)
    for (direction, step, host), done in by_step.items():
        done.sort(key=lambda m: m.t)
        for m in done[:-1]:
            if not recorded_not_succeeded(m):
                found.append(
                    f"{direction} step {step} ran {len(done)} times on {host} "
                    f"(run {m.run} attempt {m.attempt} ended and was not recorded as failed)"
                )
    # 2. an older holder starts nothing after a newer holder started
    first_begin: dict[str, float] = {}
    for m in sorted(begins, key=lambda m: m.t):
        first_begin.setdefault(m.holder, m.t)
    for m in begins:
        if m.holder not in holders:
            found.append(f"a command of unknown holder {m.holder!r} began: {m}")
            continue
        later = holders[holders.index(m.holder) + 1 :]
        for h in later:
            if h in first_begin and first_begin[h] < m.t:
                found.append(
                    f"{m.holder} began {m.step} on {m.host} at {m.t:.3f}, after {h} took over "
                    f"(its first command at {first_begin[h]:.3f})"
                )
    # 3. every succeeded host attempt in the journal ran on its host
    for run, e in finished:
        if e.get("status") != StepStatus.SUCCEEDED:
            continue
        origin = str(e.get("from_run") or run)
        ok = any(
            m.run == origin
            and m.step == e.get("step")
            and m.host == e.get("host")
            and (e.get("from_run") or m.attempt == str(e.get("attempt")))
            for m in ends
        )
        if not ok:
            found.append(
                f"the journal of {run} says {e.get('step')} succeeded on {e.get('host')} "
                f"(attempt {e.get('attempt')}), but that command never ended there"
            )
    # ... and no attempt re-attached to is recorded as failed when it ran to its end
    for run, e in finished:
        if e.get("status") == StepStatus.SUCCEEDED or not e.get("reattached"):
            continue
        if any(
            m.run == e.get("from_run") and m.step == e.get("step") and m.host == e.get("host")
            for m in ends
        ):
            found.append(
                f"the journal of {run} says {e.get('step')} failed on {e.get('host')} (taken "
                f"from the spool of {e.get('from_run')}), but that command ran to its end there"
            )
    # 4. the active site is the one the journal says
    final = next(
        (
            journal.summaries[r]
            for r in reversed(journal.runs)
            if (journal.summaries.get(r) or {}).get("status") == RunStatus.SUCCEEDED
        ),
        None,
    )
    if final is not None:
        expected = "site-b" if final.get("direction") == Direction.FAILOVER else "site-a"
        if active != expected:
            found.append(f"the store says site {active} is active, the journal says {expected}")
        if host_active != expected:
            found.append(f"the hosts were switched to {host_active}, the journal says {expected}")
    # 5. nothing a host shows ran is missing from the journal
    for m in ends:
        if m.run not in runs:
            found.append(f"{m.step} ran on {m.host} in run {m.run}, which the journal lacks")
            continue
        known = any(
            e.get("step") == m.step
            and e.get("host") == m.host
            and (
                (run == m.run and str(e.get("attempt")) == m.attempt) or e.get("from_run") == m.run
            )
            for run, e in finished
        )
        if not known:
            found.append(
                f"{m.step} ran to its end on {m.host} (run {m.run} attempt {m.attempt}), "
                "but the journal has no outcome for it"
            )
    return found


# -- the campaign -------------------------------------------------------------------------------


@dataclass
class Controller:
    """One controller: its own local directory, the shared store's URL."""

    name: str
    local: Path
    url: str
    runbook: Path
    inventory: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def argv(self, *args: str) -> list[str]:
        files = ["-r", str(self.runbook), "-i", str(self.inventory)]
        return [
            sys.executable,
            "-m",
            "orchestrator.cli",
            *args,
            *files,
            "--state-dir",
            str(self.local),
            "--state-url",
            self.url,
        ]

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """``drx ARGS`` in its own process group (signals reach drx only)."""
        proc = subprocess.Popen(
            self.argv(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        """Kill every drx this controller started that still runs (by its process group)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                proc.communicate(timeout=10)
        self.procs.clear()


def finish(proc: subprocess.Popen[str], timeout: float = COMMAND_TIMEOUT_S) -> tuple[int, str]:
    """Wait for a spawned drx: its exit code and stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return -9, f"timed out after {timeout:.0f}s\n{err}"
    return proc.returncode, err


def _last_line(text: str) -> str:
    """The line of drx's stderr that says why it failed (else its last line)."""
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith("report: ")]
    why = [ln for ln in lines if "error" in ln or "failed" in ln or "lost" in ln]
    return (why or lines or [""])[-1][:300]


def wait_for(check_fn: Callable[[], bool], timeout: float, pause: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check_fn():
                return True
        time.sleep(pause)
    return False


@dataclass
class Result:
    """One schedule's outcome."""

    index: int
    fault: str
    at_s: float
    injected: bool
    recovery_s: float
    actions: list[str]
    violations: list[str]
    #: host attempts whose outcome a recovery took from the spool: (ended, re-attached)
    from_spool: tuple[int, int] = (0, 0)


@dataclass
class Campaign:
    """The lab (etcd, sshd hosts, two controllers) and the schedules run on it."""

    root: Path
    seed: int
    pace: float = 0.3
    say: Callable[[str], None] = print
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._holders = 0
        #: recoveries SIGKILLed (the second fault of a schedule)
        self._second_faults = 0

    # -- set-up ----------------------------------------------------------------------------------
    def __enter__(self) -> Campaign:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.etcd = EtcdCluster(
            self.root / "etcd", names=("site-a", "site-b", "witness"), first_address=41
        )
        self._stack.callback(self.etcd.stop)
        self.etcd.start()
        self.lab = Lab(self.root / "lab")
        self._stack.callback(self.lab.stop)
        inventory = self.root / "inventory.yaml"
        self.lab.inventory_yaml(SITES, path=inventory)
        self.lab.start()
        for name in HOSTS:
            self.lab.host(name).state_dir.chmod(0o777)
        runbook = self.root / "runbook.yaml"
        runbook.write_text(runbook_text())
        url = self.etcd.url("chaos", ttl=f"{TTL_S:.0f}s")
        self.controllers = [
            Controller(n, self.root / f"controller-{n}", url, runbook, inventory) for n in "ab"
        ]
        for c in self.controllers:
            self._stack.callback(c.stop_all)
        self.store = open_store(self.root / "observer", url)
        assert isinstance(self.store, EtcdStore)
        self._stack.callback(self.store.close)

    # -- one schedule ----------------------------------------------------------------------------
    def holder_tag(self, c: Controller) -> str:
        self._holders += 1
        return f"{c.name}{self._holders}"

    def drill_args(self) -> list[str]:
        active = self.store.read_state().active or "site-a"
        return ["failover", "site-b"] if active == "site-a" else ["failback"]

    def common(self, tag: str) -> list[str]:
        return ["--yes", "--var", f"holder={tag}", "--var", f"pace={self.pace}"]

    def host_marks(self) -> list[Mark]:
        out: list[Mark] = []
        for name in HOSTS:
            path = self.lab.host(name).state_dir / LOG
            if path.exists():
                out.extend(parse_marks(path.read_text()))
        return out

    def run_schedule(self, index: int) -> Result:
        rng = random.Random(f"{self.seed}:{index}")
        fault = rng.choice(FAULTS)
        at_s = round(rng.uniform(0.0, 8 * self.pace), 2)
        driver, other = rng.sample(self.controllers, 2)
        for name in HOSTS:  # the host-side truth of this schedule only
            log = self.lab.host(name).state_dir / LOG
            log.write_text("")
            log.chmod(0o666)  # the lab user appends to it
        before = set(self.store.run_ids())
        self._inflight_refused = False
        holders: list[str] = []
        actions: list[str] = []

        drill = self.drill_args()
        tag = self.holder_tag(driver)
        holders.append(tag)
        actions.append(f"{driver.name}: drx {' '.join(drill)}")
        proc = driver.spawn(*drill, *self.common(tag))
        if rng.random() < 0.1:  # during start-up
            at_s = round(at_s / 6, 2)
        else:  # after the run started
            self._wait_new_run(before, proc)
        time.sleep(at_s)
        injected = proc.poll() is None or fault not in ("holder-sigkill", "holder-sigstop")
        t_fault = time.monotonic()
        stopped = False
        restart: Callable[[], None] | None = None
        if injected:
            if fault == "holder-sigkill":
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            elif fault == "holder-sigstop":
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGSTOP)
                stopped = True
            elif fault in ("etcd-leader", "etcd-member"):
                leader = self.etcd.leader()
                victim = leader
                if fault == "etcd-member":
                    victim = rng.choice([n for n in self.etcd.members if n != leader])
                self.etcd.kill(victim)
                actions.append(f"killed etcd {victim}")
                restart = self._later(
                    rng.uniform(0.5, 2.5), lambda: self.etcd.restart(victim, wait=False)
                )
            else:
                host = rng.choice(HOSTS)
                self.lab.kill(host)
                actions.append(f"killed sshd of {host}")
                restart = self._later(rng.uniform(0.2, 1.5), lambda: self._start_host(host))
        try:
            if stopped:
                self._takeover_while_stopped(proc, other, holders, actions)
            else:
                code, _ = finish(proc)
                actions.append(f"{driver.name} exited {code}")
            if restart is not None:
                restart()
            second = rng.uniform(0.0, 6 * self.pace) if rng.random() < SECOND_FAULT else None
            recovered = self._recover(
                other, holders, actions, before, kill_after=second, then=driver
            )
        finally:
            if stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)
            if restart is not None:
                restart()
        recovery_s = time.monotonic() - t_fault
        self.etcd.wait_healthy(list(self.etcd.members))
        journal = self.journal([r for r in self.store.run_ids() if r not in before])
        violations = check(
            journal,
            self.host_marks(),
            holders,
            self.store.read_state().active,
            self._host_active(),
        )
        if not recovered:
            violations.append("not recovered: " + "; ".join(actions[-3:]))
        spooled = [e for _, e in journal.host_finished() if e.get("from_run")]
        reattached = sum(1 for e in spooled if e.get("reattached"))
        return Result(
            index,
            fault,
            at_s,
            injected,
            recovery_s,
            actions,
            violations,
            (len(spooled) - reattached, reattached),
        )

    def _later(self, delay: float, action: Callable[[], None]) -> Callable[[], None]:
        """``action`` in ``delay`` seconds (a timer thread); the result waits for it."""
        timer = threading.Timer(delay, action)
        timer.daemon = True
        timer.start()
        return lambda: timer.join()

    def _start_host(self, name: str) -> None:
        self.lab.start([name])

    def _host_active(self) -> str | None:
        path = self.lab.host("app-b").state_dir / "active"
        return path.read_text().strip() if path.exists() else "site-a"

    def _takeover_while_stopped(
        self,
        proc: subprocess.Popen[str],
        other: Controller,
        holders: list[str],
        actions: list[str],
    ) -> tuple[int, str]:
        """The holder is paused: the other controller takes over once the lease expired, and
        the paused one resumes once the new holder holds the lock."""
        if not wait_for(lambda: self.store.lock_holder() is None, 6 * TTL_S):
            return -1, "the paused holder's lease never expired"
        tag = self.holder_tag(other)
        holders.append(tag)
        args = self._resume_args()
        actions.append(f"{other.name}: drx {' '.join(args)}")
        taking = other.spawn(*args, *self.common(tag))
        wait_for(lambda: self.store.lock_holder() is not None or taking.poll() is not None, 30)
        os.killpg(proc.pid, signal.SIGCONT)
        code, err = finish(proc)
        actions.append(f"paused holder exited {code} after SIGCONT")
        if code != 0:
            actions.append(_last_line(err))
        taken, err = finish(taking)
        actions.append(f"{other.name} exited {taken}")
        if taken != 0:
            actions.append(_last_line(err))
        if taken == 2 and "--rerun-inflight" in err:
            self._inflight_refused = True
        return taken, err

    def _resume_args(self) -> list[str]:
        return ["resume", "--rerun-inflight"] if self._inflight_refused else ["resume"]

    _inflight_refused = False

    def _recover(
        self,
        other: Controller,
        holders: list[str],
        actions: list[str],
        before: set[str],
        *,
        kill_after: float | None = None,
        then: Controller | None = None,
    ) -> bool:
        """Recover from ``other`` until the schedule's drill has succeeded. With ``kill_after``
        the first recovery that starts a run is SIGKILLed that long after its run appears (a
        second fault), and ``then`` recovers from there on."""
        for _ in range(MAX_RECOVERIES):
            if not wait_for(lambda: self.store.lock_holder() is None, 6 * TTL_S):
                continue
            runs = [r for r in self.store.run_ids() if r not in before]
            if runs and self._status(runs[-1]) == RunStatus.SUCCEEDED:
                return True
            args = self._resume_args() if runs else self.drill_args()
            tag = self.holder_tag(other)
            holders.append(tag)
            actions.append(f"{other.name}: drx {' '.join(args)}")
            proc, name = other.spawn(*args, *self.common(tag)), other.name
            if kill_after is not None and then is not None:
                self._wait_new_run(before | set(runs), proc)
                time.sleep(kill_after)
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    actions.append(f"SIGKILLed {name} mid-recovery")
                    self._second_faults += 1
                kill_after, other = None, then
            code, err = finish(proc)
            actions.append(f"{name} exited {code}")
            if code == 2 and "--rerun-inflight" in err:
                self._inflight_refused = True
            elif code != 0:
                actions.append(_last_line(err))
        runs = [r for r in self.store.run_ids() if r not in before]
        return bool(runs) and self._status(runs[-1]) == RunStatus.SUCCEEDED

    def _wait_new_run(self, known: set[str], proc: subprocess.Popen[str]) -> None:
        """Wait until a run not in ``known`` is in the store, or ``proc`` has ended."""
        wait_for(lambda: bool(set(self.store.run_ids()) - known) or proc.poll() is not None, 30)

    def _status(self, run: str) -> str | None:
        """How the journal says ``run`` ended (None: it did not): the journal, not the summary
        written after it, is the record."""
        ended = [e for e in self.store.read_journal(run) if e.get("event") == "run_finished"]
        return str(ended[-1].get("status")) if ended else None

    def journal(self, runs: list[str]) -> Journal:
        events = {r: self.store.read_journal(r) for r in runs}
        summaries: dict[str, dict[str, Any] | None] = {}
        for r in runs:
            ended = [e for e in events[r] if e.get("event") == "run_finished"]
            started = events[r][0] if events[r] else {}
            summaries[r] = (
                {"status": ended[-1].get("status"), "direction": started.get("direction")}
                if ended
                else None
            )
        return Journal(runs, events, summaries)

    # -- the whole campaign ----------------------------------------------------------------------
    def run(self, schedules: int, first: int = 1, max_seconds: float = 3600.0) -> float:
        """Run the schedules (stopping early past ``max_seconds``); the wall time."""
        t0 = time.monotonic()
        for index in range(first, first + schedules):
            if time.monotonic() - t0 > max_seconds:
                self.say(f"chaos: stopped after {max_seconds:.0f}s (--max-seconds)")
                break
            r = self.run_schedule(index)
            self.results.append(r)
            what = r.fault if r.injected else f"{r.fault} (missed: the drill had ended)"
            self.say(
                f"schedule {r.index}: {what} at {r.at_s:.2f}s; recovered in "
                f"{r.recovery_s:.1f}s; {len(r.violations)} violation(s) — "
                + "; ".join(a for a in r.actions if a)
            )
            for v in r.violations:
                self.say(f"  VIOLATION (seed {self.seed}, schedule {r.index}): {v}")
        return time.monotonic() - t0

    def figures(self, wall_s: float) -> str:
        faults = Counter(r.fault for r in self.results if r.injected)
        missed = sum(1 for r in self.results if not r.injected)
        violations = sum(len(r.violations) for r in self.results)
        slowest = max(self.results, key=lambda r: r.recovery_s, default=None)
        kinds = ", ".join(f"{k} {faults.get(k, 0)}" for k in FAULTS)
        kinds += f", recovery-sigkill {self._second_faults}"
        slow = (
            f"{slowest.recovery_s:.1f}s (schedule {slowest.index}, {slowest.fault})"
            if slowest is not None
            else "-"
        )
        ended = sum(r.from_spool[0] for r in self.results)
        reattached = sum(r.from_spool[1] for r in self.results)
        return (
            f"chaos: seed {self.seed}: {len(self.results)} schedules in {wall_s:.0f}s; "
            f"faults injected {sum(faults.values()) + self._second_faults} ({kinds}; "
            f"{missed} missed); "
            f"violations {violations}; slowest recovery {slow}; outcomes from the spool "
            f"{ended} ended + {reattached} re-attached"
        )

    @property
    def violations(self) -> int:
        return sum(len(r.violations) for r in self.results)


@contextlib.contextmanager
def campaign(seed: int, root: Path | None = None, **kwargs: Any) -> Iterator[Campaign]:
    """A started campaign in ``root`` (a fresh temporary directory by default, removed after)."""
    own = root is None
    where = Path(tempfile.mkdtemp(prefix="drx-chaos-")) if root is None else root
    try:
        with Campaign(where, seed, **kwargs) as c:
            yield c
    finally:
        if own:
            shutil.rmtree(where, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.lab.chaos",
        description="Randomized faults during drills over etcd and sshd hosts on loopback.",
    )
    parser.add_argument("--schedules", type=int, default=100, help="how many (default 100)")
    parser.add_argument("--seed", type=int, help="random seed (default: a new one, printed)")
    parser.add_argument("--first", type=int, default=1, help="first schedule's number")
    parser.add_argument(
        "--max-seconds", type=float, default=3600.0, help="stop starting schedules after this"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    print(f"chaos: seed {seed} (replay: --seed {seed})", flush=True)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    with campaign(seed, say=lambda s: print(s, flush=True)) as c:
        wall = c.run(args.schedules, args.first, args.max_seconds)
        print(c.figures(wall), flush=True)
        return 1 if c.violations else 0


if __name__ == "__main__":
    sys.exit(main())
