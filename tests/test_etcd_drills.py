"""Drills with shared state in a real 3-member etcd cluster (TTL 2 s), driven through the real
``drx`` command from two controllers — each its own process with its own local directory, as at
two sites: the lock race, history from the other site, takeover after SIGKILL, a paused holder,
the leader killed, quorum lost, and the holder's whole site lost mid-failover."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from orchestrator.lab.etcd import EtcdCluster
from orchestrator.lab.sshd import Lab, LabHost
from orchestrator.record.etcd_store import EtcdStore
from orchestrator.record.store import open_store
from tests.drill import World, world_dir

TTL = 2.0

#: one, then a slow two (the step a controller dies in), then three; markers count the runs
RUNBOOK = """
name: shared
rto_target: 1m
steps:
  - id: one
    hosts: app-b
    run: echo ran >> "$DRX_HOST_DIR/one"
    undo: echo ran >> "$DRX_HOST_DIR/undo-one"
  - id: two
    hosts: app-b
    run: sleep {{ vars.slow }}; echo ran >> "$DRX_HOST_DIR/two"
    undo: echo ran >> "$DRX_HOST_DIR/undo-two"
    needs: [one]
  - id: three
    hosts: app-b
    run: echo ran >> "$DRX_HOST_DIR/three"
    undo: echo ran >> "$DRX_HOST_DIR/undo-three"
    needs: [two]
"""


class Controller:
    """One drx controller: its own local directory, the shared store's URL."""

    def __init__(self, world: World, url: str, name: str) -> None:
        self.world = world
        self.url = url
        self.local = world.root / f"controller-{name}"

    def argv(self, *args: str) -> list[str]:
        files = ["-r", str(self.world.runbook), "-i", str(self.world.inventory)]
        command = args[0]
        if command in ("runs", "report", "status", "approve", "deny", "abort", "done"):
            files = []
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
        """``drx ARGS`` as a process in its own process group (signals reach drx only: local
        commands run outside it)."""
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "NO_COLOR": "1"},
        )

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "NO_COLOR": "1"},
            check=False,
        )

    def store(self) -> EtcdStore:
        store = open_store(self.local, self.url)
        assert isinstance(store, EtcdStore)
        return store


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    """Wait for a spawned drx; its exit code and stderr (pipes closed)."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def marks(world: World, name: str) -> int:
    path = world.host_file("app-b", name)
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for(check: Callable[[], bool], timeout: float, what: str, pause: float = 0.05) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(pause)
    return time.monotonic() - t0


def running_step(store: EtcdStore, step: str) -> Callable[[], bool]:
    """True once the latest run's journal shows ``step`` started on a host."""

    def check() -> bool:
        ids = store.run_ids()
        if not ids:
            return False
        return any(
            e["event"] == "host_started" and e.get("step") == step
            for e in store.read_journal(ids[-1])
        )

    return check


def crashed(controller: Controller) -> Callable[[], bool]:
    def check() -> bool:
        out = controller.run("status").stdout
        return "crashed" in out and "lock: free" in out

    return check


@pytest.fixture
def shared_world(etcd_prefix: str) -> Iterator[World]:
    root = world_dir()
    w = World(root, "local", sites={"site-a": ["app-a"], "site-b": ["app-b"]})
    w.write_inventory()
    w.write_runbook(RUNBOOK)
    try:
        yield w
    finally:
        shutil.rmtree(root, ignore_errors=True)


def controllers(world: World, cluster: EtcdCluster, prefix: str) -> tuple[Controller, Controller]:
    url = cluster.url(prefix, ttl=f"{TTL:.0f}s")
    return Controller(world, url, "a"), Controller(world, url, "b")


def test_two_controllers_race_exactly_one_runs(
    shared_world: World, etcd: EtcdCluster, etcd_prefix: str
) -> None:
    """Two controllers fail over at the same moment: one runs, the other exits 2 naming the
    holder (user@host pid N run ID) and its lease time left; nothing ran twice."""
    a, b = controllers(shared_world, etcd, etcd_prefix)
    procs = [c.spawn("failover", "site-b", "--yes", "--var", "slow=1.5") for c in (a, b)]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "holds the lock" in refused
    assert " pid " in refused and " run " in refused and "lease" in refused
    assert marks(shared_world, "one") == 1 and marks(shared_world, "three") == 1


