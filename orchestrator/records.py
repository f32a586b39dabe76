"""Reading runs back from the state directory: summaries (or, for a run whose controller died,
a summary reconstructed from its journal), and the queries failback/resume/report need."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.errors import JournalError, RefusedError, UsageError
from orchestrator.journal import read_journal
from orchestrator.state import runs_dir
from orchestrator.timing import build_summary


def run_ids(state_dir: Path) -> list[str]:
    """Every run id, oldest first (ids sort by start time)."""
    base = runs_dir(state_dir)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "journal.jsonl").is_file())


def load_summary(state_dir: Path, run_id: str) -> dict[str, Any]:
    """A run's summary: summary.json, else rebuilt from its journal (status ``crashed``)."""
    run_dir = runs_dir(state_dir) / run_id
    path = run_dir / "summary.json"
    if path.is_file():
        try:
            summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return summary
        except ValueError:
            pass  # a torn summary: the journal is the record
    events = load_events(state_dir, run_id)
    try:
        return build_summary(events)
    except (ValueError, KeyError) as exc:
        raise JournalError(f"run {run_id}: journal cannot be read back: {exc}") from exc


def load_events(state_dir: Path, run_id: str) -> list[dict[str, Any]]:
    path = runs_dir(state_dir) / run_id / "journal.jsonl"
    if not path.is_file():
        raise UsageError(f"no run '{run_id}' in {state_dir}")
    return read_journal(path)


def load_summaries(state_dir: Path) -> list[dict[str, Any]]:
    """Every readable run's summary, oldest first; links (failed back, resumed) filled in."""
    summaries = []
    for run_id in run_ids(state_dir):
        try:
            summaries.append(load_summary(state_dir, run_id))
        except JournalError:
            continue
    by_id = {s["run_id"]: s for s in summaries}
    for s in summaries:
        parent = by_id.get(s.get("parent_run") or "")
        if parent is None:
            continue
        if s["direction"] == "failback":
            parent.setdefault("failed_back_by", []).append(s["run_id"])
        else:
            parent.setdefault("resumed_by_runs", []).append(s["run_id"])
    return summaries


def resolve_run(state_dir: Path, run_id: str | None) -> str:
    """A run id given in full or as a unique prefix/suffix; default the latest run."""
    ids = run_ids(state_dir)
    if not ids:
        raise RefusedError(f"no runs in {state_dir}")
    if run_id is None:
        return ids[-1]
    if run_id in ids:
        return run_id
    matches = [i for i in ids if i.startswith(run_id) or i.endswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no run '{run_id}' in {state_dir}")
    raise UsageError(f"'{run_id}' matches several runs: {', '.join(matches)}")
