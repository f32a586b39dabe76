"""The shared store's parts against a real 3-member etcd cluster on loopback: the URL, the client
(failover across members, deadlines), the lease lock and its fencing token, the batching
journal sink, and what is kept locally once the lock is lost."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import LockLost, RefusedError, StoreError, StoreUnavailable, UsageError
from orchestrator.lab.etcd import EtcdCluster
from orchestrator.record.etcd_client import EtcdClient
from orchestrator.record.etcd_store import EtcdLock, EtcdStore, StateURL
from orchestrator.record.events import CancelRunning, HostStarted, StepsDone
from orchestrator.record.journal import Journal
from orchestrator.record.store import LockState, open_store


def store_of(cluster: EtcdCluster, prefix: str, tmp_path: Path, ttl: str = "2s") -> EtcdStore:
    store = open_store(tmp_path / "local", cluster.url(prefix, ttl=ttl))
    assert isinstance(store, EtcdStore)
    return store


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:2379/p", "scheme"),
        ("etcd://h:2379", "PREFIX"),
        ("etcd://h/p", "HOST:PORT"),
        ("etcd://h:2379/p?ttl=1s", "below the minimum"),
        ("etcd://h:2379/p?ttl=soon", "ttl"),
        ("etcd://h:2379/p?tll=5s", "unknown parameter"),
        ("etcd://h:2379/p?ca=/x.pem", "etcds://"),
        ("etcds://h:2379/p?cert=/c.pem", "go together"),
    ],
)
def test_bad_state_url_is_a_usage_error(url: str, problem: str) -> None:
    """A malformed --state-url is refused (exit 2) with the reason, before anything connects."""
    with pytest.raises(UsageError, match=problem):
        StateURL.parse(url)


def test_state_url_parts() -> None:
    """The URL gives endpoints, prefix, TTL (default 10 s), TLS files and the user."""
    url = StateURL.parse("etcds://a:1,b:2/team/drx?ttl=3s&ca=/ca&cert=/c&key=/k&user=drx")
    assert url.endpoints == ("a:1", "b:2")
    assert url.prefix == "team/drx"
    assert url.ttl == 3.0
    assert url.tls is not None and (url.tls.ca, url.tls.cert, url.tls.key) == ("/ca", "/c", "/k")
    assert url.user == "drx"
    assert StateURL.parse("etcd://a:1/p").ttl == 10.0
    assert url.display == "etcds://a:1,b:2/team/drx"


def test_user_without_password_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """user= needs the password from DRX_ETCD_PASSWORD; it is never read from the URL."""
    monkeypatch.delenv("DRX_ETCD_PASSWORD", raising=False)
    with pytest.raises(UsageError, match="DRX_ETCD_PASSWORD"):
        open_store(tmp_path, "etcd://127.0.0.1:1/p?user=drx")


def test_lock_is_exclusive_and_names_holder_and_lease(
    etcd: EtcdCluster, etcd_prefix: str, tmp_path: Path
) -> None:
    """A second acquire is refused naming user@host pid N run ID and the lease time left;
    other prefixes are not affected; after release the lock is free again."""
    a = store_of(etcd, etcd_prefix, tmp_path, ttl="5s")
    b = store_of(etcd, etcd_prefix, tmp_path, ttl="5s")
    other = store_of(etcd, etcd_prefix + "-other", tmp_path)
    lock = a.acquire("RUN-1")
    try:
        with pytest.raises(RefusedError, match=r"@.* pid \d+ run RUN-1 \(lease [45]s left\)"):
            b.acquire("RUN-2")
        holder = b.lock_holder()
        assert holder is not None and holder.startswith("RUN-1 (")
        assert other.lock_holder() is None
        other.acquire("RUN-3").release()
        assert lock.state() is LockState.HELD
    finally:
        lock.release()
    assert b.lock_holder() is None
    b.acquire("RUN-2").release()


def test_fenced_write_after_the_lease_expired(
    etcd: EtcdCluster, etcd_prefix: str, tmp_path: Path
) -> None:
    """A holder whose lease expired (renewals stopped, as when paused) can never write again
    once another controller holds the lock: its write is fenced and its lock is lost."""
    a = store_of(etcd, etcd_prefix, tmp_path)
    b = store_of(etcd, etcd_prefix, tmp_path)
    lock_a = a.acquire("RUN-A")
    assert isinstance(lock_a, EtcdLock)
    lock_a._stop.set()  # no more renewals: the lease runs out
    lock_a._renewer.join()
    deadline = time.monotonic() + 10
    while True:
        try:
            lock_b = b.acquire("RUN-B")
            break
        except RefusedError:
            assert time.monotonic() < deadline, "the expired lease never freed the lock"
            time.sleep(0.1)
    try:
        assert isinstance(lock_b, EtcdLock) and lock_b.token > lock_a.token
        assert lock_a.state() is LockState.IN_DOUBT
        with pytest.raises(LockLost, match=r"fenced: the lock is now held by .* run RUN-B"):
            a.update_state(active="site-a")
        assert lock_a.state() is LockState.LOST
        b.update_state(active="site-b")
        assert a.read_state().active == "site-b"
    finally:
        lock_b.release()


def test_journal_lines_are_batched_in_order(
    etcd: EtcdCluster, etcd_prefix: str, tmp_path: Path
) -> None:
    """Events written from many threads reach the store complete and in write order, several
    to a transaction (far fewer store revisions than events)."""
    store = store_of(etcd, etcd_prefix, tmp_path)
    client = EtcdClient(etcd.endpoints, timeout=1.0)
    rev0 = client.put(b"/probe", b"")
    with store.acquire("RUN") as lock:
        journal = Journal(store.create_run("RUN", {"run_id": "RUN"}, lock))

        def burst(n: int) -> None:
            for i in range(250):
                journal.write(HostStarted(step=f"t{n}", host="h", attempt=i))

        threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        journal.close()
    rev1 = client.put(b"/probe", b"")
    events = store.read_journal("RUN")
    assert [(e["step"], e["attempt"]) for e in events] == [
        (e["step"], e["attempt"]) for e in journal.events
    ]
    assert len(events) == 1000
    assert rev1 - rev0 < 200, f"{rev1 - rev0} revisions for 1000 events: not batched"
    assert store.run_ids() == ["RUN"]
    assert store.read_plan_document("RUN") == {"run_id": "RUN"}


def test_the_journal_commits_at_most_one_transaction_every_10_ms(
    etcd: EtcdCluster, etcd_prefix: str, tmp_path: Path
) -> None:
    """Lines written a millisecond apart share transactions: no more than one starts every
    10 ms (each costs etcd's members CPU and a disk write), and every line arrives, in order."""
    store = store_of(etcd, etcd_prefix, tmp_path)
    client = EtcdClient(etcd.endpoints, timeout=1.0)
    with store.acquire("RUN") as lock:
        journal = Journal(store.create_run("RUN", {}, lock))
        rev0 = client.put(b"/probe", b"")
        t0 = time.monotonic()
        for i in range(150):
            journal.write(HostStarted(step=f"s{i}", host="h", attempt=1))
            time.sleep(0.001)
        journal.close()
        elapsed = time.monotonic() - t0
        rev1 = client.put(b"/probe", b"")
    transactions = rev1 - rev0 - 1
    assert transactions <= elapsed / 0.01 + 2, (transactions, elapsed)
    assert [e["step"] for e in store.read_journal("RUN")] == [f"s{i}" for i in range(150)]


def test_a_line_reaches_the_store_within_milliseconds(
    etcd: EtcdCluster, etcd_prefix: str, tmp_path: Path
) -> None:
    """A line written is readable from another controller within 10 ms and a round trip or so
    (the window a killed controller can lose), without ``write`` ever waiting on the network."""
    store = store_of(etcd, etcd_prefix, tmp_path)
    reader = store_of(etcd, etcd_prefix, tmp_path)
    with store.acquire("RUN") as lock:
        journal = Journal(store.create_run("RUN", {}, lock))
        delays = []
        for i in range(20):
            t0 = time.monotonic()
            journal.write(HostStarted(step=f"s{i}", host="h", attempt=1))
            assert time.monotonic() - t0 < 0.005
            while [e.get("step") for e in reader.read_journal("RUN")][-1:] != [f"s{i}"]:
                assert time.monotonic() - t0 < 1.0
            delays.append(time.monotonic() - t0)
        journal.close()
    assert sorted(delays)[10] < 0.1


def test_lost_lock_keeps_unwritten_lines_locally(
    etcd: EtcdCluster, etcd_prefix: str, tmp_path: Path
) -> None:
    """Once the lock is lost, what the store would not take goes to runs/<id>/unwritten.jsonl
    in the local directory, in order."""
    store = store_of(etcd, etcd_prefix, tmp_path)
    lock = store.acquire("RUN")
    assert isinstance(lock, EtcdLock)
    journal = Journal(store.create_run("RUN", {}, lock))
    journal.write(StepsDone())
    time.sleep(0.3)
    lock.lose("the store says the lease is gone (test)")
    journal.write(CancelRunning())
    journal.write(HostStarted(step="x", host="h"))
    journal.close()
    lock.release()
    kept = (tmp_path / "local" / "runs" / "RUN" / "unwritten.jsonl").read_text().splitlines()
    assert [line.split('"')[3] for line in kept] == ["cancel_running", "host_started"]
    assert [e["event"] for e in store.read_journal("RUN")] == ["steps_done"]


def test_client_fails_over_and_keeps_its_deadline(fresh_etcd: EtcdCluster) -> None:
    """A dead first endpoint costs nothing but a refused connect; with no member left, a call
    fails within its deadline instead of hanging."""
    leader = fresh_etcd.leader()
    victim, hung, last = sorted(fresh_etcd.members, key=lambda n: n == leader)
    members = fresh_etcd.members
    client = EtcdClient([members[n].endpoint for n in (victim, hung, last)], timeout=0.6)
    fresh_etcd.kill(victim)  # not the leader: no election to wait for
    t0 = time.monotonic()
    client.put(b"/k", b"v")
    assert time.monotonic() - t0 < 0.5
    fresh_etcd.pause(hung)  # hung, not refused
    fresh_etcd.kill(last)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no endpoint"):
        client.get(b"/k")
    assert 0.55 < time.monotonic() - t0 < 0.9
    fresh_etcd.resume(hung)


def test_lock_in_doubt_without_quorum_then_held_again(
    fresh_etcd: EtcdCluster, tmp_path: Path
) -> None:
    """Without quorum for less than 3 × TTL the holder is in doubt (past its local deadline);
    when quorum returns a renewal succeeds and the lock is held again, the same token."""
    store = store_of(fresh_etcd, "doubt", tmp_path)
    lock = store.acquire("RUN")
    assert isinstance(lock, EtcdLock)
    token = lock.token
    fresh_etcd.kill("site-a")
    fresh_etcd.kill("site-b")
    t0 = time.monotonic()
    while lock.state() is LockState.HELD:
        assert time.monotonic() - t0 < 4.0, "never in doubt without quorum"
        time.sleep(0.02)
    in_doubt_after = time.monotonic() - t0
    # quorum back at once (a restarted member's leader extends every lease on election)
    fresh_etcd.restart("site-a", wait=False)
    fresh_etcd.restart("site-b", wait=False)
    # within TTL of the last renewal; a leader that lost its quorum still renews until it
    # steps down (etcd's election timeout, 1 s), and a loaded machine adds a little
    assert in_doubt_after <= 2.0 + 1.0 + 0.5
    while lock.state() is not LockState.HELD:
        assert lock.state() is LockState.IN_DOUBT, lock.lost_reason
        assert time.monotonic() - t0 < 3 * 2.0 + 2, "quorum came back but no renewal"
        time.sleep(0.05)
    assert lock.token == token
    store.update_state(active="site-b")
    lock.release()


def test_user_and_password_auth(
    fresh_etcd: EtcdCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With etcd's authentication on, user= and DRX_ETCD_PASSWORD get a token and every call
    works (lock, journal, state); a wrong password is refused with etcd's reason, exit 2."""
    import subprocess

    endpoints = ",".join(fresh_etcd.endpoints)
    env = {**os.environ, "ETCDCTL_API": "3"}
    for args in (
        ["user", "add", "root:rootpw"],
        ["user", "add", "drx:s3cret"],
        ["role", "add", "drx"],
        ["role", "grant-permission", "drx", "--prefix=true", "readwrite", "/auth/"],
        ["user", "grant-role", "drx", "drx"],
        ["auth", "enable"],
    ):
        subprocess.run(
            ["etcdctl", "--endpoints", endpoints, *args], env=env, check=True, capture_output=True
        )
    url = fresh_etcd.url("auth", ttl="2s", user="drx")
    monkeypatch.setenv("DRX_ETCD_PASSWORD", "s3cret")
    store = open_store(tmp_path, url)
    with store.acquire("RUN") as lock:
        journal = Journal(store.create_run("RUN", {"run_id": "RUN"}, lock))
        journal.write(StepsDone())
        journal.close()
        store.update_state(active="site-b")
    assert [e["event"] for e in store.read_journal("RUN")] == ["steps_done"]
    assert store.read_state().active == "site-b"
    monkeypatch.setenv("DRX_ETCD_PASSWORD", "wrong")
    with pytest.raises(StoreError, match="authentication failed") as refused:
        open_store(tmp_path, url).run_ids()
    assert refused.value.exit_code == 2


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    """etcds:// with ca=, cert=, key=: the lock, the journal and the state work over TLS with a
    client certificate; without the certificate the members refuse the client."""
    cluster = EtcdCluster(tmp_path / "etcd", first_address=21, tls=True)
    try:
        cluster.start()
        store = open_store(tmp_path / "local", cluster.url("tls", ttl="2s"))
        assert store.location.startswith("etcds://")
        with store.acquire("RUN") as lock:
            journal = Journal(store.create_run("RUN", {}, lock))
            journal.write(StepsDone())
            journal.close()
            store.update_state(active="site-b")
        assert [e["event"] for e in store.read_journal("RUN")] == ["steps_done"]
        assert cluster.tls is not None
        no_cert = f"etcds://{','.join(cluster.endpoints)}/tls?ttl=2s&ca={cluster.tls.ca}"
        with pytest.raises(StoreError):
            open_store(tmp_path / "local", no_cert).read_state()
    finally:
        cluster.remove()


def test_a_reader_rides_out_an_outage_then_gives_up_in_bounded_time(
    fresh_etcd: EtcdCluster, tmp_path: Path
) -> None:
    """A store that answers nothing for 1.5 s (every member hung): reading the state retries
    with backoff, says so once, and answers once the members are back; the holder of the lock
    gets no such patience; with nothing back, a reader gives up after max(10 s, TTL)."""
    store = store_of(fresh_etcd, "patience", tmp_path)
    store.update_state(active="site-b")
    told: list[str] = []
    store.client.on_retry = told.append
    for name in fresh_etcd.members:
        fresh_etcd.pause(name)
    timer = threading.Timer(1.5, lambda: [fresh_etcd.resume(n) for n in fresh_etcd.members])
    timer.start()
    try:
        t0 = time.monotonic()
        assert store.read_state().active == "site-b"
        assert time.monotonic() - t0 >= 1.0
    finally:
        timer.join()
    assert len(told) == 1 and "retrying for up to 10s" in told[0]
    lock = store.acquire("RUN")
    assert store.client.patience_s == 0.0
    lock.release()
    other = store_of(fresh_etcd, "patience", tmp_path)
    other.client.on_retry = told.append
    for name in list(fresh_etcd.members):
        fresh_etcd.kill(name)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="gave up after 10s"):
        other.read_state()
    assert 10.0 <= time.monotonic() - t0 < 16.0