def test_history_report_and_failback_from_the_other_controller(
    shared_world: World, etcd: EtcdCluster, etcd_prefix: str
) -> None:
    """A failover run by controller A is listed, reported and failed back by controller B (its
    own local directory), and A then sees B's failback and the active site it set."""
    a, b = controllers(shared_world, etcd, etcd_prefix)
    assert a.run("failover", "site-b", "--yes", "--var", "slow=0").returncode == 0
    runs = json.loads(b.run("runs", "--format", "json").stdout)
    assert [(r["direction"], r["status"]) for r in runs] == [("failover", "succeeded")]
    report = b.run("report", "--format", "json")
    assert report.returncode == 0
    assert json.loads(report.stdout)["run_id"] == runs[0]["run_id"]
    assert "active site: site-b" in b.run("status").stdout
    back = b.run("failback", "--yes", "--var", "slow=0")
    assert back.returncode == 0, back.stderr
    assert marks(shared_world, "undo-one") == 1
    runs = json.loads(a.run("runs", "--format", "json").stdout)
    assert [r["direction"] for r in runs] == ["failover", "failback"]
    assert runs[1]["parent_run"] == runs[0]["run_id"]
    assert "active site: site-a" in a.run("status").stdout
    assert not (b.local / "runs" / runs[0]["run_id"]).exists()  # output stays with A


def test_takeover_after_sigkill_of_the_holder(
    shared_world: World, etcd: EtcdCluster, etcd_prefix: str
) -> None:
    """The holder is SIGKILLed mid-step: while it lives, the other controller reads the run as
    running with the holder's lease; once the lease expired it sees the run crashed (the
    in-flight step on a local host: outcome unknown, its spool is A's) and resumes it with
    --rerun-inflight; what succeeded does not run again."""
    a, b = controllers(shared_world, etcd, etcd_prefix)
    # two sleeps long enough for drx status to start (slowly, on a loaded machine) while it runs
    proc = a.spawn("failover", "site-b", "--yes", "--var", "slow=6")
    wait_for(running_step(b.store(), "two"), 20, "step two to start")
    status = b.run("status").stdout
    assert "running" in status and "lease" in status, status
    os.killpg(proc.pid, signal.SIGKILL)
    finish(proc)
    killed = time.monotonic()
    wait_for(crashed(b), 10, "the run to read as crashed", pause=0.1)
    takeover_s = time.monotonic() - killed
    # local hosts spool under their controller's own state directory: B cannot see A's
    not_inflight = b.run("resume", "--yes", "--var", "slow=0")
    assert not_inflight.returncode == 2 and "two" in not_inflight.stderr
    done = b.run("resume", "--yes", "--rerun-inflight", "--var", "slow=0")
    assert done.returncode == 0, done.stderr
    assert marks(shared_world, "one") == 1  # succeeded before the kill: carried, not re-run
    assert marks(shared_world, "three") == 1
    summary = json.loads(b.run("report", "--format", "json").stdout)
    one = next(s for s in summary["steps"] if s["id"] == "one")
    assert one["status"] == "succeeded" and one.get("carried_from")
    print(f"takeover after SIGKILL: {takeover_s:.2f}s (TTL {TTL}s)")
    assert takeover_s < TTL + 3


