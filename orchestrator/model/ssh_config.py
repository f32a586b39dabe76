"""The operator's OpenSSH client configuration (``~/.ssh/config``) applied to inventory hosts.

A host's ``address`` may be a ``Host`` alias of the SSH config. drx looks it up with Paramiko's
parser and takes HostName, User, Port, IdentityFile, ProxyJump,
ConnectTimeout and UserKnownHostsFile from it for every connection setting the inventory leaves
unset; a setting written in the inventory (defaults, site or host) always wins. The resolved
HostName and Port are what the transport connects to and what host keys are checked under, as
OpenSSH does. See docs in README.md, "Hosts from ~/.ssh/config".

Paramiko is imported only when a config file exists (importing it costs ~0.25 s).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The file read when the inventory names none (``~`` expands through HOME, as for ssh).
DEFAULT_PATH = "~/.ssh/config"

_cache: dict[tuple[str, int], Any] = {}
_cache_lock = threading.Lock()


class SSHConfigError(ValueError):
    """The SSH config file named by the inventory cannot be read or parsed."""


@dataclass(frozen=True)
class Resolved:
    """What the SSH config says about one host name (None: it says nothing)."""

    hostname: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    proxy_jump: str | None = None
    connect_timeout: float | None = None
    known_hosts: str | None = None
    #: whether a ``Host``/``Match`` block other than a catch-all named this host
    matched: bool = False


def config_path(value: str | None, base: Path | None = None) -> Path:
    """The file to read: the inventory's ``ssh_config`` (relative to the inventory's directory),
    else ``~/.ssh/config``."""
    path = Path(os.path.expanduser(value or DEFAULT_PATH))
    if not path.is_absolute() and base is not None and value:
        path = base / path
    return path


#: a ``Match`` line with an ``exec`` criterion
_MATCH_EXEC = re.compile(r"^\s*match\b.*\bexec\b", re.IGNORECASE | re.MULTILINE)


def load(path: Path, *, required: bool) -> Any | None:
    """The parsed config at ``path`` (cached per file version), or None if it does not exist
    and is not ``required``. Raises SSHConfigError for a required file that is missing or for
    any file that cannot be parsed."""
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        if required:
            raise SSHConfigError(f"ssh_config {path}: {exc.strerror}") from None
        return None
    key = (str(path), stamp)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    from orchestrator.transport import sshlib

    paramiko = sshlib.load()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        if _MATCH_EXEC.search(text):
            sshlib.allow_match_exec()  # Paramiko runs those commands with invoke
        parsed = paramiko.SSHConfig.from_text(text)
    except (OSError, paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
        raise SSHConfigError(f"ssh_config {path}: {exc}") from None
    with _cache_lock:
        _cache[key] = parsed
    return parsed


def resolve(config: Any, name: str) -> Resolved:
    """Look ``name`` up in a parsed config (``None`` config: nothing known)."""
    if config is None:
        return Resolved()
    try:
        found: dict[str, Any] = dict(config.lookup(name))
    except Exception as exc:  # Paramiko raises plain exceptions for bad Match/Canonical lines
        raise SSHConfigError(f"ssh_config lookup of {name!r}: {exc}") from None
    matched = any(
        name in entry.get("host", [])
        for entry in getattr(config, "_config", [])
        if isinstance(entry, dict)
    )
    hostname = found.get("hostname")
    identity = found.get("identityfile") or []
    identity_file = next(
        (p for p in identity if os.path.exists(p)), identity[0] if identity else None
    )
    known = (found.get("userknownhostsfile") or "").split()
    jump = found.get("proxyjump")
    port = found.get("port")
    timeout = found.get("connecttimeout")
    return Resolved(
        hostname=hostname if hostname and hostname != name else None,
        user=found.get("user"),
        port=int(port) if port and str(port).isdigit() else None,
        identity_file=identity_file,
        proxy_jump=None if not jump or jump.lower() == "none" else jump,
        connect_timeout=float(timeout) if timeout and str(timeout).isdigit() else None,
        known_hosts=os.path.expanduser(known[0]) if known else None,
        matched=matched or bool(hostname and hostname != name),
    )


def apply(
    conn: dict[str, Any], explicit: set[str], address: str, config: Any
) -> tuple[dict[str, Any], str]:
    """Fill the connection settings the inventory left unset (not in ``explicit``) from what
    the config says about ``address``; returns the settings and the address to connect to."""
    found = resolve(config, address)
    merged = dict(conn)
    for key, value in (
        ("user", found.user),
        ("port", found.port),
        ("identity_file", found.identity_file),
        ("connect_timeout", found.connect_timeout),
        ("known_hosts", found.known_hosts),
    ):
        if value is not None and key not in explicit:
            merged[key] = value
    if found.proxy_jump and "proxy_jump" not in explicit:
        merged["proxy_jump"] = _resolve_jump(found.proxy_jump, config)
    return merged, found.hostname or address


def _resolve_jump(jump: str, config: Any) -> str:
    """A ProxyJump whose host is itself an alias becomes ``user@hostname:port`` (one hop: drx
    connects through a single bastion)."""
    if "," in jump:
        raise SSHConfigError(
            f"ProxyJump {jump!r} has several hops; drx goes through one bastion (proxy_jump)"
        )
    user, at, rest = jump.rpartition("@")
    host, port_text = rest, ""
    if rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    found = resolve(config, host)
    user = user if at else (found.user or "")
    port = port_text or (str(found.port) if found.port else "")
    text = found.hostname or host
    if ":" in text:
        text = f"[{text}]"
    return f"{user + '@' if user else ''}{text}{':' + port if port else ''}"
