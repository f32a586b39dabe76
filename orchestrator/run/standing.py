"""Where a runbook's service stands between runs, read from its runs: a failover left half-way
(only ``drx resume`` or ``drx failback`` may go on from it), or a new failover that would reverse
the last one (``drx failback`` is the command for that). ``drx failover`` consults these rules
before it runs anything, and ``drx status`` prints the same next steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.kinds import kind_of
from orchestrator.model.inventory import Host
from orchestrator.record.events import RunStarted
from orchestrator.record.summary import RunSummary
from orchestrator.run import preflight
from orchestrator.transport import open_transport
from orchestrator.vocab import Direction, RunStatus, StepStatus

#: how a run ends when it stopped before it finished its work
STOPPED = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CRASHED)


@dataclass(frozen=True)
class HalfDone:
    """The latest run of a runbook: a failover that stopped after changing things, neither
    resumed nor failed back. The service is between its source and its target."""

    run: RunSummary
    changed: tuple[str, ...]  # the steps that had changed things (succeeded on some host)

    def ways_on(self, tail: str = "", *, source_unreachable: Sequence[str] = ()) -> list[str]:
        """The commands that go on from here (``tail``: options naming the same files and
        state). ``--emergency`` is offered only when the source's hosts cannot be reached."""
        rid = self.run.run_id
        ways = [
            f"drx resume {rid}{tail}   (carry on with the steps it did not finish)",
            f"drx failback {rid}{tail}   (undo what it did, back to {self.run.source})",
        ]
        if source_unreachable:
            ways.append(
                f"drx resume {rid}{tail} --emergency   (the source's hosts "
                f"{', '.join(source_unreachable)} cannot be reached: if {self.run.source} "
                "is really gone)"
            )
        return ways

    def describe(self) -> str:
        shown = ", ".join(self.changed[:6]) + (
            f" and {len(self.changed) - 6} more" if len(self.changed) > 6 else ""
        )
        return (
            f"failover {self.run.run_id} {self.run.status} half-way: {len(self.changed)} "
            f"step(s) had changed things ({shown}), so the service is between "
            f"{self.run.source} and {self.run.target}"
        )


def half_done_failover(summaries: Sequence[RunSummary], runbook: str) -> HalfDone | None:
    """The half-done failover ``runbook``'s service is left in, if its latest run is one.

    ``summaries`` as ``load_summaries`` returns them (oldest first, links filled in). A failover
    that stopped before any step changed anything leaves nothing half-done."""
    mine = [s for s in summaries if s.runbook == runbook]
    if not mine:
        return None
    last = mine[-1]
    if last.direction != Direction.FAILOVER or last.status not in STOPPED:
        return None
    if last.resumed_by or last.failed_back_by:
        return None
    changed = tuple(
        s.id
        for s in last.steps
        if kind_of(s.kind).changes_hosts  # checks, gates and waits change nothing
        and (
            s.status == StepStatus.SUCCEEDED
            or s.outcome_unknown
            or any(h.status in (StepStatus.SUCCEEDED, StepStatus.UNKNOWN) for h in s.hosts)
        )
    )
    return HalfDone(last, changed) if changed else None


@dataclass(frozen=True)
class WrongWay:
    """A failover back to where the last (succeeded) failover came from: it reverses it."""

    last: RunSummary

    def message(self, site: str, tail: str = "") -> str:
        return (
            f"a failover to {site} reverses the last failover, {self.last.run_id} "
            f"({self.last.source} → {self.last.target}): `drx failback{tail}` is the command for "
            "it (it records the pair and undoes that run's steps in reverse order); nothing was "
            "run (use --force to run a new failover anyway)"
        )


def wrong_way(
    summaries: Sequence[RunSummary], runbook: str, site: str, active: str
) -> WrongWay | None:
    """When ``runbook``'s latest run is a succeeded failover to ``active`` from ``site`` that
    nothing reversed since, a failover to ``site`` would reverse it."""
    mine = [s for s in summaries if s.runbook == runbook]
    if not mine:
        return None
    last = mine[-1]
    if (
        last.direction == Direction.FAILOVER
        and last.status == RunStatus.SUCCEEDED
        and last.site == active
        and last.source == site
        and not last.failed_back_by
    ):
        return WrongWay(last)
    return None


def unreachable(
    hosts: Sequence[Host], factory: preflight.TransportFactory = open_transport
) -> list[str]:
    """The hosts among ``hosts`` that drx cannot reach now (one pre-flight connection each)."""
    connections, failures = preflight.connect_all(list(hosts), factory)
    preflight.close_all(connections)
    return sorted(failures)


@dataclass(frozen=True)
class FileChange:
    """A runbook or inventory file whose content changed since a run started from it."""

    what: str  # "runbook" | "inventory"
    path: str
    before: str  # sha256 when the run started
    now: str | None  # sha256 now (None: the file cannot be read)

    def __str__(self) -> str:
        now = self.now[:12] if self.now else "unreadable"
        return f"{self.what} {self.path}: sha256 {self.before[:12]}… → {now}…"


def changed_files(
    start: RunStarted, runbook_file: str | None, inventory_file: str | None
) -> list[FileChange]:
    """The files that changed since the run journaled by ``start`` (its ``run_started`` event)
    began: resuming it then runs steps the original run never planned."""
    from orchestrator.run.runner import file_sha256

    changes = []
    for what, path, before in (
        ("runbook", runbook_file, start.runbook_sha256),
        ("inventory", inventory_file, start.inventory_sha256),
    ):
        if not isinstance(before, str) or path is None:
            continue
        now = file_sha256(path)
        if now != before:
            changes.append(FileChange(what, path, before, now))
    return changes
