"""The MQTT publisher: drains the durable outbox to the broker and listens for commands.

Topics (``P`` = mqtt.topic_prefix, ``A`` = agent_id)::

    P/A/status             QoS 1, retained  {"state": "online", ...}; the last will: offline
    P/A/alerts             QoS 1            an Alert
    P/A/series/<key>       QoS 1, retained  the latest Verdict; <key> is topics.series_key(uid)
    P/A/commands/<user>    QoS 1, we subscribe; the broker's ACL lets only <user> write it
    P/A/commands           QoS 1, we subscribe; the sender's "by" is unauthenticated

The session is persistent (clean_session False, a stable client id), so commands sent while
the agent was away wait on the broker. A lost connection is retried forever with capped,
jittered backoff; rows leave the outbox only once the broker acknowledged them.

Errors from aiomqtt, paho and ssl are mapped here, at the boundary, to one log line each
(repeated identical failures are logged once) and never leave :meth:`MqttPublisher.run`.
A row the broker or paho refuses is quarantined (see :mod:`agent.alerts.refusals`); any
other error is logged and the publisher reconnects: publishing never takes the agent down.
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
from itertools import takewhile
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
import anyio
from aiomqtt.exceptions import MqttConnectError

from agent import __version__
from agent.alerts.mqtt_client import GuardedClient
from agent.alerts.online import OnlineGate
from agent.alerts.outbox import Entry, Outbox
from agent.alerts.refusals import MAX_SEND_FAILURES, lost_link_reason, refusal_alert, unsendable
from agent.alerts.topics import series_key
from agent.config import MqttConfig, MqttTLSConfig
from agent.domain.verdicts import Alert, iso_utc
from agent.errors import AgentError

log = logging.getLogger(__name__)

LinkState = Literal["connecting", "online", "offline"]
CommandSink = Callable[[bytes, str | None], Awaitable[None]]  # payload, user (None: shared)
AlertSink = Callable[[Alert], Awaitable[None]]
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

    @property
    def user_commands(self) -> str:
        """The filter for every user's own command topic."""
        return f"{self.base}/commands/+"

    def commands_of(self, user: str) -> str:
        return f"{self.base}/commands/{user}"

    def series(self, series_uid: str) -> str:
        return f"{self.base}/series/{series_key(series_uid)}"

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


