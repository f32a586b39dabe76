"""How a command reaches a host.

``base`` defines the interface (``Transport.connect`` → ``Connection.run`` → ``CommandResult``);
``ssh`` implements it with Paramiko, ``local`` with subprocesses on the control machine, and
``fake`` with handlers for fast tests of the scheduler.
"""

from orchestrator.transport.base import CommandResult, Connection, HostSpec, Transport

__all__ = ["CommandResult", "Connection", "HostSpec", "Transport", "open_transport"]


def open_transport(kind: str) -> Transport:
    """Return the transport for ``kind`` ("ssh" or "local"), importing it only when needed."""
    if kind == "ssh":
        from orchestrator.transport import sshlib

        sshlib.load()  # before the transport imports it: without invoke
        from orchestrator.transport.ssh import SSHTransport

        return SSHTransport()
    if kind == "local":
        from orchestrator.transport.local import LocalTransport

        return LocalTransport()
    raise ValueError(f"unknown transport {kind!r}")
