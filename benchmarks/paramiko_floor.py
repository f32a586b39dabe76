"""The raw-Paramiko floor: the least any Python tool can pay to run commands over SSH.

    python benchmarks/paramiko_floor.py HOSTS.json --commands 5 [--command /bin/true]
    python benchmarks/paramiko_floor.py HOSTS.json --dag DAG.json
    python benchmarks/paramiko_floor.py HOSTS.json --spool PROGRAMS.json

HOSTS.json is a list of ``{"address", "port", "user", "identity_file", "known_hosts"}``. Each
host gets one connection (TCP_NODELAY, host key checked against known_hosts, rejected if
unknown) and one session channel per command; every exit status is checked.

- ``--commands K``: one thread per host connects, then runs the command K times in a row.
- ``--dag``: DAG.json is ``{"steps": [{"id", "hosts": [index, ...], "run", "needs": [...]}]}``;
  every host is connected first, then each step starts as soon as its needs have ended and
  runs on its hosts at once (a thread per host). ``dag_s`` is from the first step's start to
  the last step's end: the floor for the same DAG that drx measures as its RTO.
- ``--spool``: PROGRAMS.json is a list, one entry per host, of ``{"check", "commands": [...],
  "cleanup"}``: the shell programs drx's own host-side protocol runs there (the pre-flight's
  spool check, each command's spool wrapper, the clean-up, written by bench_ssh with drx's
  functions), sent the way drx sends them. The floor for the same work on the hosts, with
  none of drx's engine around it.

Prints one JSON object; exits 1 if any host or command failed.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paramiko


def connect(host: dict[str, Any], key: paramiko.PKey) -> paramiko.SSHClient:
    """An authenticated connection to ``host`` with its key checked and TCP_NODELAY set."""
    sock = socket.create_connection((host["address"], host["port"]), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = paramiko.SSHClient()
    client.load_host_keys(host["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host["address"],
        port=host["port"],
        username=host["user"],
        pkey=key,
        sock=sock,
        allow_agent=False,
        look_for_keys=False,
        timeout=20,
    )
    return client


def run_command(client: paramiko.SSHClient, command: str, program: str | None = None) -> None:
    """Run ``command`` on a new channel (with ``program`` written to its stdin, for a shell
    reading it there), read its output to the end, check its exit status."""
    transport = client.get_transport()
    assert transport is not None
    chan = transport.open_session()
    chan.exec_command(command)
    if program is not None:
        chan.sendall(program.encode())
        chan.shutdown_write()
    while chan.recv(65536):  # read the output to its end, as any tool must
        pass
    while chan.recv_stderr(65536):
        pass
    rc = chan.recv_exit_status()
    chan.close()
    if rc != 0:
        raise RuntimeError(f"{command!r} exited {rc}")


def spooled_host(host: dict[str, Any], work: dict[str, Any], key: paramiko.PKey) -> float:
    """drx's host-side protocol by hand: the pre-flight's spool check, each command through
    the spool wrapper, the clean-up started and not waited for; the connect time."""
    start = time.perf_counter()
    client = connect(host, key)
    connected = time.perf_counter() - start
    try:
        run_command(client, ". /dev/stdin", work["check"])
        for program in work["commands"]:
            run_command(client, "exec /bin/sh -s", program)
        transport = client.get_transport()
        assert transport is not None
        chan = transport.open_session()
        chan.exec_command(work["cleanup"])
        chan.close()
    finally:
        client.close()
    return connected


def one_host(host: dict[str, Any], commands: int, command: str, key: paramiko.PKey) -> float:
    """Connect to ``host``, run ``command`` ``commands`` times; the connect time."""
    start = time.perf_counter()
    client = connect(host, key)
    connected = time.perf_counter() - start
    try:
        for _ in range(commands):
            run_command(client, command)
    finally:
        client.close()
    return connected


def run_fanout(
    hosts: list[dict[str, Any]],
    key: paramiko.PKey,
    commands: int,
    command: str,
    spool: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every host in its own thread: connect, then ``commands`` × ``command`` (or, with
    ``spool``, that host's programs of drx's host-side protocol)."""
    connects: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(host: dict[str, Any], i: int) -> None:
        try:
            if spool is not None:
                connected = spooled_host(host, spool[i], key)
            else:
                connected = one_host(host, commands, command, key)
        except Exception as exc:
            with lock:
                errors.append(f"{host['address']}:{host['port']}: {exc!r}")
            return
        with lock:
            connects.append(connected)

    threads = [threading.Thread(target=worker, args=(h, i)) for i, h in enumerate(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "commands_per_host": len(spool[0]["commands"]) if spool else commands,
        "slowest_connect_s": max(connects, default=None),
        "errors": errors,
    }


def run_dag(hosts: list[dict[str, Any]], key: paramiko.PKey, dag: dict[str, Any]) -> dict[str, Any]:
    """Connect every host, then run the DAG's steps as soon as their needs have ended."""
    clients: list[paramiko.SSHClient | None] = [None] * len(hosts)
    errors: list[str] = []
    lock = threading.Lock()

    def open_one(i: int) -> None:
        try:
            clients[i] = connect(hosts[i], key)
        except Exception as exc:
            with lock:
                errors.append(f"{hosts[i]['address']}: {exc!r}")

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(len(hosts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        return {"errors": errors}
    done = {s["id"]: threading.Event() for s in dag["steps"]}
    ends: dict[str, float] = {}

    def step(s: dict[str, Any]) -> None:
        for need in s.get("needs", []):
            done[need].wait()

        def on_host(i: int) -> None:
            try:
                client = clients[i]
                assert client is not None
                run_command(client, s["run"])
            except Exception as exc:
                with lock:
                    errors.append(f"{s['id']} on {hosts[i]['address']}: {exc!r}")

        workers = [threading.Thread(target=on_host, args=(i,)) for i in s["hosts"]]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        ends[s["id"]] = time.perf_counter()
        done[s["id"]].set()

    start = time.perf_counter()
    steppers = [threading.Thread(target=step, args=(s,)) for s in dag["steps"]]
    for t in steppers:
        t.start()
    for t in steppers:
        t.join()
    dag_s = max(ends.values()) - start
    for client in clients:
        if client is not None:
            client.close()
    return {"steps": len(dag["steps"]), "dag_s": dag_s, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hosts", type=Path)
    parser.add_argument("--commands", type=int, default=5)
    parser.add_argument("--command", default="/bin/true")
    parser.add_argument("--dag", type=Path, help="run this DAG instead (see the docstring)")
    parser.add_argument(
        "--spool", type=Path, help="run these programs of drx's host-side protocol instead"
    )
    args = parser.parse_args(argv)
    hosts: list[dict[str, Any]] = json.loads(args.hosts.read_text())
    start = time.perf_counter()
    key = paramiko.Ed25519Key.from_private_key_file(hosts[0]["identity_file"])
    if args.dag:
        result = run_dag(hosts, key, json.loads(args.dag.read_text()))
    else:
        spool = json.loads(args.spool.read_text()) if args.spool else None
        result = run_fanout(hosts, key, args.commands, args.command, spool)
    result["hosts"] = len(hosts)
    result["inprocess_wall_s"] = time.perf_counter() - start
    print(json.dumps(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
