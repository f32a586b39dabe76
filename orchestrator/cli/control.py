"""``drx approve``, ``drx deny``, ``drx abort``, ``drx done``: act on a running run from any
terminal, through its state (docs/reference.md, "Control from another terminal")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.app import StateDirOpt, StateUrlOpt, app, store_for

if TYPE_CHECKING:
    from orchestrator.record.events import JournalEvent
    from orchestrator.record.store import Store

#: how long a command waits for the running controller to answer (it acts within 1 s)
ANSWER_WAIT_S = 10.0

RunArg = Annotated[str, typer.Argument(help="The run: its id, or latest (the running one).")]
CommentOpt = Annotated[
    str | None, typer.Option("--comment", help="A comment recorded with the answer (evidence).")
]


@app.command()
def approve(
    run: RunArg = "latest",
    gate: Annotated[str | None, typer.Argument(help="The gate (when several wait).")] = None,
    comment: CommentOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
) -> None:
    """Approve a gate waiting in a running run (the first answer wins, terminal or command).

    Example: drx approve latest promote --comment "checked with the DBA"
    """
    _send("approve", run, gate, comment, state_dir, state_url)


@app.command()
def deny(
    run: RunArg = "latest",
    gate: Annotated[str | None, typer.Argument(help="The gate (when several wait).")] = None,
    comment: CommentOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
) -> None:
    """Deny a gate waiting in a running run: its step fails.

    Example: drx deny latest promote --comment "replica is behind"
    """
    _send("deny", run, gate, comment, state_dir, state_url)


@app.command()
def abort(
    run: RunArg = "latest",
    comment: CommentOpt = None,
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
) -> None:
    """Stop a running run as a first Ctrl-C would: nothing new starts, running commands end.

    Example: drx abort latest --comment "wrong window"
    """
    _send("abort", run, None, comment, state_dir, state_url)


@app.command()
def done(
    run: Annotated[str, typer.Argument(help="The run: its id, or latest.")],
    step: Annotated[str, typer.Argument(help="A step that has not started.")],
    comment: Annotated[
        str, typer.Option("--comment", help="What was done by hand (required: evidence).")
    ],
    state_dir: StateDirOpt = None,
    state_url: StateUrlOpt = None,
) -> None:
    """Mark a step that has not started as done by hand: its dependents proceed, and a
    failback does not undo it.

    Example: drx done latest dns --comment "switched DNS in the registrar's console"
    """
    _send("done", run, step, comment, state_dir, state_url)


def _send(
    action: str,
    run: str,
    target: str | None,
    comment: str | None,
    state_dir: str | None,
    state_url: str | None,
) -> None:
    from orchestrator.errors import RefusedError
    from orchestrator.record.control import Request, channel_for, new_request_id
    from orchestrator.run.runner import operator_identity

    store = store_for(state_dir, state_url)
    run_id = running_run(store, run)
    events = store.read_events(run_id)
    check_target(action, run_id, target, events)
    req = Request(new_request_id(), action, target, operator_identity(), f"drx {action}", comment)
    channel = channel_for(store)
    channel.send(run_id, req)
    answer = channel.wait_answer(run_id, req.id, ANSWER_WAIT_S)
    if answer is None:
        raise RefusedError(
            f"the controller of run {run_id} did not answer within {ANSWER_WAIT_S:.0f}s "
            "(is it still running?)"
        )
    if not answer.get("ok"):
        raise RefusedError(f"run {run_id}: {answer.get('message')}")
    target = answer.get("target") or target
    what = {
        "approve": f"approved gate {target or ''}",
        "deny": f"denied gate {target or ''}",
        "abort": "aborted",
        "done": f"marked step {target} done by hand",
    }[action]
    typer.echo(f"run {run_id}: {' '.join(what.split())} (as {req.by})")


def running_run(store: Store, run: str) -> str:
    """The id of the run ``run`` names (``latest``: the running one), refusing (exit 2) a
    run that is unknown or not running."""
    from orchestrator.errors import RefusedError, UsageError

    if run == "latest":
        running = store.read_state().running
        ids = store.run_ids()
        if isinstance(running, str) and running:
            run = running
        elif ids:
            run = ids[-1]
        else:
            raise UsageError(f"no runs in {store.location}")
    elif not store.has_run(run):
        raise UsageError(f"no run '{run}' in {store.location}")
    summary = store.read_summary(run)
    if summary is not None:
        raise RefusedError(f"run {run} is not running (it ended {summary.status})")
    holder = store.lock_holder() or ""
    if run not in holder:
        raise RefusedError(
            f"run {run} is not running: no controller holds it (it stopped without its "
            "summary; drx resume carries it on)"
        )
    return run


def check_target(action: str, run_id: str, target: str | None, events: list[JournalEvent]) -> None:
    """Refuse (exit 2) a gate or step the run does not have, or a step already started. The
    controller checks again when it acts (the first answer wins)."""
    from orchestrator.errors import RefusedError
    from orchestrator.record.events import RunStarted, StepStarted

    if target is None or action == "abort":
        return
    start = events[0] if events and isinstance(events[0], RunStarted) else None
    steps = {s["id"]: s for s in start.steps} if start is not None else {}
    if action in ("approve", "deny"):
        from orchestrator.kinds import kind_of

        gates = [sid for sid, s in steps.items() if kind_of(str(s.get("kind"))).gate]
        if target not in gates:
            raise RefusedError(
                f"run {run_id} has no gate '{target}' (gates: {', '.join(gates) or 'none'}; "
                f"waiting: {', '.join(waiting_gates(events)) or 'none'})"
            )
        return
    if target not in steps:
        raise RefusedError(f"run {run_id} has no step '{target}'")
    if any(isinstance(e, StepStarted) and e.step == target for e in events):
        raise RefusedError(f"run {run_id}: step '{target}' has already started")


def waiting_gates(events: list[JournalEvent]) -> list[str]:
    """The gates asking now, from the journal."""
    from orchestrator.record.fold import WAITING, RunState

    return [sid for sid, st in RunState.of(events).steps.items() if st.status == WAITING]
