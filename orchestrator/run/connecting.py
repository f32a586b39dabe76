"""Opening connections to many hosts at once (docs/reference.md, "Many hosts"): how many are
set up in parallel (``DRX_MAX_CONNECTING``), enough file descriptors for all of them, and
another try for a connection a server turned away before its banner (sshd's MaxStartups).
"""

from __future__ import annotations

import os
import random
import resource
import time

from orchestrator.errors import ConnectionDropped, UsageError
from orchestrator.transport.base import Connection, HostSpec, Transport

#: the environment variable that caps connections being set up at once
MAX_CONNECTING_ENV = "DRX_MAX_CONNECTING"
#: its default: fast on a LAN, below OpenSSH's default MaxStartups for a shared bastion
#: (10 unauthenticated connections before it starts dropping) only with the retry below
DEFAULT_MAX_CONNECTING = 64
#: descriptors one host may hold: its socket, a pipe per open channel (up to the transport's
#: 8 sessions), an output log per running command
FDS_PER_HOST = 16
#: descriptors for everything else (journal, logs, store, imports)
FDS_BASE = 256
#: tries of a connection the server closed before its banner
DROPPED_TRIES = 6
#: the first pause before another try; doubled each time, with jitter, at most DROPPED_MAX_S
DROPPED_PAUSE_S = 0.05
DROPPED_MAX_S = 1.0


def max_connecting(default: int = DEFAULT_MAX_CONNECTING) -> int:
    """Connections set up at once: ``DRX_MAX_CONNECTING`` (a positive integer) or ``default``."""
    text = os.environ.get(MAX_CONNECTING_ENV, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{MAX_CONNECTING_ENV}={text!r}: expected a positive integer")
    return value


def raise_fd_limit(hosts: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (never above the hard limit) when ``hosts``
    connections may need more than it allows (often 1,024 by default); return the soft limit
    now in force. Children inherit it: it is only raised when needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FDS_BASE + FDS_PER_HOST * hosts
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if new > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            return soft
        return new
    return soft


def connect(transport: Transport, spec: HostSpec) -> Connection:
    """``transport.connect(spec)``, tried again (up to DROPPED_TRIES times, backing off) when
    the server closes the connection before its banner, as sshd does past its MaxStartups;
    every other failure is raised at once."""
    pause = DROPPED_PAUSE_S
    for attempt in range(1, DROPPED_TRIES + 1):
        try:
            return transport.connect(spec)
        except ConnectionDropped:
            if attempt == DROPPED_TRIES:
                raise
        # jitter: connections dropped together do not all come back together
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, DROPPED_MAX_S)
    raise AssertionError("unreachable")  # pragma: no cover