def test_paused_holder_starts_nothing_after_takeover(
    shared_world: World, etcd: EtcdCluster, etcd_prefix: str
) -> None:
    """A holder SIGSTOPped past its lease while the other controller takes the run over: on
    SIGCONT it starts nothing more (step three runs once, by the new holder), writes nothing
    into the shared run, and exits 1 saying the lock was lost."""
    a, b = controllers(shared_world, etcd, etcd_prefix)
    proc = a.spawn("failover", "site-b", "--yes", "--var", "slow=1")
    store = b.store()
    wait_for(running_step(store, "two"), 20, "step two to start")
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        wait_for(crashed(b), 10, "the paused run to read as crashed", pause=0.1)
        taken = b.spawn("resume", "--yes", "--rerun-inflight", "--var", "slow=3")
        wait_for(lambda: store.lock_holder() is not None, 10, "the takeover to hold the lock")
        events_before = len(store.read_journal(store.run_ids()[0]))
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    code, err = finish(proc, 30)
    assert code == 1, err
    assert "lock was lost" in err
    assert finish(taken, 30)[0] == 0
    assert marks(shared_world, "three") == 1
    assert len(store.read_journal(store.run_ids()[0])) == events_before
    assert (a.local / "runs" / store.run_ids()[0] / "unwritten.jsonl").exists()


def test_leader_killed_mid_run_the_run_goes_on(
    shared_world: World, fresh_etcd: EtcdCluster
) -> None:
    """The etcd leader is killed while a step runs: the lease lives on through the election,
    the run completes (exit 0) and every step ran once."""
    a, _ = controllers(shared_world, fresh_etcd, "leader")
    proc = a.spawn("failover", "site-b", "--yes", "--var", "slow=2")
    wait_for(running_step(a.store(), "two"), 20, "step two to start")
    fresh_etcd.kill(fresh_etcd.leader())
    code, err = finish(proc)
    assert code == 0, err
    assert [marks(shared_world, s) for s in ("one", "two", "three")] == [1, 1, 1]
    runs = json.loads(a.run("runs", "--format", "json").stdout)
    assert runs[-1]["status"] == "succeeded"


def test_quorum_lost_mid_run_holder_stops_then_resume_completes(
    shared_world: World, fresh_etcd: EtcdCluster
) -> None:
    """Two of three members killed while a step runs: the holder starts nothing more, is in
    doubt within TTL and exits 1 (lock lost) within 3 × TTL; once quorum is back, ``drx
    resume`` completes the run."""
    a, b = controllers(shared_world, fresh_etcd, "quorum")
    proc = a.spawn("failover", "site-b", "--yes", "--var", "slow=3")
    wait_for(running_step(a.store(), "two"), 20, "step two to start")
    leader = fresh_etcd.leader()
    other = next(n for n in fresh_etcd.members if n != leader)
    fresh_etcd.kill(leader)
    fresh_etcd.kill(other)
    killed = time.monotonic()
    code, err = finish(proc, 30)
    stopped_s = time.monotonic() - killed
    assert code == 1, err
    assert "lock was lost" in err and "unreachable" in err
    assert stopped_s < 3 * TTL + 2
    assert marks(shared_world, "three") == 0  # nothing new started
    unwritten = next((a.local / "runs").glob("*/unwritten.jsonl"))
    kept = [json.loads(line) for line in unwritten.read_text().splitlines()]
    kinds = [e["event"] for e in kept]
    assert "lock_in_doubt" in kinds and "lock_lost" in kinds
    # step two ended after the deadline: the scheduler found the lock in doubt and started
    # nothing (three never started, neither in the store nor in what was kept locally)
    started = ("step_started", "host_started")
    assert not any(e.get("step") == "three" and e["event"] in started for e in kept)
    three = next(e for e in kept if e.get("step") == "three" and e["event"] == "step_finished")
    assert three["status"] == "cancelled" and "lock" in three["message"]
    print(f"holder stopped {stopped_s:.2f}s after quorum loss (TTL {TTL}s)")
    fresh_etcd.restart(leader, wait=False)
    fresh_etcd.restart(other, wait=False)
    fresh_etcd.wait_healthy(list(fresh_etcd.members))
    stored = b.store().read_journal(unwritten.parent.name)
    assert not any(e.get("step") == "three" and e["event"] in started for e in stored)
    wait_for(crashed(b), 15, "the run to read as crashed once quorum is back", pause=0.2)
    done = b.run("resume", "--yes", "--rerun-inflight", "--var", "slow=0")
    assert done.returncode == 0, done.stderr
    assert marks(shared_world, "three") == 1 and marks(shared_world, "one") == 1


