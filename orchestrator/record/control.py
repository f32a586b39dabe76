"""Control requests through the store: ``drx approve``/``deny``/``abort``/``done`` (and the web
page) ask a running run's controller to act, wherever that controller is
(docs/reference.md, "Control from another terminal").

A request is a small JSON document put beside the run; the controller watching the run acts on
it within a second and puts an answer beside it (taken, or refused and why), which the
requester waits for. In a state directory::

    .drx/runs/<run-id>/requests/<request-id>.request.json
    .drx/runs/<run-id>/requests/<request-id>.answer.json

and in etcd, under the store's prefix, ``runs/<run-id>/requests/<request-id>`` and
``runs/<run-id>/answers/<request-id>``. The controller polls a directory every 0.1 s and watches
etcd (the gateway's streaming ``/v3/watch``), so a request costs nothing while none comes.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.record.store import LocalStore, Store, private_dir, private_open

#: what a request may ask
ACTIONS = ("approve", "deny", "abort", "done")
#: how often the controller looks into a state directory for requests
POLL_S = 0.1


@dataclass(frozen=True)
class Request:
    """One request to a running run: ``target`` is the gate or step it names (abort: none)."""

    id: str
    action: str
    target: str | None
    by: str
    via: str
    comment: str | None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Request | None:
        try:
            raw = json.loads(data)
            req = cls(**{k: raw.get(k) for k in ("id", "action", "target", "by", "via", "comment")})
        except (ValueError, TypeError, AttributeError):
            return None
        if req.action not in ACTIONS or not isinstance(req.id, str):
            return None
        return req


def new_request_id() -> str:
    """Sortable by the time it was made, unique across requesters."""
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


class Channel(abc.ABC):
    """Requests and answers for the runs of one store."""

    @abc.abstractmethod
    def send(self, run_id: str, req: Request) -> None: ...

    @abc.abstractmethod
    def answer_of(self, run_id: str, request_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def answer(self, run_id: str, request_id: str, answer: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def listen(
        self, run_id: str, on_request: Callable[[Request], None], stop: threading.Event
    ) -> None:
        """Call ``on_request`` for every request of the run, the ones already there first,
        until ``stop`` is set (blocks: run it on a thread of its own)."""

    def close(self) -> None:  # noqa: B027 (most channels have nothing to stop)
        """Stop listening at once."""

    def wait_answer(self, run_id: str, request_id: str, timeout: float) -> dict[str, Any] | None:
        """The controller's answer, or None when it gave none within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.answer_of(run_id, request_id)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)


def channel_for(store: Store) -> Channel:
    if isinstance(store, LocalStore):
        return DirectoryChannel(store.state_dir)
    from orchestrator.record.etcd_store import EtcdStore

    if isinstance(store, EtcdStore):
        return EtcdChannel(store)
    return NoChannel()


class NoChannel(Channel):
    """A store with no way in for requests (a test's store in memory): none ever come."""

    def send(self, run_id: str, req: Request) -> None:
        raise TypeError("this store takes no requests")

    def answer(self, run_id: str, request_id: str, answer: dict[str, Any]) -> None:
        return None

    def answer_of(self, run_id: str, request_id: str) -> dict[str, Any] | None:
        return None

    def listen(
        self, run_id: str, on_request: Callable[[Request], None], stop: threading.Event
    ) -> None:
        stop.wait()


class DirectoryChannel(Channel):
    """Requests as files in the run's directory; the controller polls it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def _dir(self, run_id: str) -> Path:
        return self.state_dir / "runs" / run_id / "requests"

    def _put(self, path: Path, data: bytes) -> None:
        private_dir(path.parent, self.state_dir)
        tmp = path.with_name(path.name + ".tmp")
        fd = private_open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)  # readers see the whole request or none

    def send(self, run_id: str, req: Request) -> None:
        self._put(self._dir(run_id) / f"{req.id}.request.json", req.to_json())

    def answer(self, run_id: str, request_id: str, answer: dict[str, Any]) -> None:
        self._put(self._dir(run_id) / f"{request_id}.answer.json", json.dumps(answer).encode())

    def answer_of(self, run_id: str, request_id: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self._dir(run_id) / f"{request_id}.answer.json").read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def listen(
        self, run_id: str, on_request: Callable[[Request], None], stop: threading.Event
    ) -> None:
        seen: set[str] = set()
        directory = self._dir(run_id)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                for name in sorted(os.listdir(directory)):
                    if not name.endswith(".request.json") or name in seen:
                        continue
                    seen.add(name)
                    with contextlib.suppress(OSError):
                        req = Request.from_json((directory / name).read_bytes())
                        if req is not None:
                            on_request(req)
            stop.wait(POLL_S)


class EtcdChannel(Channel):
    """Requests as keys beside the run in etcd; the controller watches them."""

    def __init__(self, store: Any) -> None:
        from orchestrator.record.etcd_client import Watch

        self.store = store
        self._watch: Watch | None = None

    def send(self, run_id: str, req: Request) -> None:
        self.store.client.put(self.store.key(f"runs/{run_id}/requests/{req.id}"), req.to_json())

    def answer(self, run_id: str, request_id: str, answer: dict[str, Any]) -> None:
        from orchestrator.record.etcd_client import op_put

        key = self.store.key(f"runs/{run_id}/answers/{request_id}")
        data = json.dumps(answer).encode()
        if self.store.held is not None:  # fenced: only the run's holder answers for it
            self.store.held.write([op_put(key, data)])
        else:
            self.store.client.put(key, data)

    def answer_of(self, run_id: str, request_id: str) -> dict[str, Any] | None:
        kv = self.store.client.get(self.store.key(f"runs/{run_id}/answers/{request_id}"))
        if kv is None:
            return None
        with contextlib.suppress(ValueError):
            data = json.loads(kv.value)
            return data if isinstance(data, dict) else None
        return None

    def listen(
        self, run_id: str, on_request: Callable[[Request], None], stop: threading.Event
    ) -> None:
        from orchestrator.record.etcd_client import Watch

        prefix = self.store.key(f"runs/{run_id}/requests/")
        client = self.store.client
        existing, revision = client.range_prefix_at(prefix)
        for kv in existing:
            req = Request.from_json(kv.value)
            if req is not None:
                on_request(req)
        self._watch = Watch(client, prefix, revision + 1)
        if stop.is_set():
            return

        def close_on_stop() -> None:
            stop.wait()
            self.close()

        threading.Thread(target=close_on_stop, name="control-stop", daemon=True).start()
        for kv in self._watch.events():
            req = Request.from_json(kv.value)
            if req is not None:
                on_request(req)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
