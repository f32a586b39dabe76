"""The tokens file of ``drx serve --tokens``: ``NAME SHA256-OF-TOKEN`` a line (``#`` comments),
so the file never holds a token itself."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from orchestrator.errors import UsageError

_LINE = re.compile(r"(?P<name>[A-Za-z0-9_.@-]{1,64})\s+(?P<digest>[0-9a-fA-F]{64})")


def load_tokens(path: Path) -> dict[str, str]:
    """sha256 hex digest → NAME; a malformed line is an error naming file:line (exit 2)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--tokens {path}: {exc.strerror}") from None
    tokens: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise UsageError(
                f"{path}:{number}: expected 'NAME SHA256' (the token's sha256 in hex), "
                "never the token itself"
            )
        tokens[match["digest"].lower()] = match["name"]
    if not tokens:
        raise UsageError(f"{path}: no 'NAME SHA256' line")
    return tokens


def holder(tokens: dict[str, str], authorization: str | None) -> str | None:
    """The NAME whose token ``Authorization: Bearer TOKEN`` bears, or None."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    digest = hashlib.sha256(authorization[7:].strip().encode()).hexdigest()
    for known, name in tokens.items():
        if hmac.compare_digest(known, digest):
            return name
    return None
