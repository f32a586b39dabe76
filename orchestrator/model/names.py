"""What a name of the runbook or inventory may be: a host, site, health check (and any later
named thing: a probe, a child runbook). Names become parts of file paths (the run id, output
logs) and of lines in journals and reports, so they are plain names: letters, digits, ``.``,
``-`` and ``_``, starting with a letter or digit, at most 128 characters, never ``..``
(docs/reference.md, "Names")."""

from __future__ import annotations

import re
from typing import Any

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = (
    "names are letters, digits, '.', '-' and '_', starting with a letter or digit, "
    "at most 128 characters, without '..'"
)


def is_name(name: Any) -> bool:
    """Whether ``name`` is a plain name (safe as one path component and one line of text)."""
    return isinstance(name, str) and NAME.fullmatch(name) is not None and ".." not in name


def bad_name(what: str, name: Any) -> str | None:
    """The message for ``what`` (``host``, ``site``…) named ``name`` if it is not a plain
    name, else None. The name is shown with ``repr`` so control characters stay visible."""
    if is_name(name):
        return None
    return f"invalid {what} name {str(name)!r}"
