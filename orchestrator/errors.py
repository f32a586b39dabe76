"""The one exception tree of drx.

    DrxError                      root: every expected failure; the CLI prints one line for it
    ├── UsageError                bad command-line use (unknown site, bad --var)          exit 2
    ├── ValidationError           invalid runbook/inventory; carries every Problem found  exit 2
    ├── RefusedError              refused before anything ran (lock held, already active,
    │   │                         nothing to fail back, health at source failing)         exit 2
    │   ├── PreflightError        a host could not be reached or authenticated            exit 2
    │   └── StateDirError         an unsafe state directory (another owner, writable by
    │                             others, a symlink, a path leaving it)                   exit 2
    ├── GateUnavailable           no operator can answer a manual gate (the step fails)
    ├── TransportError            a host-level failure while connecting or running
    │   ├── HostUnreachable       connect refused / timed out / DNS
    │   │   └── ConnectionDropped the server closed the connection before its banner
    │   │                         (sshd's MaxStartups): worth another try
    │   ├── AuthenticationFailed  the host refused our credentials
    │   └── HostKeyError          unknown or changed host key under the policy in force
    ├── JournalError              a journal that cannot be read back
    ├── StoreError                the shared state store cannot be used (bad --state-url,
    │   │                         unreachable, authentication refused)                exit 2
    │   └── StoreUnavailable      no endpoint answered within the call's deadline
    └── LockLost                  the run lock was lost mid-run (lease gone, a write fenced,
                                  the store unreachable for 3 × TTL)                  exit 1

An expected failure reaches the operator as one line and the exit code of its type
(``orchestrator.cli``); anything else is an internal error (``ExitCode.INTERNAL``, a traceback in
``debug.log``). A run's own outcome maps to ``ExitCode`` in ``orchestrator.run.runner``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    """Every exit code of drx (docs/reference.md, "Exit codes")."""

    OK = 0  # success
    FAILED = 1  # the run failed (a step failed, health never held, the lock was lost)
    REFUSED = 2  # refused before anything ran (invalid input, lock held, pre-flight...)
    RTO_MISSED = 3  # the run succeeded but the measured RTO missed its target
    INTERNAL = 70  # an unexpected internal error (EX_SOFTWARE); traceback in debug.log
    CANCELLED = 130  # cancelled (Ctrl-C)

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "the run failed",
    ExitCode.REFUSED: "refused before anything ran",
    ExitCode.RTO_MISSED: "succeeded, but the RTO target was missed",
    ExitCode.INTERNAL: "internal error",
    ExitCode.CANCELLED: "cancelled",
}


class DrxError(Exception):
    """Root of every expected drx failure."""

    exit_code: ExitCode = ExitCode.REFUSED


class UsageError(DrxError):
    """The command line asks for something that cannot be done."""


@dataclass(frozen=True, slots=True)  # slots: a big runbook can draw one warning a step
class Problem:
    """One finding of validation: where, which step, what, and a hint."""

    file: str
    line: int | None
    message: str
    step: str | None = None
    column: int | None = None
    hint: str | None = None
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.severity}: "
        if self.step:
            text += f"step '{self.step}': "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class ValidationError(DrxError):
    """Invalid runbook or inventory; ``problems`` holds every error found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"{len(errors)} error(s) in runbook/inventory")


class RefusedError(DrxError):
    """The run was refused before anything changed."""


class PreflightError(RefusedError):
    """One or more hosts could not be reached or authenticated at the pre-flight."""


class StateDirError(RefusedError):
    """The state directory is not safe to use: owned by another user, writable by group or
    others, a symlink where drx keeps a file, or a path that would leave it."""


class GateUnavailable(DrxError):
    """A manual gate could not ask anyone: the gate's step fails with
    ``"error": "no_terminal"``."""


class GateTimeout(GateUnavailable):
    """Nobody answered a gate that waited for an answer from elsewhere within its step's
    ``timeout``: the gate is denied (``"error": "timeout"``)."""


class TransportError(DrxError):
    """A host-level failure: carries the host name and a short cause (``error`` field value)."""

    error = "transport"

    def __init__(self, host: str, message: str):
        self.host = host
        super().__init__(f"{host}: {message}")


class HostUnreachable(TransportError):
    error = "unreachable"


class ConnectionDropped(HostUnreachable):
    """The server accepted TCP and closed it before its SSH banner: sshd does that to a
    connection past its MaxStartups (too many unauthenticated at once), so another try later
    usually gets through."""


class AuthenticationFailed(TransportError):
    error = "auth"


class HostKeyError(TransportError):
    error = "host_key"


class JournalError(DrxError):
    """A journal that cannot be read back."""


class StoreError(DrxError):
    """The shared state store (``--state-url``) cannot be used."""


class StoreUnavailable(StoreError):
    """No endpoint of the store answered within the call's deadline."""


class LockLost(DrxError):
    """The run lock was lost while the run held it: another controller may own the run."""

    exit_code = ExitCode.FAILED
