"""A small etcd v3 client over etcd's HTTP/JSON gateway (``/v3/…`` on the client port).

What the shared store needs from etcd is narrow: ranges over a prefix (paged), transactions
that compare a key's create revision, and lease grant / keep-alive / time-to-live / revoke —
all reached, as Patroni reaches them, through the gateway rather than a gRPC stack. The
maintained gateway client, etcd3gw, talks to one endpoint only (no failover across members),
has no user/password authentication, and its transactions are raw JSON anyway; so this is a
thin layer on urllib3 (Patroni's HTTP library too): thread-safe connection pools per member,
TLS with client certificates, and a deadline per request.

Every call has a deadline (``timeout``): the whole call, failing over across the endpoints
included, ends within it or raises ``StoreUnavailable``. An endpoint that refuses or times out,
or a member that answers "no leader" / "request timed out", sends the call on to the next one;
the member that answered last is tried first next time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3

from orchestrator.errors import StoreError, StoreUnavailable

#: gRPC status codes that mean "this member cannot serve now; another may" (Unavailable,
#: DeadlineExceeded, Aborted, ResourceExhausted)
_RETRY_CODES = frozenset({14, 4, 10, 8})
_UNAUTHENTICATED = 16
#: pause after every endpoint failed fast (connection refused), before the next round
_ROUND_PAUSE_S = 0.05
#: keys a page of a range returns
PAGE = 1000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


class EtcdRequestError(StoreError):
    """The store answered, with an error (``code`` is the gRPC status code)."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(f"etcd: {message} (code {code})")


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(
            unb64(kv.get("key")),
            unb64(kv.get("value")),
            int(kv.get("create_revision", 0)),
            int(kv.get("mod_revision", 0)),
            int(kv.get("lease", 0)),
        )


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]

    def ranges(self) -> list[KeyValue]:
        """The key-values read by the range operations of the branch that ran."""
        out: list[KeyValue] = []
        for r in self.responses:
            for kv in (r.get("response_range") or {}).get("kvs", []):
                out.append(KeyValue.from_json(kv))
        return out


# -- transaction operations (the gateway's JSON form of etcdserverpb.RequestOp / Compare) --------


def op_put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def op_range(key: bytes, *, prefix: bool = False) -> dict[str, Any]:
    req: dict[str, Any] = {"key": b64(key)}
    if prefix:
        req["range_end"] = b64(prefix_end(key))
    return {"request_range": req}


def op_delete(key: bytes, *, prefix: bool = False) -> dict[str, Any]:
    req: dict[str, Any] = {"key": b64(key)}
    if prefix:
        req["range_end"] = b64(prefix_end(key))
    return {"request_delete_range": req}


def cmp_create_revision(key: bytes, revision: int) -> dict[str, Any]:
    """Holds while ``key``'s create revision is ``revision`` (0: the key does not exist)."""
    return {
        "key": b64(key),
        "target": "CREATE",
        "result": "EQUAL",
        "create_revision": str(revision),
    }


@dataclass(frozen=True)
class TLS:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


#: the first pause of a patient call's retries, and the longest
_BACKOFF_FIRST_S = 0.2
_BACKOFF_MAX_S = 1.0


