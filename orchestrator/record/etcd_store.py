"""The shared store: state, the run lock and every run's journal, plan and summary in etcd v3,
so that a controller at either site sees the same lock, active site and history
(docs/reference.md, "Shared state").

Keys, under the URL's prefix ``P`` (two prefixes never see each other)::

    /P/state                         the state (active site per runbook, last run), JSON
    /P/lock                          the run lock, attached to the holder's lease; names the holder
    /P/index/<run-id>                one key per run (listing runs reads only these)
    /P/runs/<run-id>/plan            plan.json
    /P/runs/<run-id>/summary         summary.json
    /P/runs/<run-id>/journal/<seq>   journal lines from number <seq> on (zero-padded: key order is
                                     journal order), zlib-compressed

**Lock and fencing.** The lock is a lease (the URL's ``ttl``) plus the lock key, created only if
absent; the fencing token is the lock key's create revision. Every write the holder makes is one
transaction that succeeds only while the lock key still has that create revision, so a holder
that was paused or cut off past its lease can never write into a run another controller took
over. The lease is renewed every TTL/3; the holder's local deadline is the send time of its last
successful renewal + TTL, less a small margin. Past it the lock is in doubt (``LockState.IN_DOUBT``:
the engine starts nothing new); a renewal that succeeds makes it held again (an etcd leader
change keeps leases alive); the lease gone, a fenced write, or 3 × TTL without the store make it
lost for good.

**Journal.** Lines are queued by ``write`` and sent by one writer thread: everything waiting
goes in one guarded transaction (consecutive lines share a key, zlib-compressed, since etcd's
gateway costs time per byte), at most one every ``GROUP_S`` (10 ms), so the scheduler never
waits on the network and a 10,000-step run costs a few hundred transactions. A line reaches the
store within 10 ms and one round trip of being written; what a controller killed in that window
had queued is lost with it, as a local journal's last few milliseconds are when its machine
loses power (it is fsynced in batches); a command whose start was lost so is found by the run
that takes over (``orchestrator.run.recover.fence``). Writes that fail while the store is briefly unreachable are retried in order; once the
lock is lost, what could not be written goes to ``runs/<run-id>/unwritten.jsonl`` in the local
directory.
"""

from __future__ import annotations

import collections
import contextlib
import getpass
import json
import os
import socket
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Unpack

from orchestrator.errors import (
    JournalError,
    LockLost,
    RefusedError,
    StoreError,
    StoreUnavailable,
    UsageError,
)
from orchestrator.model.units import parse_duration
from orchestrator.record.etcd_client import (
    TLS,
    EtcdClient,
    cmp_create_revision,
    op_put,
    op_range,
)
from orchestrator.record.store import (
    JournalSink,
    LockState,
    RunLock,
    State,
    StateFields,
    Store,
    parse_journal,
    private_dir,
    private_open,
)

DEFAULT_TTL_S = 10.0
MIN_TTL_S = 2.0
#: journal lines (uncompressed) kept in one key; a transaction carries up to MAX_BATCH_OPS keys
CHUNK_BYTES = 64 * 1024
#: etcd's default --max-txn-ops is 128: the journal's puts per transaction stay far below it
MAX_BATCH_OPS = 8
#: and its default request limit is 1.5 MiB
#: and its default request limit is 1.5 MiB (values travel base64-encoded: 4/3 bigger)
MAX_BATCH_BYTES = 768 * 1024
#: a document (plan, summary) bigger than this is stored in parts of this size
DOC_PART_BYTES = 512 * 1024
#: the first byte of a compressed journal chunk (a line of JSON starts with ``{``)
_ZLIB = b"z"
#: the head value of a document stored in parts: ``parts N``
_PARTS = b"parts "
PASSWORD_ENV = "DRX_ETCD_PASSWORD"


