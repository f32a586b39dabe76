"""Copying history between stores: ``drx state push`` moves a local state directory's runs and
state into a shared store, so that a team switching to ``--state-url`` keeps the history its
RTO predictions come from."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.errors import RefusedError
from orchestrator.record.jsonfast import dumpb
from orchestrator.record.store import Store, document_json


@dataclass
class PushResult:
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the target
    state: str = "unchanged"  # "copied", "kept" (the target had its own), "unchanged"


def push_history(source: Store, target: Store, *, replace_state: bool = False) -> PushResult:
    """Copy every run of ``source`` missing from ``target`` (journal, plan, summary, as they
    are), then the state if ``target`` has none (or ``replace_state``). Refused while either
    store's lock is held: a run in progress would be copied half-way."""
    from orchestrator.record.etcd_store import EtcdStore

    if not isinstance(target, EtcdStore):
        raise RefusedError("drx state push copies into a shared store: give --state-url")
    for store in (source, target):
        holder = store.lock_holder()
        if holder is not None:
            raise RefusedError(
                f"a run holds the lock on {store.location} ({holder}); push when it has ended"
            )
    result = PushResult()
    present = set(target.run_ids())
    for run_id in source.run_ids():
        if run_id in present:
            result.skipped.append(run_id)
            continue
        events = source.read_journal(run_id)
        journal = b"".join(dumpb(e) + b"\n" for e in events)
        plan = source.read_plan_document(run_id)
        summary = source.read_summary_document(run_id)
        target.import_run(
            run_id,
            journal,
            document_json(plan) if plan is not None else None,
            document_json(summary) if summary is not None else None,
        )
        result.copied.append(run_id)
    state = source.read_state()
    if state:
        if target.read_state() and not replace_state:
            result.state = "kept"
        else:
            target.update_state(**state.fields())
            result.state = "copied"
    return result
