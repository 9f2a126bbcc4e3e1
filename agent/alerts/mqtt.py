"""The MQTT publisher: drains the durable outbox to the broker and listens for commands.

Topics (``P`` = mqtt.topic_prefix, ``A`` = agent_id)::

    P/A/status             QoS 1, retained  {"state": "online", ...}; the last will: offline
    P/A/alerts             QoS 1            an Alert
    P/A/series/<uid>       QoS 1, retained  the latest Verdict of the series
    P/A/commands           QoS 1, we subscribe

The session is persistent (clean_session False, a stable client id), so commands sent while
the agent was away wait on the broker. A lost connection is retried forever with capped,
jittered backoff; rows leave the outbox only once the broker acknowledged them.

Errors from aiomqtt, paho and ssl are mapped here, at the boundary, to one log line each
(repeated identical failures are logged once) and never leave :meth:`MqttPublisher.run`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
import anyio
from aiomqtt.exceptions import MqttConnectError

from agent import __version__
from agent.alerts.outbox import Entry, Outbox
from agent.config import MqttConfig, MqttTLSConfig
from agent.domain.verdicts import iso_utc
from agent.errors import AgentError

log = logging.getLogger(__name__)

LinkState = Literal["connecting", "online", "offline"]
CommandSink = Callable[[bytes], Awaitable[None]]
BATCH = 256  # outbox rows in flight at once; PUBACKs are awaited together
OFFLINE_GRACE_S = 2.0  # at shutdown, how long we try to say "offline" ourselves


class BrokerSetupError(AgentError):
    """The broker settings cannot be used (a missing password file or variable, bad PEM)."""


@dataclass(frozen=True, slots=True)
class Topics:
    base: str  # P/A

    @classmethod
    def of(cls, cfg: MqttConfig, agent_id: str) -> Topics:
        return cls(f"{cfg.topic_prefix}/{agent_id}")

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def alerts(self) -> str:
        return f"{self.base}/alerts"

    @property
    def commands(self) -> str:
        return f"{self.base}/commands"

    def series(self, series_uid: str) -> str:
        return f"{self.base}/series/{series_uid}"

    def below(self, relative: str) -> str:
        return f"{self.base}/{relative}"


def status_payload(state: str, agent_id: str, **extra: Any) -> bytes:
    doc = {"state": state, "agent_id": agent_id, "at": iso_utc(time.time()), **extra}
    return json.dumps(doc, separators=(",", ":")).encode()


def read_password(cfg: MqttConfig) -> str | None:
    """From the file or the environment variable the config names; never from argv."""
    if cfg.password_file is not None:
        try:
            return cfg.password_file.read_text("utf-8").rstrip("\r\n")
        except OSError as exc:
            raise BrokerSetupError(
                f"cannot read mqtt.password_file {cfg.password_file}: {exc.strerror}"
            ) from exc
    if cfg.password_env is not None:
        value = os.environ.get(cfg.password_env)
        if value is None:
            raise BrokerSetupError(f"mqtt.password_env: ${cfg.password_env} is not set")
        return value
    return None


def tls_context(tls: MqttTLSConfig | None) -> ssl.SSLContext:
    """Verifying context: the CA file (or the system store), an optional client certificate,
    and hostname checking unless the site turned it off."""
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls and tls.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls and tls.cert_file and tls.key_file:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise BrokerSetupError(f"mqtt.tls: {exc}") from exc
    if tls is not None and not tls.check_hostname:
        ctx.check_hostname = False
    return ctx


def client_settings(cfg: MqttConfig, agent_id: str) -> dict[str, Any]:
    """aiomqtt.Client's arguments. Reads files: call it from a worker thread."""
    url = urlsplit(cfg.url)
    secure = url.scheme == "mqtts" or cfg.tls is not None
    topics = Topics.of(cfg, agent_id)
    will = status_payload("offline", agent_id, reason="connection lost")
    return {
        "hostname": url.hostname or "127.0.0.1",
        "port": url.port or (8883 if secure else 1883),
        "identifier": cfg.client_id or f"scanner-agent-{agent_id}",
        "clean_session": False,  # commands queued for us while away are kept
        "keepalive": cfg.keepalive,
        "username": cfg.username,
        "password": read_password(cfg),
        "tls_context": tls_context(cfg.tls) if secure else None,
        "will": aiomqtt.Will(topics.status, will, qos=1, retain=True),
        "max_inflight_messages": 64,
        "timeout": 10,
    }


def describe_error(exc: BaseException) -> str:
    """One clear line for the log, naming refusals the way a site engineer searches them."""
    if isinstance(exc, MqttConnectError):
        reason = str(exc.rc).lower() if exc.rc is not None else str(exc)
        if "password" in reason or "authori" in reason:  # Mosquitto 2 says "not authorized"
            reason += " (check mqtt.username and its password_file or password_env)"
        return f"MQTT broker refused the connection: {reason}"
    if isinstance(exc, BrokerSetupError):
        return f"MQTT not started: {exc}"
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return f"MQTT TLS handshake failed (broker certificate not trusted): {text}"
    return f"MQTT connection failed: {text}"


