"""``kind: runbook``: another runbook included in a site plan. It never runs as itself: the
loader expands it into the child's steps (model/siteplan.py), so what remains here are its
parse rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.kinds.base import Kind

if TYPE_CHECKING:
    from orchestrator.model.fields import Fields
    from orchestrator.model.yaml_source import LMap

#: what a ``kind: runbook`` step may say; the child's own steps do the rest
RUNBOOK_STEP_FIELDS = ("id", "name", "kind", "runbook", "vars", "needs", "when")


class IncludedRunbook(Kind):
    name = "runbook"
    doc = "`runbook` includes another runbook (`runbook`, see Site plans)"
    required = ("runbook",)
    listed = False  # a site plan's own word, not offered for a mistyped kind
    own_fields = ("runbook", "vars")

    def check_fields(self, f: Fields, data: LMap, *, undo: bool) -> None:
        if undo:
            f.error("kind", "an undo cannot be a runbook")
        for key in data:
            if key not in RUNBOOK_STEP_FIELDS:
                f.error(
                    key,
                    f"a kind: runbook step cannot have '{key}' (the child runbook's own steps "
                    "say where and what to run, and how to undo it)",
                )
        if data.get("runbook") is None:
            f.require("runbook")

    def own_values(self, f: Fields) -> dict[str, Any]:
        return {"runbook": f.text("runbook"), "vars": dict(f.mapping("vars"))}


KIND = IncludedRunbook()
