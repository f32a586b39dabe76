"""From a run's journal to its ``summary.json``: per-step and per-host timing, the measured RTO
and RPO, time at manual gates, and the measured critical path.

Everything is derived from journal events alone, so a run whose controller died (no summary of its
own) is reported the same way, as ``crashed``.
"""

from __future__ import annotations

from typing import Any

from orchestrator.record.events import Event

POLLS_IN_SUMMARY = 200


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def build_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary.json document of the run journaled by ``events``."""
    if not events or events[0]["event"] != Event.RUN_STARTED:
        raise ValueError("journal does not start with run_started")
    start = events[0]
    meta_steps: list[dict[str, Any]] = start.get("steps", [])
    steps: dict[str, dict[str, Any]] = {}
    for m in meta_steps:
        steps[m["id"]] = {
            "id": m["id"],
            "name": m.get("name", m["id"]),
            "kind": m.get("kind", "command"),
            "status": "not_run",
            "started_at": None,
            "finished_at": None,
            "duration_s": None,
            "start_offset_s": None,
            "attempts": 0,
            "needs": m.get("needs", []),
            "undo_of": m.get("undo_of"),
            "wave": m.get("wave"),
            "error": None,
            "carried_from": None,
            "outcome_unknown": False,
            "manual_wait_s": None,
            "approved_by": None,
            "value": None,
            "message": None,
            "hosts": [],
            "_t0": None,
            "_t1": None,
            "_hosts": {},
        }
    host_order: dict[str, int] = {}
    for i, h in enumerate(start.get("host_order", [])):
        host_order[h] = i
    health_polls = 0
    health_held: dict[str, Any] | None = None
    health_timed_out = False
    steps_done_t: float | None = None
    health_started_t: float | None = None
    finished: dict[str, Any] | None = None
    manual_wait = 0.0
    for e in events:
        kind = e["event"]
        sid = e.get("step")
        st = steps.get(sid) if sid else None
        if kind == Event.STEP_STARTED and st is not None:
            st["_t0"], st["started_at"], st["status"] = e["t"], e["ts"], "unknown"
        elif kind == Event.STEP_FINISHED and st is not None:
            st["_t1"], st["finished_at"] = e["t"], e["ts"]
            st["status"] = e["status"]
            for key in ("error", "value", "message"):
                if e.get(key) is not None:
                    st[key] = e[key]
            st["attempts"] = max(st["attempts"], e.get("attempts") or 0)
            st["outcome_unknown"] = bool(e.get("outcome_unknown"))
        elif kind == Event.STEP_CARRIED and st is not None:
            st.update(status="succeeded", carried_from=e.get("from_run"), value=e.get("value"))
            st["attempts"] = e.get("attempts", 0)
            for h in e.get("hosts", []):
                st["_hosts"][h["host"]] = {
                    "host": h["host"],
                    "rc": h.get("rc"),
                    "duration_s": h.get("duration_s"),
                    "output_tail": h.get("output_tail", ""),
                    "error": None,
                    "status": "succeeded",
                    "attempts": [],
                }
        elif kind == Event.HOST_STARTED and st is not None:
            host = st["_hosts"].setdefault(
                e["host"],
                {
                    "host": e["host"],
                    "rc": None,
                    "duration_s": None,
                    "output_tail": "",
                    "error": None,
                    "status": "unknown",
                    "attempts": [],
                },
            )
            host["status"] = "unknown"
            host["attempts"].append(
                {
                    "n": e.get("attempt", len(host["attempts"]) + 1),
                    "started_at": e["ts"],
                    "finished_at": None,
                    "_t0": e["t"],
                    "start_offset_s": None,
                    "duration_s": None,
                    "rc": None,
                    "error": None,
                    "polls": [],
                }
            )
        elif kind == Event.POLL and st is not None:
            host = st["_hosts"].get(e["host"])
            if host and host["attempts"] and len(host["attempts"][-1]["polls"]) < POLLS_IN_SUMMARY:
                host["attempts"][-1]["polls"].append(
                    {"_t": e["t"], "duration_s": e.get("duration_s"), "ok": e.get("ok")}
                )
        elif kind == Event.HOST_FINISHED and st is not None:
            host = st["_hosts"].get(e["host"])
            if host is None or not host["attempts"]:
                continue
            att = host["attempts"][-1]
            att.update(finished_at=e["ts"], duration_s=e.get("duration_s"), rc=e.get("rc"))
            att["error"] = e.get("error")
            host.update(
                rc=e.get("rc"),
                error=e.get("error"),
                status=e.get("status"),
                output_tail=e.get("output_tail", ""),
            )
            host["duration_s"] = _r(
                sum(a["duration_s"] or 0 for a in host["attempts"] if a["duration_s"] is not None)
            )
            host["value"] = e.get("value")
        elif kind == Event.GATE_WAITING and st is not None:
            st["prompt"] = e.get("prompt")
        elif kind == Event.GATE_ANSWERED and st is not None:
            waited = float(e.get("waited_s") or 0.0)
            manual_wait += waited
            st["manual_wait_s"] = _r(waited)
            st["approved_by"] = e.get("by") if e.get("approved") else None
        elif kind == Event.STEPS_DONE:
            steps_done_t = e["t"]
        elif kind == Event.HEALTH_POLLING:
            health_started_t = e["t"]
        elif kind == Event.POLL and sid and sid.startswith("health:"):
            health_polls += 1
        elif kind == Event.HEALTH_HELD:
            health_held = e
        elif kind == Event.HEALTH_TIMEOUT:
            health_timed_out = True
        elif kind == Event.RUN_FINISHED:
            finished = e
    # RTO start: rto_start's start, else the first step that started in this run
    rto_step = start.get("rto_start")
    started = [s for s in steps.values() if s["_t0"] is not None]
    t_start: float | None = None
    start_step: str | None = None
    if rto_step and steps.get(rto_step, {}).get("_t0") is not None:
        t_start, start_step = steps[rto_step]["_t0"], rto_step
    elif started:
        first = min(started, key=lambda s: s["_t0"])
        t_start, start_step = first["_t0"], first["id"]
    for s in steps.values():
        if s["_t0"] is not None and t_start is not None:
            s["start_offset_s"] = _r(s["_t0"] - t_start)
        if s["_t0"] is not None and s["_t1"] is not None:
            s["duration_s"] = _r(s["_t1"] - s["_t0"])
        hosts = sorted(s["_hosts"].values(), key=lambda h: host_order.get(h["host"], 10**9))
        for h in hosts:
            for a in h["attempts"]:
                if t_start is not None:
                    a["start_offset_s"] = _r(a["_t0"] - t_start)
                    for p in a["polls"]:
                        p["start_offset_s"] = _r(p.pop("_t") - t_start)
                else:
                    for p in a["polls"]:
                        p.pop("_t", None)
                a.pop("_t0", None)
        s["hosts"] = hosts
        if s["kind"] in ("command", "check") and s["status"] not in ("not_run", "skipped"):
            s["attempts"] = max(
                [s["attempts"], *(len(h["attempts"]) for h in hosts)], default=s["attempts"]
            )
    status = finished["status"] if finished else "crashed"
    # the end of the RTO: health first holding, else (no health) the end of the last step
    t_end: float | None = None
    if status == "succeeded" or (finished and finished.get("rto_reached")):
        if health_held is not None:
            t_end = health_held["t"]
        elif steps_done_t is not None:
            t_end = max((s["_t1"] for s in started if s["_t1"] is not None), default=steps_done_t)
    measured = _r(t_end - t_start) if t_end is not None and t_start is not None else None
    if t_end is not None and t_start is None:
        measured = 0.0
    target = start.get("rto_target_s")
    rto: dict[str, Any] = {
        "measured_s": measured,
        "target_s": target,
        "met": (measured <= target) if measured is not None and target is not None else None,
        "start_step": start_step,
        "predicted_s": start.get("predicted_rto_s"),
    }
    if start.get("parent_start_wall") is not None and t_end is not None:
        rto["end_to_end_s"] = _r(start["wall0"] + t_end - start["parent_start_wall"])
    rpo = _rpo(start, steps)
    critical = _critical_path(steps)
    summary: dict[str, Any] = {
        "run_id": start["run_id"],
        "runbook": start["runbook"],
        "direction": start["direction"],
        "source": start["source"],
        "target": start["target"],
        "parent_run": start.get("parent_run"),
        "status": status,
        "emergency": bool(start.get("emergency")),
        "started_at": start["ts"],
        "finished_at": finished["ts"] if finished else (events[-1]["ts"] if events else None),
        "rto": rto,
        "rpo": rpo,
        "manual_wait_s": _r(manual_wait),
        "critical_path": critical,
        "steps": [],
        "health": None,
        "exit_code": finished.get("exit_code") if finished else None,
        "yes": bool(start.get("yes")),
        "runbook_file": start.get("runbook_file"),
        "inventory_file": start.get("inventory_file"),
        "rto_started_at": None,
        "moves_to": start.get("moves_to"),
        "resumed_by": None,
    }
    if t_start is not None:
        summary["rto_started_at"] = _wall(start, t_start)
    if finished and finished.get("message"):
        summary["message"] = finished["message"]
    if start.get("health_names"):
        held_offset = (
            _r(health_held["t"] - t_start) if health_held and t_start is not None else None
        )
        base = health_started_t if health_started_t is not None else steps_done_t
        summary["health"] = {
            "held_at": health_held["ts"] if health_held else None,
            "polls": health_polls,
            "held_offset_s": held_offset,
            "duration_s": _r(health_held["t"] - base) if health_held and base is not None else None,
            "timed_out": health_timed_out,
        }
    for s in steps.values():
        for key in ("_t0", "_t1", "_hosts"):
            s.pop(key, None)
        summary["steps"].append(s)
    return summary


def _wall(start: dict[str, Any], t: float) -> str:
    from orchestrator.record.journal import utc_iso

    return utc_iso(start["wall0"] + t)


def _rpo(start: dict[str, Any], steps: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    name = start.get("rpo_step")
    target = start.get("rpo_target")
    if not name and target is None:
        return None
    value = steps.get(name, {}).get("value") if name else None
    if value is None and name:
        # the last value seen while polling, even if the check never held
        for h in steps[name].get("_hosts", {}).values():
            if h.get("value") is not None:
                value = h["value"]
    measured = (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    )
    met = measured <= target if measured is not None and target is not None else None
    if start.get("rpo_is_bytes"):
        return {"measured_bytes": measured, "target_bytes": target, "met": met, "step": name}
    return {"measured_s": measured, "target_s": target, "met": met, "step": name}


def _critical_path(steps: dict[str, dict[str, Any]]) -> list[str]:
    """From the step that finished last, repeatedly step back to the need that finished last."""
    timed = {sid: s for sid, s in steps.items() if s["_t1"] is not None}
    if not timed:
        return []
    current = max(timed.values(), key=lambda s: s["_t1"])
    path = [current["id"]]
    while True:
        needs = [timed[n] for n in current["needs"] if n in timed]
        if not needs:
            break
        current = max(needs, key=lambda s: s["_t1"])
        path.append(current["id"])
    path.reverse()
    return path
