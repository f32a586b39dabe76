"""The running controller's side of ``drx approve``/``deny``/``abort``/``done`` and the web
page's buttons: a thread that listens to the run's requests in the store, acts on each through
the executor, and answers it (docs/reference.md, "Control from another terminal")."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from orchestrator.record.control import Channel, Request
from orchestrator.run.executor import Answer, Executor


class ControlDesk:
    """Takes the requests of one run while it runs."""

    def __init__(self, channel: Channel, run_id: str, ex: Executor) -> None:
        self.channel = channel
        self.run_id = run_id
        self.ex = ex
        self._stop = threading.Event()
        #: who aborted the run from elsewhere, if anyone did
        self.aborted: Answer | None = None
        self._thread = threading.Thread(target=self._listen, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.channel.close()
        self._thread.join(timeout=2.0)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                self.channel.listen(self.run_id, self._take, self._stop)
            except Exception:  # the store briefly gone: listen again (the run goes on)
                self._stop.wait(0.5)

    def _take(self, req: Request) -> None:
        why, target = self.act(req)
        answer: dict[str, Any] = {"ok": why is None, "message": why or "done", "target": target}
        with contextlib.suppress(Exception):  # the requester then says nobody answered
            self.channel.answer(self.run_id, req.id, answer)

    def act(self, req: Request) -> tuple[str | None, str | None]:
        """Do what ``req`` asks: (why not (None: done), the gate or step it acted on)."""
        ex = self.ex
        who = Answer(req.action == "approve", req.by, req.via, req.comment)
        if req.action in ("approve", "deny"):
            gate = req.target or _only(ex.waiting_gates())
            if gate is None:
                return _nothing_waits(ex.waiting_gates()), None
            why = ex.answer_gate(gate, who)
            if why is not None:
                return f"{why}; {_nothing_waits(ex.waiting_gates())}", gate
            return None, gate
        if req.action == "abort":
            if ex.stopping.is_set():
                return "the run is already stopping", None
            self.aborted = who
            ex.interrupt(by=req.by, via=req.via, comment=req.comment)
            return None, None
        if req.action == "done" and req.target:
            return ex.done_by_hand(req.target, who), req.target
        return f"unknown action '{req.action}'", None


def cancelled_message(desk: ControlDesk | None) -> str:
    """Why the run was cancelled: by the operator (Ctrl-C), or by whoever aborted it."""
    if desk is not None and desk.aborted is not None:
        return desk.aborted.sentence("cancelled")
    return "cancelled by the operator"


def _only(gates: list[str]) -> str | None:
    return gates[0] if len(gates) == 1 else None


def _nothing_waits(gates: list[str]) -> str:
    if not gates:
        return "no gate is waiting"
    return "waiting: " + ", ".join(gates) + " (name the gate)"