def observer_settings(cfg: MqttConfig, agent_id: str, role: str) -> dict[str, Any]:
    """A watching client's arguments (a console, the web's department view): a client id
    of its own, never the agent's session, no persistent session and no will."""
    settings = client_settings(cfg, agent_id)
    suffix = f"{os.getpid()}-{random.randrange(1 << 16):04x}"
    settings.update(identifier=f"scanner-agent-{role}-{suffix}", clean_session=True, will=None)
    return settings


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
        on_alert: AlertSink | None = None,
    ) -> None:
        self.cfg = cfg
        self.agent_id = agent_id
        self.topics = Topics.of(cfg, agent_id)
        self.state: LinkState = "connecting"
        self._outbox = outbox
        self._on_command = on_command
        self._on_state = on_state
        self._on_alert = on_alert
        self.online = OnlineGate()
        self._wakeup = anyio.Event()
        self._last_error = ""
        self._in_flight: list[Entry] = []  # sent, not yet acknowledged
        self._suspects: set[int] = set()  # in flight when a connection was lost: sent alone

    def wake(self) -> None:
        """New rows in the outbox: the drain task sends them now if connected."""
        self._wakeup.set()

    async def run(self) -> None:
        """Connect, publish, listen; reconnect forever. Returns only when cancelled."""
        attempt = 0
        while True:
            self._set_state("connecting")
            try:
                connected = await self._connect_once()
            except Exception as group:  # a bug of ours must not stop alerts for good
                exc = first_leaf(group)
                line = f"publisher error: {type(exc).__name__}: {exc}"
                if line != self._last_error:  # logged in full once, not once per retry
                    log.error("MQTT %s; reconnecting", line, exc_info=exc)
                    self._last_error = line
                await self._after_loss(line)
                connected = False
            attempt = 0 if connected else attempt + 1
            self._set_state("offline")
            await anyio.sleep(backoff_s(attempt, self.cfg.reconnect_max_s))

    async def _connect_once(self) -> bool:
        """One connection, until it fails; True when it got as far as CONNACK."""
        connected = False
        try:
            settings = await anyio.to_thread.run_sync(client_settings, self.cfg, self.agent_id)
            async with GuardedClient(**settings) as client:
                connected = True
                await self._session(client, settings)
        except* (aiomqtt.MqttError, BrokerSetupError, OSError) as group:
            if connected:
                log.warning(
                    "MQTT connection lost (%s); reconnecting, alerts wait in the outbox",
                    first_leaf(group),
                )
                await self._after_loss(None)
            else:
                self._report(first_leaf(group))
        return connected

    async def _session(self, client: aiomqtt.Client, settings: dict[str, Any]) -> None:
        await client.subscribe(self.topics.commands, qos=1)
        await client.subscribe(self.topics.user_commands, qos=1)
        self._last_error = ""
        self._in_flight = []
        log.info(
            "MQTT connected to %s:%s as %s; publishing under %s",
            settings["hostname"], settings["port"], settings["identifier"], self.topics.base,
        )  # fmt: skip
        self._set_state("online")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._say_online, client, name="mqtt-online")
                tg.start_soon(self._drain, client, name="mqtt-drain")
                tg.start_soon(self._listen, client, name="mqtt-commands")
        except anyio.get_cancelled_exc_class():
            await self._say_offline(client)
            raise

    async def _say_online(self, client: aiomqtt.Client) -> None:
        await self.online.wait()  # not before the DICOM listener is open
        await client.publish(
            self.topics.status, status_payload("online", self.agent_id, version=__version__),
            qos=1, retain=True,
        )  # fmt: skip

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
            # suspects are the oldest rows, so all are here unless a newer verdict replaced one
            self._suspects.intersection_update(e.seq for e in entries)
            if entries[0].seq in self._suspects:  # alone, so a lost link names its culprit
                batch = entries[:1]
            else:
                batch = list(takewhile(lambda e: e.seq not in self._suspects, entries))
            self._in_flight = batch
            refused = await self._publish(client, batch)
            self._in_flight = []
            self._suspects.difference_update(e.seq for e in batch)
            sent = [e.seq for e in batch if e.seq not in refused]
            await anyio.to_thread.run_sync(self._outbox.ack, sent)
            for e in batch:
                if e.seq in refused:
                    await self._quarantine(e, refused[e.seq])

    async def _publish(self, client: aiomqtt.Client, entries: list[Entry]) -> dict[int, str]:
        """Send a batch and wait for every PUBACK; returns the rows refused before sending,
        with why. paho writes them in call order and the tasks start in order, so the broker
        sees them in outbox order."""
        now = time.time()
        refused: dict[int, str] = {}
        async with anyio.create_task_group() as tg:
            for e in entries:
                tg.start_soon(self._send, client, e, now, refused)
        return refused

    async def _send(
        self, client: aiomqtt.Client, entry: Entry, now: float, refused: dict[int, str]
    ) -> None:
        topic = self.topics.below(entry.topic)
        try:
            payload = stamp(entry, now)
            problem = unsendable(topic, payload)
            if problem is None:
                await client.publish(topic, payload, 1, entry.retain)
                return
        except aiomqtt.MqttError:
            raise  # the link, not this row: the session ends and reconnects
        except Exception as exc:  # paho refused this row alone (ValueError, TypeError, ...)
            problem = f"{type(exc).__name__}: {exc}"
        refused[entry.seq] = problem

    async def _after_loss(self, error: str | None) -> None:
        """The connection ended with rows in flight. One row alone is counted against (or,
        for an ``error`` of ours, quarantined at once); several are sent one at a time next."""
        batch, self._in_flight = self._in_flight, []
        if len(batch) > 1:
            self._suspects.update(e.seq for e in batch)
        elif batch and error is not None:
            await self._quarantine(batch[0], error)
        elif batch:
            failures = await anyio.to_thread.run_sync(self._outbox.record_failure, batch[0].seq)
            if failures >= MAX_SEND_FAILURES:
                await self._quarantine(batch[0], lost_link_reason(failures))
            else:
                self._suspects.add(batch[0].seq)

    async def _quarantine(self, entry: Entry, reason: str) -> None:
        """Out of the outbox with its reason, and a system alert naming it; the rows behind
        it go on."""
        self._suspects.discard(entry.seq)
        topic = self.topics.below(entry.topic)
        if not await anyio.to_thread.run_sync(self._outbox.quarantine, entry.seq, reason):
            return
        log.error("MQTT refused %s for %s; quarantined: %s", entry.kind, ascii(topic), reason)
        alert = refusal_alert(entry, topic, reason)
        if alert is not None and self._on_alert is not None:
            await self._on_alert(alert)

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.matches(self.topics.commands):
                user = None
            elif message.topic.matches(self.topics.user_commands):
                user = message.topic.value.rsplit("/", 1)[1]  # the level the ACL ties to %u
            else:
                continue
            try:
                await self._on_command(payload_bytes(message.payload), user)
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