def backoff_s(attempt: int, cap: float) -> float:
    """Exponential from 0.25 s, capped, with jitter so agents do not reconnect in step."""
    ceiling = min(cap, 0.25 * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def stamp(entry: Entry, now: float) -> bytes:
    """An alert's ``latency_ms`` is measured at publication, not when it was queued."""
    if entry.kind != "alert" or entry.last_image_at is None:
        return entry.payload.encode()
    doc = json.loads(entry.payload)
    doc["latency_ms"] = round((now - entry.last_image_at) * 1000.0, 1)
    return json.dumps(doc, separators=(",", ":")).encode()


def first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups from task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload if payload is not None else "").encode()


class MqttPublisher:
    def __init__(
        self,
        cfg: MqttConfig,
        agent_id: str,
        outbox: Outbox,
        on_command: CommandSink,
        on_state: Callable[[LinkState], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.agent_id = agent_id
        self.topics = Topics.of(cfg, agent_id)
        self.state: LinkState = "connecting"
        self._outbox = outbox
        self._on_command = on_command
        self._on_state = on_state
        self._wakeup = anyio.Event()
        self._last_error = ""

    def wake(self) -> None:
        """New rows in the outbox: the drain task sends them now if connected."""
        self._wakeup.set()

    async def run(self) -> None:
        """Connect, publish, listen; reconnect forever. Returns only when cancelled."""
        attempt = 0
        while True:
            self._set_state("connecting")
            connected = await self._connect_once()
            attempt = 0 if connected else attempt + 1
            self._set_state("offline")
            await anyio.sleep(backoff_s(attempt, self.cfg.reconnect_max_s))

    async def _connect_once(self) -> bool:
        """One connection, until it fails; True when it got as far as CONNACK."""
        connected = False
        try:
            settings = await anyio.to_thread.run_sync(client_settings, self.cfg, self.agent_id)
            async with aiomqtt.Client(**settings) as client:
                connected = True
                await self._session(client, settings)
        except* (aiomqtt.MqttError, BrokerSetupError, OSError) as group:
            if connected:
                log.warning(
                    "MQTT connection lost (%s); reconnecting, alerts wait in the outbox",
                    first_leaf(group),
                )
            else:
                self._report(first_leaf(group))
        return connected

    async def _session(self, client: aiomqtt.Client, settings: dict[str, Any]) -> None:
        await client.publish(
            self.topics.status, status_payload("online", self.agent_id, version=__version__),
            qos=1, retain=True,
        )  # fmt: skip
        await client.subscribe(self.topics.commands, qos=1)
        self._last_error = ""
        log.info(
            "MQTT connected to %s:%s as %s; publishing under %s",
            settings["hostname"], settings["port"], settings["identifier"], self.topics.base,
        )  # fmt: skip
        self._set_state("online")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drain, client, name="mqtt-drain")
                tg.start_soon(self._listen, client, name="mqtt-commands")
        except anyio.get_cancelled_exc_class():
            await self._say_offline(client)
            raise

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """A clean disconnect does not fire the last will, so say it ourselves."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(OFFLINE_GRACE_S):
            try:
                payload = status_payload("offline", self.agent_id, reason="stopped")
                await client.publish(self.topics.status, payload, qos=1, retain=True)
            except aiomqtt.MqttError as exc:
                log.debug("could not publish offline status: %s", exc)

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            self._wakeup = anyio.Event()  # made before reading, so no put is missed
            entries = await anyio.to_thread.run_sync(self._outbox.pending, BATCH)
            if not entries:
                await self._wakeup.wait()
                continue
            await self._publish(client, entries)
            await anyio.to_thread.run_sync(self._outbox.ack, [e.seq for e in entries])

    async def _publish(self, client: aiomqtt.Client, entries: list[Entry]) -> None:
        """Send a batch and wait for every PUBACK. paho writes them in call order and the
        tasks start in order, so the broker sees them in outbox order."""
        now = time.time()
        async with anyio.create_task_group() as tg:
            for e in entries:
                topic = self.topics.below(e.topic)
                tg.start_soon(client.publish, topic, stamp(e, now), 1, e.retain)

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if not message.topic.matches(self.topics.commands):
                continue
            try:
                await self._on_command(payload_bytes(message.payload))
            except Exception:  # a bad command must never take the link down
                log.exception("command handler failed")

    def _report(self, exc: BaseException) -> None:
        line = describe_error(exc)
        if line != self._last_error:  # an outage or refusal is one line, not one per retry
            log.error("%s", line)
            self._last_error = line
        else:
            log.debug("%s", line)

    def _set_state(self, state: LinkState) -> None:
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(state)