def _to_stderr(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


class EtcdClient:
    """Calls to an etcd cluster through its gateway, failing over across ``endpoints``
    (``host:port``); thread-safe."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float,
        tls: TLS | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise StoreError("etcd: no endpoints")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.scheme = "https" if tls is not None else "http"
        self._user = user
        self._password = password
        self._token: str | None = None
        self._preferred = 0
        self._lock = threading.Lock()
        #: how long a call that found no endpoint keeps trying (with backoff) before it gives
        #: up: an election after the leader was lost takes 1-2 s. Spent once per client: after
        #: a call gave up, the next ones fail at their own deadline.
        self.patience_s = 0.0
        #: told (once) that calls are being retried, and why
        self.on_retry: Callable[[str], None] = _to_stderr
        self._told = False
        if tls is not None:
            self._http = urllib3.PoolManager(
                num_pools=len(self.endpoints) + 1,
                maxsize=8,
                retries=False,
                cert_reqs="CERT_REQUIRED",
                ca_certs=tls.ca,
                cert_file=tls.cert,
                key_file=tls.key,
            )
        else:
            self._http = urllib3.PoolManager(
                num_pools=len(self.endpoints) + 1, maxsize=8, retries=False
            )

    # -- transport ------------------------------------------------------------------------------
    def call(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> Any:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that serves it within the
        deadline (and, while ``patience_s`` lasts, again with backoff); returns the decoded
        answer."""
        try:
            return self._call_once(path, body, timeout)
        except StoreUnavailable as exc:
            if self.patience_s <= 0:
                raise
            patience, self.patience_s = self.patience_s, 0.0
            give_up = time.monotonic() + patience
            if not self._told:
                self._told = True
                self.on_retry(f"{exc}; retrying for up to {patience:.0f}s (an etcd election?)")
            pause = _BACKOFF_FIRST_S
            while True:
                time.sleep(max(0.0, min(pause, give_up - time.monotonic())))
                try:
                    answer = self._call_once(path, body, timeout)
                except StoreUnavailable as again:
                    if time.monotonic() >= give_up:
                        raise StoreUnavailable(f"{again}; gave up after {patience:.0f}s") from None
                    pause = min(pause * 2, _BACKOFF_MAX_S)
                    continue
                self.patience_s = patience  # answered: the next outage gets its patience too
                return answer

    def _call_once(self, path: str, body: dict[str, Any], timeout: float | None) -> Any:
        if self._user is not None and self._token is None and path != "auth/authenticate":
            self._authenticate(timeout)
        try:
            return self._call(path, body, timeout)
        except EtcdRequestError as exc:
            if exc.code != _UNAUTHENTICATED or self._user is None:
                raise
        self._authenticate(timeout)  # the token expired: once more with a new one
        return self._call(path, body, timeout)

    def _call(self, path: str, body: dict[str, Any], timeout: float | None) -> Any:
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = self._token
        n = len(self.endpoints)
        first = self._preferred
        last_problem = "no endpoint tried"
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreUnavailable(
                    f"etcd: no endpoint of {','.join(self.endpoints)} answered within "
                    f"{budget:.2f}s ({last_problem})"
                )
            index = (first + attempt) % n
            left_this_round = n - attempt % n
            # share what is left among the endpoints not yet tried this round, so that one
            # hung member cannot eat the whole deadline
            per_try = max(min(remaining, 0.05), remaining / left_this_round)
            endpoint = self.endpoints[index]
            attempt += 1
            try:
                resp = self._http.request(
                    "POST",
                    f"{self.scheme}://{endpoint}/v3/{path}",
                    body=data,
                    headers=headers,
                    timeout=urllib3.Timeout(total=per_try),
                    retries=False,
                )
            except urllib3.exceptions.HTTPError as exc:
                last_problem = f"{endpoint}: {_short(exc)}"
            else:
                answer = _decode(resp.data)
                error = _error_of(answer) if resp.status != 200 or "error" in answer else None
                if error is None:
                    self._preferred = index
                    return answer
                code, message = error
                if code not in _RETRY_CODES and resp.status < 500:
                    self._preferred = index
                    raise EtcdRequestError(code, message)
                last_problem = f"{endpoint}: {message}"
            if attempt % n == 0:  # a whole round failed: rest briefly before the next
                time.sleep(min(_ROUND_PAUSE_S, max(0.0, deadline - time.monotonic())))

    def _authenticate(self, timeout: float | None) -> None:
        with self._lock:
            self._token = None
            answer = self._call(
                "auth/authenticate",
                {"name": self._user, "password": self._password or ""},
                timeout,
            )
            self._token = answer.get("token")

    def close(self) -> None:
        self._http.clear()

    # -- key-value --------------------------------------------------------------------------------
    def get(self, key: bytes, *, timeout: float | None = None) -> KeyValue | None:
        answer = self.call("kv/range", {"key": b64(key)}, timeout=timeout)
        kvs = answer.get("kvs") or []
        return KeyValue.from_json(kvs[0]) if kvs else None

    def range_prefix(
        self, prefix: bytes, *, keys_only: bool = False, timeout: float | None = None
    ) -> Iterator[KeyValue]:
        """Every key under ``prefix`` in key order, read a page at a time at one revision."""
        start, end = prefix, prefix_end(prefix)
        revision = 0
        while True:
            body: dict[str, Any] = {
                "key": b64(start),
                "range_end": b64(end),
                "limit": str(PAGE),
                "sort_order": "ASCEND",
                "sort_target": "KEY",
                "keys_only": keys_only,
            }
            if revision:
                body["revision"] = str(revision)
            answer = self.call("kv/range", body, timeout=timeout)
            revision = revision or int(answer.get("header", {}).get("revision", 0))
            kvs = [KeyValue.from_json(kv) for kv in answer.get("kvs") or []]
            yield from kvs
            if not answer.get("more") or not kvs:
                return
            start = kvs[-1].key + b"\0"

    def range_prefix_at(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` (one page: a few keys) and the store's revision then,
        from which a :class:`Watch` carries on."""
        answer = self.call("kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))})
        kvs = [KeyValue.from_json(kv) for kv in answer.get("kvs") or []]
        return kvs, int(answer.get("header", {}).get("revision", 0))

    def put(self, key: bytes, value: bytes, *, timeout: float | None = None) -> int:
        answer = self.call("kv/put", {"key": b64(key), "value": b64(value)}, timeout=timeout)
        return int(answer.get("header", {}).get("revision", 0))

    def delete_prefix(self, prefix: bytes, *, timeout: float | None = None) -> int:
        answer = self.call(
            "kv/deleterange",
            {"key": b64(prefix), "range_end": b64(prefix_end(prefix))},
            timeout=timeout,
        )
        return int(answer.get("deleted", 0))

    def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        answer = self.call(
            "kv/txn",
            {"compare": compare, "success": success, "failure": failure or []},
            timeout=timeout,
        )
        return TxnResult(
            bool(answer.get("succeeded")),
            int(answer.get("header", {}).get("revision", 0)),
            list(answer.get("responses") or []),
        )

    # -- leases -----------------------------------------------------------------------------------
    def lease_grant(self, ttl: int, *, timeout: float | None = None) -> int:
        answer = self.call("lease/grant", {"TTL": str(ttl), "ID": "0"}, timeout=timeout)
        if answer.get("error"):
            raise EtcdRequestError(0, str(answer["error"]))
        return int(answer["ID"])

    def lease_keepalive(self, lease: int, *, timeout: float | None = None) -> int:
        """Renew ``lease``; its new TTL, or 0 when the store says the lease is gone."""
        try:
            answer = self.call("lease/keepalive", {"ID": str(lease)}, timeout=timeout)
        except EtcdRequestError as exc:
            if exc.code == 5:  # NotFound: "requested lease not found"
                return 0
            raise
        result = answer.get("result", answer)
        return int(result.get("TTL", 0))

    def lease_time_left(self, lease: int, *, timeout: float | None = None) -> int:
        """Seconds the lease has left (rounded down by etcd), or -1 when it is gone."""
        answer = self.call("lease/timetolive", {"ID": str(lease)}, timeout=timeout)
        return int(answer.get("TTL", -1))

    def lease_revoke(self, lease: int, *, timeout: float | None = None) -> None:
        try:
            self.call("lease/revoke", {"ID": str(lease)}, timeout=timeout)
        except EtcdRequestError as exc:
            if exc.code != 5:
                raise

    # -- cluster ----------------------------------------------------------------------------------
    def member_status(self, endpoint: str, *, timeout: float | None = None) -> dict[str, Any]:
        """``maintenance/status`` of one member (its id, the leader it knows, raft term)."""
        resp = self._http.request(
            "POST",
            f"{self.scheme}://{endpoint}/v3/maintenance/status",
            body=b"{}",
            headers={"Content-Type": "application/json"},
            timeout=urllib3.Timeout(total=timeout or self.timeout),
            retries=False,
        )
        answer: dict[str, Any] = _decode(resp.data)
        return answer


class Watch:
    """A watch on every key under a prefix, through the gateway's streaming ``/v3/watch``: the
    member pushes each change as it happens (one JSON message a line), nothing is polled. A
    stream that breaks (a member gone) is opened again on the next endpoint, from the revision
    after the last one seen, so no change is missed or seen twice."""

    #: a stream idle this long is opened again (a half-open connection is noticed)
    IDLE_S = 30.0

    def __init__(self, client: EtcdClient, prefix: bytes, start_revision: int) -> None:
        self.client = client
        self.prefix = prefix
        self.next_revision = start_revision
        self._closed = threading.Event()
        self._resp: Any = None

    def close(self) -> None:
        self._closed.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()
            with contextlib.suppress(Exception):
                resp.release_conn()

    def events(self) -> Iterator[KeyValue]:
        """Each key put under the prefix, in revision order, until :meth:`close`."""
        client = self.client
        attempt = 0
        while not self._closed.is_set():
            endpoint = client.endpoints[(client._preferred + attempt) % len(client.endpoints)]
            body = {
                "create_request": {
                    "key": b64(self.prefix),
                    "range_end": b64(prefix_end(self.prefix)),
                    "start_revision": str(self.next_revision),
                }
            }
            headers = {"Content-Type": "application/json"}
            if client._token is not None:
                headers["Authorization"] = client._token
            try:
                self._resp = client._http.request(
                    "POST",
                    f"{client.scheme}://{endpoint}/v3/watch",
                    body=json.dumps(body).encode(),
                    headers=headers,
                    timeout=urllib3.Timeout(connect=client.timeout, read=self.IDLE_S),
                    retries=False,
                    preload_content=False,
                )
                if self._closed.is_set():
                    return
                while True:
                    line = self._resp.readline()
                    if not line:
                        break
                    yield from self._changes(line)
                    attempt = 0
            except (urllib3.exceptions.HTTPError, OSError, ValueError):
                pass
            finally:
                if self._resp is not None:
                    with contextlib.suppress(Exception):
                        self._resp.release_conn()
            attempt += 1
            self._closed.wait(_ROUND_PAUSE_S)

    def _changes(self, line: bytes) -> list[KeyValue]:
        message = json.loads(line)
        result = message.get("result") or {}
        if "error" in message:
            raise ValueError(str(message["error"]))
        out = []
        for event in result.get("events") or []:
            if event.get("type", "PUT") != "PUT":
                continue
            kv = KeyValue.from_json(event.get("kv") or {})
            self.next_revision = max(self.next_revision, kv.mod_revision + 1)
            out.append(kv)
        return out


def _decode(data: bytes) -> Any:
    """The JSON answer; a keep-alive answers as a stream (one object, maybe several lines)."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        first = text.splitlines()[0]
        try:
            return json.loads(first)
        except ValueError:
            return {"error": text[:200], "code": 2}


def _error_of(answer: Any) -> tuple[int, str] | None:
    if not isinstance(answer, dict):
        return 2, "unreadable answer"
    err = answer.get("error")
    if isinstance(err, dict):  # a streaming call's error
        return int(err.get("grpc_code") or err.get("code") or 2), str(err.get("message", err))
    if err is None and "code" not in answer:
        return None
    return int(answer.get("code", 2)), str(answer.get("message") or err)


def _short(exc: Exception) -> str:
    text = str(exc)
    reason = getattr(exc, "reason", None)
    if reason is not None:
        text = str(reason)
    return text.split(": ", 1)[-1][:160]
