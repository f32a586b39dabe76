"""When a failover that did not succeed is rolled back at once (docs/reference.md, "drills"):
in a drill always; otherwise as the runbook's ``on_failure`` says, never under ``--emergency``
(the source is gone) unless asked for, and never when the operator turned it off."""

from __future__ import annotations

from orchestrator.model.runbook import RunbookOnFailure
from orchestrator.vocab import RunStatus

#: run statuses a rollback follows (a crashed run has no controller left to roll it back)
ROLLED_BACK = (RunStatus.FAILED, RunStatus.CANCELLED)


def rollback_due(
    status: str,
    policy: RunbookOnFailure,
    *,
    drill: bool = False,
    emergency: bool = False,
    asked: bool | None = None,
) -> bool:
    """Whether a failover that ended ``status`` is rolled back now. ``asked``: ``--rollback``
    (True), ``--no-rollback`` (False), neither (None)."""
    if status not in ROLLED_BACK:
        return False
    if drill:
        return True
    if asked is not None:
        return asked
    return policy is RunbookOnFailure.ROLLBACK and not emergency
