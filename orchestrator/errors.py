"""The one exception tree of drx.

    DrxError                      root: every expected failure; the CLI prints one line for it
    ├── UsageError                bad command-line use (unknown site, bad --var)          exit 2
    ├── ValidationError           invalid runbook/inventory; carries every Problem found  exit 2
    ├── RefusedError              refused before anything ran (lock held, already active,
    │                             nothing to fail back, health at source failing)         exit 2
    ├── PreflightError            a host could not be reached or authenticated            exit 2
    ├── TransportError            a host-level failure while connecting or running
    │   ├── HostUnreachable       connect refused / timed out / DNS
    │   ├── AuthenticationFailed  the host refused our credentials
    │   └── HostKeyError          unknown or changed host key under the policy in force
    └── JournalError              a journal that cannot be read back

Exit codes are decided in one place, ``cli.py``, from these types.
"""

from __future__ import annotations

from dataclasses import dataclass


class DrxError(Exception):
    """Root of every expected drx failure."""

    exit_code = 2


class UsageError(DrxError):
    """The command line asks for something that cannot be done."""


@dataclass(frozen=True)
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


class TransportError(DrxError):
    """A host-level failure: carries the host name and a short cause (``error`` field value)."""

    error = "transport"

    def __init__(self, host: str, message: str):
        self.host = host
        super().__init__(f"{host}: {message}")


class HostUnreachable(TransportError):
    error = "unreachable"


class AuthenticationFailed(TransportError):
    error = "auth"


class HostKeyError(TransportError):
    error = "host_key"


class JournalError(DrxError):
    """A journal that cannot be read back."""
