"""The words a run is recorded in, shared by every layer: how a run ended and which way it moved
the service, a step's kind and status. Each is a ``StrEnum``, so summary.json, the journal and
every report keep the plain strings (docs/reference.md, "summary.json")."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """How a run ended (``status`` in summary.json and ``run_finished``)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"  # the controller died; the summary was rebuilt from the journal
    RUNNING = "running"  # a run still running, read back


class Direction(StrEnum):
    """Which way a run moves the service."""

    FAILOVER = "failover"
    FAILBACK = "failback"
    REPROTECT = "reprotect"  # drx reprotect: the mirrored failback's reprotect phase alone


class StepStatus(StrEnum):
    """The status of a step (or one host of it)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    NOT_RUN = "not_run"
    UNKNOWN = "unknown"
    DONE_BY_HAND = "done_by_hand"  # drx done: an operator did it; its dependents proceed
    RUNNING = "running"  # a step under way, in the summary of a run read back while it runs


class StepKind(StrEnum):
    COMMAND = "command"
    CHECK = "check"
    MANUAL = "manual"
    WAIT = "wait"
    RUNBOOK = "runbook"  # another runbook, expanded into this one's DAG (model/siteplan.py)
