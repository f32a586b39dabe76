"""A real etcd cluster on loopback, for the test suite and benchmarks of the shared store.

Each member is its own ``etcd`` process (Debian's etcd-server) in its own session and process
group, listening on its own ``127.0.31.K`` address with free client and peer ports and its own
data directory. ``start()`` waits until ``etcdctl endpoint health`` passes for every member.
Faults are injected on the real processes: ``kill`` (SIGKILL), ``pause``/``resume``
(SIGSTOP/SIGCONT), ``restart`` (same data directory: the member rejoins), and ``leader()`` names
the member that leads now.

API::

    with EtcdCluster(Path("/tmp/etcd"), names=("site-a", "site-b", "witness")) as cluster:
        cluster.start()
        url = cluster.url("drx-test", ttl="2s")   # etcd://127.0.31.1:P1,…/drx-test?ttl=2s
        cluster.kill(cluster.leader())
        cluster.restart("site-a")
    # leaving the block kills every member by its pid (``stop()``, idempotent)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.lab.sshd import free_port
from orchestrator.record.etcd_client import TLS

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
#: seconds a new cluster gets to report healthy
START_TIMEOUT = 30.0


class EtcdLabError(RuntimeError):
    """The lab cannot run etcd here (not installed, a member would not start)."""


@dataclass
class Member:
    name: str
    address: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """Three (or ``len(names)``) etcd members on loopback, started and stopped by pid."""

    def __init__(
        self,
        root: Path,
        *,
        names: Sequence[str] = ("m0", "m1", "m2"),
        first_address: int = 1,
        network: str = "127.0.31",
        tls: bool = False,
    ) -> None:
        for tool in (ETCD, ETCDCTL):
            if not os.access(tool, os.X_OK):
                raise EtcdLabError(
                    f"{tool} is missing: install Debian's etcd-server and etcd-client "
                    "(make system-deps)"
                )
        self.root = root
        self.token = f"drx-lab-{uuid.uuid4().hex[:12]}"
        self.members: dict[str, Member] = {}
        for i, name in enumerate(names):
            address = f"{network}.{first_address + i}"
            self.members[name] = Member(
                name,
                address,
                free_port(address),
                free_port(address),
                root / name / "data",
                root / name / "etcd.log",
            )
        #: CA, server and client certificates when clients must speak TLS (``etcds://``)
        self.tls = (
            make_tls(root / "tls", [m.address for m in self.members.values()]) if tls else None
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members.values()]

    def url(self, prefix: str, **query: str) -> str:
        """The ``--state-url`` of this cluster for ``prefix``."""
        scheme = "etcd"
        if self.tls is not None:
            scheme = "etcds"
            query = {
                "ca": str(self.tls.ca),
                "cert": str(self.tls.cert),
                "key": str(self.tls.key),
            } | query
        text = f"{scheme}://{','.join(self.endpoints)}/{prefix}"
        if query:
            text += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        return text

    def _command(self, m: Member, state: str) -> list[str]:
        cluster = ",".join(f"{x.name}={x.peer_url}" for x in self.members.values())
        client = f"{'https' if self.tls else 'http'}://{m.endpoint}"
        tls = []
        if self.tls is not None:
            tls = [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca}",
                "--client-cert-auth",
            ]
        return [
            ETCD,
            "--name",
            m.name,
            "--data-dir",
            str(m.data_dir),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            m.peer_url,
            "--initial-advertise-peer-urls",
            m.peer_url,
            "--initial-cluster",
            cluster,
            "--initial-cluster-token",
            self.token,
            "--initial-cluster-state",
            state,
            "--log-outputs",
            "stderr",
            *tls,
        ]

    def _spawn(self, m: Member, state: str) -> None:
        m.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = m.log_path.open("ab")
        try:
            m.proc = subprocess.Popen(
                self._command(m, state),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own session and process group
            )
        finally:
            log.close()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every member not running and wait until all of them are healthy."""
        atexit.register(self.stop)  # never leave members behind, even if the caller dies
        fresh = not any(m.data_dir.exists() for m in self.members.values())
        for m in self.members.values():
            if not m.running:
                self._spawn(m, "new" if fresh else "existing")
        self.wait_healthy(list(self.members), timeout)

    def wait_healthy(self, names: Sequence[str], timeout: float = START_TIMEOUT) -> None:
        """Wait until ``etcdctl endpoint health`` passes for the members ``names``."""
        endpoints = ",".join(self.members[n].endpoint for n in names)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for n in names:
                m = self.members[n]
                if m.proc is not None and m.proc.poll() is not None:
                    raise EtcdLabError(
                        f"etcd member {n} exited with {m.proc.returncode}: {self._tail(m)}"
                    )
            tls = []
            if self.tls is not None:
                tls = [
                    f"--cacert={self.tls.ca}",
                    f"--cert={self.tls.cert}",
                    f"--key={self.tls.key}",
                ]
            res = subprocess.run(
                [
                    ETCDCTL,
                    "--endpoints",
                    endpoints,
                    "--command-timeout=2s",
                    *tls,
                    "endpoint",
                    "health",
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "ETCDCTL_API": "3"},
                check=False,
            )
            if res.returncode == 0:
                return
            last = (res.stderr or res.stdout).strip()
            time.sleep(0.1)
        raise EtcdLabError(f"etcd members {', '.join(names)} not healthy in {timeout}s: {last}")

    def _tail(self, m: Member) -> str:
        try:
            return m.log_path.read_text(errors="replace")[-600:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill every member by its pid (idempotent)."""
        for m in self.members.values():
            self.kill(m.name)

    def remove(self) -> None:
        """Stop and delete every data directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- faults ---------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL a member (its process group); it stays down until ``restart``."""
        m = self.members[name]
        if m.proc is None:
            return
        if m.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(m.proc.pid, signal.SIGCONT)  # a paused member must die too
                os.killpg(m.proc.pid, signal.SIGKILL)
        m.proc.wait()
        m.proc = None

    def pause(self, name: str) -> None:
        m = self.members[name]
        if m.running and m.proc is not None:
            os.killpg(m.proc.pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        m = self.members[name]
        if m.running and m.proc is not None:
            os.killpg(m.proc.pid, signal.SIGCONT)

    def restart(self, name: str, *, wait: bool = True) -> None:
        """Start a killed member again on its data directory; it rejoins the cluster."""
        m = self.members[name]
        if not m.running:
            self._spawn(m, "existing")
        if wait:
            self.wait_healthy([name])

    def _client_tls(self) -> TLS | None:
        if self.tls is None:
            return None
        return TLS(str(self.tls.ca), str(self.tls.cert), str(self.tls.key))

    def leader(self, timeout: float = 10.0) -> str:
        """The name of the member that leads now (as the running members report it)."""
        from orchestrator.record.etcd_client import EtcdClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids: dict[int, str] = {}
            leaders: set[int] = set()
            for m in self.members.values():
                if not m.running:
                    continue
                client = EtcdClient([m.endpoint], timeout=1.0, tls=self._client_tls())
                try:
                    st = client.member_status(m.endpoint, timeout=1.0)
                except Exception:
                    continue
                finally:
                    client.close()
                header = st.get("header") or {}
                if "member_id" in header:
                    ids[int(header["member_id"])] = m.name
                if st.get("leader"):
                    leaders.add(int(st["leader"]))
            if len(leaders) == 1:
                (lead,) = leaders
                if lead in ids:
                    return ids[lead]
            time.sleep(0.1)
        raise EtcdLabError("no etcd member leads")


@dataclass(frozen=True)
class LabTLS:
    """Files of a lab cluster's TLS: its CA, the members' certificate, a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    cert: Path
    key: Path


def make_tls(directory: Path, addresses: Sequence[str]) -> LabTLS:
    """A throw-away CA, a server certificate for ``addresses`` and a client certificate."""
    import datetime
    import ipaddress

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def key_pair(name: str) -> tuple[ec.EllipticCurvePrivateKey, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        path = directory / f"{name}.key"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return key, path

    def cert(
        name: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        *,
        ca: bool = False,
        sans: Sequence[str] = (),
    ) -> tuple[x509.Certificate, Path]:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer if not ca else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            names = [x509.IPAddress(ipaddress.ip_address(a)) for a in sans]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(signer, hashes.SHA256())
        path = directory / f"{name}.pem"
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return certificate, path

    ca_key, _ = key_pair("ca")
    ca_cert, ca_path = cert("drx-lab-ca", ca_key, x509.Name([]), ca_key, ca=True)
    server_key, server_key_path = key_pair("server")
    _, server_path = cert("server", server_key, ca_cert.subject, ca_key, sans=addresses)
    client_key, client_key_path = key_pair("client")
    _, client_path = cert("client", client_key, ca_cert.subject, ca_key)
    return LabTLS(ca_path, server_path, server_key_path, client_path, client_key_path)