@dataclass(frozen=True)
class StateURL:
    """A parsed ``--state-url``: ``etcd[s]://HOST:PORT[,HOST:PORT…]/PREFIX[?ttl=10s&…]``."""

    endpoints: tuple[str, ...]
    prefix: str
    ttl: float
    tls: TLS | None
    user: str | None

    @classmethod
    def parse(cls, url: str) -> StateURL:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("etcd", "etcds"):
            raise UsageError(f"--state-url {url!r}: the scheme must be etcd:// or etcds://")
        netloc = parts.netloc.rsplit("@", 1)[-1]  # credentials never go in the URL
        endpoints = tuple(e.strip() for e in netloc.split(",") if e.strip())
        if not endpoints:
            raise UsageError(f"--state-url {url!r}: no HOST:PORT endpoints")
        for e in endpoints:
            host, _, port = e.rpartition(":")
            if not host or not port.isdigit():
                raise UsageError(f"--state-url {url!r}: endpoint {e!r} is not HOST:PORT")
        prefix = parts.path.strip("/")
        if not prefix:
            raise UsageError(f"--state-url {url!r}: a /PREFIX is required (it names the state)")
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        known = {"ttl", "ca", "cert", "key", "user"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise UsageError(
                f"--state-url {url!r}: unknown parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        ttl = DEFAULT_TTL_S
        if "ttl" in query:
            try:
                ttl = parse_duration(query["ttl"])
            except ValueError as exc:
                raise UsageError(f"--state-url {url!r}: ttl: {exc}") from None
        if ttl < MIN_TTL_S:
            raise UsageError(
                f"--state-url {url!r}: ttl {query.get('ttl')} is below the minimum of 2s "
                "(a shorter lease cannot outlive an etcd leader election)"
            )
        tls = None
        if parts.scheme == "etcds":
            tls = TLS(query.get("ca") or None, query.get("cert") or None, query.get("key") or None)
            if (tls.cert is None) != (tls.key is None):
                raise UsageError(f"--state-url {url!r}: cert= and key= go together")
        elif any(k in query for k in ("ca", "cert", "key")):
            raise UsageError(f"--state-url {url!r}: ca=, cert=, key= need etcds://")
        return cls(endpoints, prefix, ttl, tls, query.get("user") or None)

    @property
    def display(self) -> str:
        scheme = "etcds" if self.tls else "etcd"
        return f"{scheme}://{','.join(self.endpoints)}/{self.prefix}"


def holder_name(run_id: str) -> str:
    """What the lock key says: ``user@host pid N run RUN-ID``."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()} run {run_id}"


def _run_of(holder: str) -> str:
    return holder.rsplit(" run ", 1)[-1] if " run " in holder else holder


class EtcdLock(RunLock):
    """The run lock held in etcd: a lease kept alive by a thread of its own, and the fencing
    token every write of the holder is guarded by."""

    def __init__(self, store: EtcdStore, holder: str) -> None:
        self.store = store
        self.client = store.client
        #: etcd counts lease TTLs in whole seconds: the deadline uses what the lease really has
        self.ttl = float(int(store.url.ttl))
        self.key = store.key("lock")
        self.holder = holder
        #: renewals are sent this often, and no call waits longer
        self.period = self.ttl / 3
        self.margin = min(0.5, self.ttl * 0.1)
        self.lost_reason: str | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        t_send = time.monotonic()
        self.lease = self.client.lease_grant(int(self.ttl), timeout=self.period)
        result = self.client.txn(
            [cmp_create_revision(self.key, 0)],
            [op_put(self.key, holder.encode(), self.lease)],
            [op_range(self.key)],
            timeout=self.period,
        )
        if not result.succeeded:
            with contextlib.suppress(StoreError):
                self.client.lease_revoke(self.lease, timeout=self.period)
            current = result.ranges()
            who = current[0].value.decode("utf-8", "replace") if current else "unknown holder"
            left = store.lease_left(current[0].lease) if current else None
            raise RefusedError(
                f"another run holds the lock on {store.location}: {who}"
                + (f" (lease {left:.0f}s left)" if left is not None else "")
            )
        #: the fencing token: the lock key's create revision
        self.token = result.revision
        self.deadline = t_send + self.ttl - self.margin
        self._last_ok = t_send
        self._renewer = threading.Thread(target=self._renew_loop, name="etcd-lease", daemon=True)
        self._renewer.start()

    # -- what the engine asks -------------------------------------------------------------------
    def state(self) -> LockState:
        if self._lost.is_set():
            return LockState.LOST
        if time.monotonic() > self.deadline:
            return LockState.IN_DOUBT
        return LockState.HELD

    def lose(self, reason: str) -> None:
        if not self._lost.is_set():
            self.lost_reason = reason
            self._lost.set()

    # -- renewal --------------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        while not self._stop.wait(self._pause()):
            if self._lost.is_set():
                return
            t_send = time.monotonic()
            try:
                ttl = self.client.lease_keepalive(self.lease, timeout=self.period)
            except StoreError as exc:
                if time.monotonic() - self._last_ok >= 3 * self.ttl:
                    self.lose(f"the store was unreachable for {3 * self.ttl:.0f}s (3 × TTL): {exc}")
                    return
                continue
            if ttl <= 0:
                self.lose("the store says the lease is gone (it expired)")
                return
            self._last_ok = t_send
            self.deadline = t_send + self.ttl - self.margin

    def _pause(self) -> float:
        if time.monotonic() > self.deadline:  # in doubt: try again at once, keep trying
            return 0.05
        return max(0.0, self._last_ok + self.period - time.monotonic())

    # -- guarded writes -------------------------------------------------------------------------
    def write(self, ops: list[dict[str, Any]]) -> None:
        """Apply ``ops`` in one transaction guarded by the fencing token; retried while the
        store is unreachable (the lock decides when that has lasted too long)."""
        while True:
            if self._lost.is_set():
                raise LockLost(self.message())
            try:
                result = self.client.txn(
                    [cmp_create_revision(self.key, self.token)],
                    ops,
                    [op_range(self.key)],
                    timeout=self.period,
                )
            except StoreUnavailable:
                self._lost.wait(0.05)
                continue
            if result.succeeded:
                return
            current = result.ranges()
            who = current[0].value.decode("utf-8", "replace") if current else None
            self.lose(
                "a write was fenced: "
                + (f"the lock is now held by {who}" if who else "the lock key is gone")
            )
            raise LockLost(self.message())

    def message(self) -> str:
        return f"the run lock was lost: {self.lost_reason}"

    def release(self) -> None:
        self._stop.set()
        if self._renewer.is_alive() and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=self.period + 1)
        if self.store.held is self:
            self.store.held = None
        if not self._lost.is_set():
            # revoking the lease deletes the lock key with it
            with contextlib.suppress(StoreError):
                self.client.lease_revoke(self.lease, timeout=self.period)


#: the journal's transactions start at least this far apart: the lines of each interval share
#: one (etcd's members spend CPU per transaction, on a controller's machine too, perhaps)
GROUP_S = 0.01


class EtcdJournalSink(JournalSink):
    """A run's journal in etcd: lines queued, sent in batches by one writer thread, each batch
    one guarded transaction (see the module docstring)."""

    def __init__(self, store: EtcdStore, run_id: str, lock: EtcdLock) -> None:
        self.store = store
        self.lock = lock
        self.run_id = run_id
        self.base = store.key(f"runs/{run_id}/journal/")
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[int, bytes]] = collections.deque()
        self._seq = 0
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, name="etcd-journal", daemon=True)
        self._writer.start()

    def write(self, line: bytes) -> None:
        self.write_lines([line])

    def write_lines(self, lines: list[bytes]) -> None:
        with self._cond:
            if self._closing:
                raise JournalError(f"the journal of {self.run_id} is closed")
            idle = not self._queue
            for line in lines:
                self._seq += 1
                self._queue.append((self._seq, line))
            if idle:  # the writer waits for a first line, not for each
                self._cond.notify_all()

    def _write_loop(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    break
                # the lines of this interval share one transaction (close cuts it short)
                while not self._closing and (rest := last + GROUP_S - time.monotonic()) > 0:
                    self._cond.wait(rest)
                last = time.monotonic()
                batch: list[tuple[int, bytes]] = []
                size = 0
                for seq, line in self._queue:
                    if batch and size + len(line) > MAX_BATCH_OPS * CHUNK_BYTES:
                        break
                    batch.append((seq, line))
                    size += len(line)
            ops = journal_puts(self.base, batch)
            try:
                self.lock.write(ops)
            except LockLost:
                break
            with self._cond:
                for _ in batch:
                    self._queue.popleft()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._writer.join()
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        if left:
            self.store.keep_unwritten(self.run_id, [line for _, line in left])


#: the least time a command keeps retrying an etcd that does not answer (else the lock's TTL)
PATIENCE_MIN_S = 10.0


class EtcdStore(Store):
    """State, lock and runs in etcd under one prefix; command output stays in ``local_dir``."""

    def __init__(self, url: StateURL, local_dir: Path, *, password: str | None = None) -> None:
        self.url = url
        self.local_dir = local_dir
        self.root = f"/{url.prefix}/".encode()
        if password is None:
            password = os.environ.get(PASSWORD_ENV)
        if url.user and password is None:
            raise UsageError(f"--state-url names user={url.user}: set {PASSWORD_ENV}")
        self.client = EtcdClient(
            url.endpoints, timeout=url.ttl / 3, tls=url.tls, user=url.user, password=password
        )
        # Reading the state or taking over the lock rides out an election (the leader lost
        # with its site); see docs/reference.md (Shared state in etcd).
        self.client.patience_s = max(PATIENCE_MIN_S, url.ttl)
        #: the lock this controller holds now, if any (state writes are guarded by it)
        self.held: EtcdLock | None = None

    def key(self, name: str) -> bytes:
        return self.root + name.encode()

    @property
    def location(self) -> str:
        return self.url.display

    def exists(self) -> bool:
        return next(iter(self.client.range_prefix(self.root, keys_only=True)), None) is not None

    # -- state ----------------------------------------------------------------------------------
    def read_state(self) -> State:
        kv = self.client.get(self.key("state"))
        return State.from_json(_json_doc(kv.value) if kv is not None else None)

    def update_state(self, **changes: Unpack[StateFields]) -> State:
        state = replace(self.read_state(), **changes)
        data = json.dumps(state.to_json(), indent=2, sort_keys=True).encode()
        if self.held is not None:
            self.held.write([op_put(self.key("state"), data)])
        else:  # no run holds the lock here: write only while nobody holds it anywhere
            result = self.client.txn(
                [cmp_create_revision(self.key("lock"), 0)], [op_put(self.key("state"), data)]
            )
            if not result.succeeded:
                raise RefusedError(
                    f"the state in {self.location} is not changed while a run holds the lock "
                    f"({self.lock_holder()})"
                )
        return state

    # -- the lock -------------------------------------------------------------------------------
    def acquire(self, holder: str) -> RunLock:
        lock = EtcdLock(self, holder_name(holder))
        self.held = lock
        # The holder's calls must fail at their own deadline: its lease is judged by them.
        self.client.patience_s = 0.0
        return lock

    def lease_left(self, lease: int) -> float | None:
        if not lease:
            return None
        try:
            left = self.client.lease_time_left(lease)
        except StoreError:
            return None
        return float(left) if left >= 0 else None

    def holder(self) -> tuple[str, float | None] | None:
        """The lock key's holder (``user@host pid N run RUN-ID``) and its lease time left."""
        kv = self.client.get(self.key("lock"))
        if kv is None:
            return None
        return kv.value.decode("utf-8", "replace"), self.lease_left(kv.lease)

    def lock_holder(self) -> str | None:
        found = self.holder()
        if found is None:
            return None
        who, left = found
        text = f"{_run_of(who)} ({who.rsplit(' run ', 1)[0]}"
        return text + (f", lease {left:.0f}s left)" if left is not None else ")")

    # -- runs -----------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        index = self.key("index/")
        return [
            kv.key[len(index) :].decode() for kv in self.client.range_prefix(index, keys_only=True)
        ]

    def has_run(self, run_id: str) -> bool:
        return self.client.get(self.key(f"index/{run_id}")) is not None

    def create_run(self, run_id: str, plan_doc: dict[str, Any], lock: RunLock) -> JournalSink:
        from orchestrator.record.store import document_json

        held = self._etcd_lock(lock)
        parts, head = self._doc_ops(f"runs/{run_id}/plan", document_json(plan_doc))
        for part in parts:
            held.write([part])
        held.write([op_put(self.key(f"index/{run_id}"), b""), head])
        return EtcdJournalSink(self, run_id, held)

    def read_journal(self, run_id: str) -> list[dict[str, Any]]:
        lines = [
            journal_lines(kv.value)
            for kv in self.client.range_prefix(self.key(f"runs/{run_id}/journal/"))
        ]
        if not lines and not self.has_run(run_id):
            raise UsageError(f"no run '{run_id}' in {self.location}")
        return parse_journal(b"".join(lines), f"{self.location} run {run_id}")

    def write_summary_document(self, run_id: str, text: str, lock: RunLock) -> None:
        held = self._etcd_lock(lock)
        parts, head = self._doc_ops(f"runs/{run_id}/summary", text)
        for part in parts:
            held.write([part])
        held.write([head])

    def read_summary_document(self, run_id: str) -> dict[str, Any] | None:
        return self._read_doc(f"runs/{run_id}/summary")

    def read_plan_document(self, run_id: str) -> dict[str, Any] | None:
        return self._read_doc(f"runs/{run_id}/plan")

    def _doc_ops(self, name: str, text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The puts that store a document: its parts (each its own transaction, as etcd
        limits a request to 1.5 MiB), then the head, written last, so a reader sees the whole
        document or none of it."""
        data = text.encode()
        if len(data) > CHUNK_BYTES:
            data = _ZLIB + zlib.compress(data, 1)
        if len(data) <= DOC_PART_BYTES:
            return [], op_put(self.key(name), data)
        pieces = [data[i : i + DOC_PART_BYTES] for i in range(0, len(data), DOC_PART_BYTES)]
        parts = [op_put(self.key(f"{name}.part/{i:06d}"), piece) for i, piece in enumerate(pieces)]
        return parts, op_put(self.key(name), _PARTS + str(len(pieces)).encode())

    def _read_doc(self, name: str) -> dict[str, Any] | None:
        kv = self.client.get(self.key(name))
        if kv is None:
            return None
        data = kv.value
        if data.startswith(_PARTS):
            count = int(data[len(_PARTS) :])
            pieces = [p.value for p in self.client.range_prefix(self.key(f"{name}.part/"))]
            if len(pieces) < count:
                return None
            data = b"".join(pieces[:count])
        return _json_doc(journal_lines(data))

    # -- helpers --------------------------------------------------------------------------------
    def _etcd_lock(self, lock: RunLock) -> EtcdLock:
        if not isinstance(lock, EtcdLock):
            raise StoreError(f"{self.location}: a run lock of another store cannot guard writes")
        return lock

    def keep_unwritten(self, run_id: str, lines: list[bytes]) -> Path:
        """Append journal lines the store would not take to the local ``unwritten.jsonl``."""
        path = self.local_dir / "runs" / run_id / "unwritten.jsonl"
        private_dir(path.parent, self.local_dir)
        with os.fdopen(private_open(path, os.O_WRONLY | os.O_APPEND), "ab") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        return path

    def import_run(
        self,
        run_id: str,
        journal: bytes,
        plan: str | None,
        summary: str | None,
    ) -> None:
        """Copy one run into the store as it is (``drx state push``), only if it is not there."""
        ops = [op_put(self.key(f"index/{run_id}"), b"")]
        puts: list[dict[str, Any]] = []
        for name, text in (("plan", plan), ("summary", summary)):
            if text is not None:
                parts, head = self._doc_ops(f"runs/{run_id}/{name}", text)
                puts.extend(parts)
                ops.append(head)
        lines = [line + b"\n" for line in journal.split(b"\n") if line.strip()]
        base = self.key(f"runs/{run_id}/journal/")
        puts += journal_puts(base, list(enumerate(lines, 1)))
        # the journal first, the index key last: a run appears only once it is complete
        for chunk in _chunks(puts, MAX_BATCH_OPS, MAX_BATCH_BYTES):
            self.client.txn([], chunk)
        self.client.txn([cmp_create_revision(self.key(f"index/{run_id}"), 0)], ops)

    def close(self) -> None:
        self.client.close()


def journal_puts(base: bytes, lines: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
    """Puts that append numbered journal lines: consecutive lines share a key (up to
    CHUNK_BYTES of them, zlib-compressed: etcd's gateway costs time per byte), named after the
    first line's number, so that key order is journal order."""
    puts: list[dict[str, Any]] = []
    first, size = 0, 0
    chunk: list[bytes] = []
    for seq, line in lines:
        if chunk and size + len(line) > CHUNK_BYTES:
            puts.append(op_put(base + b"%010d" % first, _ZLIB + zlib.compress(b"".join(chunk), 1)))
            chunk, size = [], 0
        if not chunk:
            first = seq
        chunk.append(line)
        size += len(line)
    if chunk:
        puts.append(op_put(base + b"%010d" % first, _ZLIB + zlib.compress(b"".join(chunk), 1)))
    return puts


def journal_lines(value: bytes) -> bytes:
    """The journal lines (or document) kept in one key's value, decompressed."""
    return zlib.decompress(value[len(_ZLIB) :]) if value.startswith(_ZLIB) else value


def _chunks(
    ops: list[dict[str, Any]], max_ops: int, max_bytes: int
) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    size = 0
    for op in ops:
        n = len(op["request_put"]["value"]) * 3 // 4 + 64
        if chunk and (len(chunk) >= max_ops or size + n > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(op)
        size += n
    if chunk:
        yield chunk


def _json_doc(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
