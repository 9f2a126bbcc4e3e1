"""A real Mosquitto for tests: free loopback port, its own config and folder, stopped by pid.

Also: certificates for TLS tests (made with ``cryptography``), password files (made with
``mosquitto_passwd``), and a subscriber that records what arrives.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import pwd
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import pytest

from tests.support.peers import free_port, stop_process, wait_for_port

MOSQUITTO = "/usr/sbin/mosquitto"
HINT = "Mosquitto is not installed: install it (Debian: apt-get install -y mosquitto)"


def require_mosquitto() -> str:
    if not Path(MOSQUITTO).exists():
        import shutil

        found = shutil.which("mosquitto")
        if found is None:
            pytest.fail(HINT)
        return found
    return MOSQUITTO


@dataclass
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


class Mosquitto:
    def __init__(
        self, workdir: Path, *, tls: TlsFiles | None = None, passwd: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        """``extra``: more mosquitto.conf lines (an ``acl_file``, a ``max_packet_size``)."""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.passwd = passwd
        self.extra = extra
        self.log_path = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            # run as root, mosquitto would drop to user "mosquitto", who cannot read our folder
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"allow_anonymous {'false' if self.passwd else 'true'}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type all",
            "max_queued_messages 100000",
        ]
        if self.passwd:
            lines.append(f"password_file {self.passwd}")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate true",
                "tls_version tlsv1.2",
            ]
        return "\n".join([*lines, *self.extra]) + "\n"

    def start(self) -> Mosquitto:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen(
            [require_mosquitto(), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            wait_for_port(self.port, 15, self.proc)
        except RuntimeError:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"mosquitto failed to start: {err}\n{self.log()}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)  # SIGTERM: mosquitto saves its persistence file

    def restart(self) -> None:
        """Start again on the same port and folder (so with its persisted sessions)."""
        self.stop()
        self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


def unique_prefix() -> str:
    """One topic prefix per test, so retained messages never leak between tests."""
    return f"test-{uuid.uuid4().hex[:10]}"


def make_passwd(path: Path, user: str, password: str, **more: str) -> Path:
    """A password file for ``user``, and for each ``name=password`` in ``more``."""
    tool = Path("/usr/bin/mosquitto_passwd")
    if not tool.exists():
        pytest.fail("mosquitto_passwd is not installed: apt-get install -y mosquitto")
    subprocess.run([str(tool), "-b", "-c", str(path), user, password], check=True)
    for name, secret in more.items():
        subprocess.run([str(tool), "-b", str(path), name, secret], check=True)
    path.chmod(0o600)
    return path


def make_tls(folder: Path, server_names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> TlsFiles:
    """A CA, a server certificate for ``server_names`` and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))  # fmt: skip
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip

    def leaf(cn: str, sans: list[x509.GeneralName], usage: Any) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
        )  # fmt: skip
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    sans: list[x509.GeneralName] = []
    for n in server_names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    server, server_key = leaf(server_names[0], sans, ExtendedKeyUsageOID.SERVER_AUTH)
    client, client_key = leaf("scanner-agent", [], ExtendedKeyUsageOID.CLIENT_AUTH)
    return TlsFiles(
        ca=write_cert(ca, folder / "ca.pem"),
        server_cert=write_cert(server, folder / "server.pem"),
        server_key=write_key(server_key, folder / "server.key"),
        client_cert=write_cert(client, folder / "client.pem"),
        client_key=write_key(client_key, folder / "client.key"),
    )


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """Collects every message under a topic filter, in arrival order."""

    client: aiomqtt.Client
    messages: list[Received] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def _collect(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes | bytearray) else b""
            self.messages.append(Received(m.topic.value, bytes(payload), m.retain))
            self._changed.set()
            self._changed = anyio.Event()

    def on(self, suffix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(suffix)]

    async def wait_for(self, predicate: Any, timeout: float = 15.0) -> list[Received]:
        with anyio.fail_after(timeout):
            while not predicate(self.messages):
                await self._changed.wait()
        return self.messages


@asynccontextmanager
async def subscriber(
    port: int, topic: str, **client_kwargs: Any
) -> AsyncIterator[Subscriber]:
    async with aiomqtt.Client("127.0.0.1", port, **client_kwargs) as client:
        await client.subscribe(topic, qos=1)
        sub = Subscriber(client)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sub._collect)
            yield sub
            tg.cancel_scope.cancel()