@pytest.mark.sshd
def test_site_lost_mid_failover_emergency_resume_from_the_other_site(
    fresh_etcd: EtcdCluster,
    lab: Lab,
    fresh_host: Callable[[], LabHost],
) -> None:
    """The holder's whole site is lost mid-failover — its controller, its hosts (real sshd)
    and its etcd member, all at once: ``drx resume --emergency`` from the other site continues
    the run from the shared journal; the lost site's hosts are unreachable, steps on them fail
    without aborting, and the run succeeds."""
    root = world_dir()
    world = World(root, "ssh", lab=lab, sites={"site-a": ["app-a"], "site-b": ["app-b"]})
    hosts = {"app-a": fresh_host(), "app-b": fresh_host()}
    world.lab_names = {n: h.name for n, h in hosts.items()}
    world.write_inventory()
    world.write_runbook(
        """
        name: site-loss
        steps:
          - {id: freeze, hosts: app-a, run: 'echo ran >> "$DRX_HOST_DIR/freeze"'}
          - id: copy
            hosts: app-b
            run: sleep 2; echo ran >> "$DRX_HOST_DIR/copy"
            idempotent: true
            needs: [freeze]
          - {id: fence-a, hosts: app-a, run: 'echo ran >> "$DRX_HOST_DIR/fence"', needs: [copy]}
          - {id: promote, hosts: app-b, run: 'echo ran >> "$DRX_HOST_DIR/promote"',
             needs: [fence-a]}
        """
    )
    try:
        url = fresh_etcd.url("site-loss", ttl="2s")
        at_a, at_b = Controller(world, url, "a"), Controller(world, url, "b")
        proc = at_a.spawn("failover", "site-b", "--yes")
        wait_for(running_step(at_b.store(), "copy"), 30, "step copy to start")
        # site A goes, all at once: its controller, its host, its etcd member
        os.killpg(proc.pid, signal.SIGKILL)
        lab.kill(hosts["app-a"].name)
        fresh_etcd.kill("site-a")
        finish(proc)
        wait_for(crashed(at_b), 15, "the run to read as crashed at site B", pause=0.2)
        done = at_b.run("resume", "--emergency", "--yes")
        assert done.returncode == 0, done.stderr
        summary = json.loads(at_b.run("report", "--format", "json").stdout)
        steps = {s["id"]: s for s in summary["steps"]}
        assert summary["status"] == "succeeded" and summary["emergency"] is True
        assert steps["freeze"].get("carried_from")
        assert steps["fence-a"]["status"] == "failed"
        assert steps["fence-a"]["hosts"][0]["error"] == "unreachable"
        assert steps["promote"]["status"] == "succeeded"
        assert world.host_file("app-b", "promote").read_text().count("ran") == 1
        assert world.host_file("app-a", "freeze").read_text().count("ran") == 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_state_push_moves_local_history_into_the_store(
    shared_world: World, etcd: EtcdCluster, etcd_prefix: str
) -> None:
    """``drx state push`` copies a local directory's runs and active site into the store:
    runs, reports and plan predictions from history then work through --state-url; a second
    push copies nothing twice."""
    a, b = controllers(shared_world, etcd, etcd_prefix)
    files = ["-r", str(shared_world.runbook), "-i", str(shared_world.inventory)]
    local = ["--state-dir", str(a.local)]
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("DRX_STATE_URL", None)
    drx = [sys.executable, "-m", "orchestrator.cli"]
    for command in (["failover", "site-b"], ["failback"]):
        done = subprocess.run(
            [*drx, *command, "--yes", "--var", "slow=0", *files, *local],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    pushed = subprocess.run(
        [*drx, "state", "push", *local, "--state-url", a.url],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "copied 2 run(s)" in pushed.stdout and "state (active site" in pushed.stdout
    runs = json.loads(b.run("runs", "--format", "json").stdout)
    assert [(r["direction"], r["status"]) for r in runs] == [
        ("failover", "succeeded"),
        ("failback", "succeeded"),
    ]
    assert runs[1]["parent_run"] == runs[0]["run_id"]
    assert b.run("report", runs[0]["run_id"], "--format", "json").returncode == 0
    plan = json.loads(b.run("plan", "site-b", "--format", "json", "--var", "slow=0").stdout)
    assert {s["prediction_source"] for s in plan["steps"]} == {"history"}
    assert "active site: site-a" in b.run("status").stdout
    again = subprocess.run(
        [*drx, "state", "push", *local, "--state-url", a.url],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert "copied 0 run(s)" in again.stdout and "skipped 2" in again.stdout


GATED = """
name: shared
steps:
  - id: one
    hosts: app-b
    run: echo ran >> "$DRX_HOST_DIR/one"
    undo: 'true'
  - {id: promote, kind: manual, prompt: "Promote?", needs: [one]}
  - id: three
    hosts: app-b
    run: echo ran >> "$DRX_HOST_DIR/three"
    undo: 'true'
    needs: [promote]
"""


def test_gate_approved_from_the_other_controller(
    shared_world: World, etcd: EtcdCluster, etcd_prefix: str
) -> None:
    """A run on controller A with no terminal waits at its gate; drx approve on controller B
    (its own local directory, the same store) reaches A through an etcd watch, A continues,
    and the journal records B's user@host, 'drx approve' and the comment; a second answer is
    refused (exit 2, nothing waits)."""
    shared_world.write_runbook(GATED)
    a, b = controllers(shared_world, etcd, etcd_prefix)
    proc = a.spawn("failover", "site-b")
    try:
        store = b.store()
        wait_for(gate_waiting(store), 30, "the gate to wait")
        approved = b.run("approve", "latest", "promote", "--comment", "from site b")
        assert approved.returncode == 0, approved.stderr
        again = b.run("deny", "latest", "promote")
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert again.returncode == 2
    assert marks(shared_world, "three") == 1
    events = store.read_journal(store.run_ids()[-1])
    answered = next(e for e in events if e["event"] == "gate_answered")
    assert answered["via"] == "drx approve" and answered["comment"] == "from site b"


def gate_waiting(store: EtcdStore) -> Callable[[], bool]:
    def check() -> bool:
        ids = store.run_ids()
        return bool(ids) and any(e["event"] == "gate_waiting" for e in store.read_journal(ids[-1]))

    return check


def test_takeover_right_after_the_leader_is_killed_waits_for_the_election(
    shared_world: World, fresh_etcd: EtcdCluster
) -> None:
    """The etcd leader is killed and the other members answer nothing for a while (held
    stopped, so the outage outlasts drx's start-up): the other site's status and takeover (a
    failback) wait it out, saying so on stderr, instead of failing with exit 2."""
    a, b = controllers(shared_world, fresh_etcd, "election")
    assert a.run("failover", "site-b", "--yes", "--var", "slow=0").returncode == 0
    leader = fresh_etcd.leader()
    rest = [n for n in fresh_etcd.members if n != leader]
    fresh_etcd.kill(leader)
    for name in rest:
        fresh_etcd.pause(name)
    env = {**os.environ, "NO_COLOR": "1"}
    status = subprocess.Popen(
        b.argv("status"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    back = subprocess.Popen(
        b.argv("failback", "--yes", "--var", "slow=0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(3.0)
        t0 = time.monotonic()
        for name in rest:
            fresh_etcd.resume(name)
        out, err = status.communicate(timeout=60)
        assert status.returncode == 0, err
        # the failback may already have moved the service back when status reads the state
        assert "active site: site-" in out and "retrying for up to 10s" in err
        _, err = back.communicate(timeout=60)
        assert back.returncode == 0, err
        assert "retrying" in err
    finally:
        for proc in (status, back):  # close their pipes whatever happened
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    print(f"status and failback done {time.monotonic() - t0:.2f}s after etcd came back")
    assert "active site: site-a" in b.run("status").stdout
