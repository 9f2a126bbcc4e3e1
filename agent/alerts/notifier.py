"""The pipeline's one door to the technologist: verdicts, alerts and commands.

    notifier = Notifier.open(cfg, control=SeriesActions(connect(journal_path), dests))
    tg.start_soon(notifier.run, name="notifier")
    await notifier.series_verdict(verdict, alert_or_none)   # durable once this returns
    await notifier.system(system_alert("spool-full", "..."))
    async for outcome in notifier.commands(): ...           # applied release/hold/repeat

Everything goes through the durable outbox first, then to the broker when ``mqtt:`` is
configured, else to the structured log and ``<storage>/feed.jsonl``. Every alert is also
logged, at a level that follows its severity, so the journal of the service shows it too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from agent.alerts.commands import CommandHandler, SeriesControl
from agent.alerts.feed import FeedPublisher
from agent.alerts.mqtt import LinkState, MqttPublisher
from agent.alerts.online import OnlineGate
from agent.alerts.outbox import Outbox
from agent.alerts.patient_policy import PatientPolicy
from agent.config import AgentConfig
from agent.domain.commands import Command, Outcome
from agent.domain.verdicts import Alert, Verdict

log = logging.getLogger(__name__)

_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}
OUTCOME_BUFFER = 64


class Notifier:
    def __init__(
        self, cfg: AgentConfig, outbox: Outbox, control: SeriesControl | None = None
    ) -> None:
        self.policy = PatientPolicy.from_config(cfg.alerts)
        self.outbox = outbox
        self._handle = CommandHandler(control, self.system, self._applied)
        self.watchers: list[Callable[[Alert], None]] = []  # the web console's live feed
        self._outcomes_tx, self._outcomes_rx = anyio.create_memory_object_stream[Outcome](
            OUTCOME_BUFFER
        )
        self.link: MqttPublisher | FeedPublisher
        if cfg.mqtt is not None:
            self.link = MqttPublisher(
                cfg.mqtt, cfg.agent_id, outbox, self._handle_mqtt, on_alert=self.system
            )  # a refused message is answered with a system alert
        else:
            self.link = FeedPublisher(
                cfg.storage_path, int(cfg.alerts.feed_max_bytes), cfg.agent_id,
                outbox, self._handle_bytes,
            )  # fmt: skip

    @classmethod
    def open(cls, cfg: AgentConfig, control: SeriesControl | None = None) -> Notifier:
        return cls(cfg, Outbox.open(cfg.storage_path / "journal.sqlite"), control)

    def close(self) -> None:
        """Release the command-outcome channel (after the task group has stopped)."""
        self._outcomes_tx.close()
        self._outcomes_rx.close()

    def hold_online(self) -> None:
        """Say "online" only once :meth:`listening` is called (the daemon: after its listener
        opened), not as soon as the broker or the feed is reachable."""
        self.link.online = OnlineGate(is_open=False)

    def listening(self) -> None:
        self.link.online.open()

    @property
    def link_state(self) -> LinkState:
        return self.link.state

    async def run(self) -> None:
        """Publish until cancelled; start it in the daemon's task group."""
        await self.link.run()

    async def series_verdict(self, verdict: Verdict, alert: Alert | None = None) -> None:
        """Queue the series' verdict (retained) and, if any, its alert, durably and in that
        order; they leave as soon as the link can take them."""
        verdict = self.policy.apply_verdict(verdict)
        alert = self.policy.apply_alert(alert) if alert is not None else None
        log.info(
            "verdict %s: %s, qc %s, %d instances",
            verdict.series_uid, verdict.state, verdict.qc.status, verdict.instances,
        )  # fmt: skip
        if alert is not None:
            _log_alert(alert)
        put = partial(
            self.outbox.put,
            verdict=(verdict.series_uid, verdict.to_json()),
            alert=(alert.to_json(), alert.last_image_at) if alert else None,
        )
        await anyio.to_thread.run_sync(put)
        self.link.wake()
        if alert is not None:
            self._watch(alert)

    async def system(self, alert: Alert) -> None:
        alert = self.policy.apply_alert(alert)
        _log_alert(alert)
        put = partial(self.outbox.put, alert=(alert.to_json(), alert.last_image_at))
        await anyio.to_thread.run_sync(put)
        self.link.wake()
        self._watch(alert)

    def _watch(self, alert: Alert) -> None:
        for watcher in self.watchers:  # durable already; a watcher only shows it
            watcher(alert)

    async def command(self, command: Command) -> Outcome | None:
        """A command from a user the caller authenticated (the web console): parsed, applied,
        audited with ``command.by`` as given, and answered as one from the broker is; None
        when it was refused before the journal saw it (a system alert says why)."""
        doc = {"action": command.action, "series_uid": command.series_uid, "by": command.by}
        return await self._handle(json.dumps(doc).encode())

    async def clear_verdict(self, series_uid: str) -> None:
        """The series was purged: remove its retained verdict from the broker."""
        await anyio.to_thread.run_sync(self.outbox.clear_verdict, series_uid)
        self.link.wake()

    async def commands(self) -> AsyncIterator[Outcome]:
        """Applied (and refused-but-valid) commands, for the pipeline to act on. Outcomes
        nobody reads past the buffer are dropped: the journal already holds their effect."""
        rx: MemoryObjectReceiveStream[Outcome] = self._outcomes_rx
        async for outcome in rx:
            yield outcome

    async def _handle_bytes(self, payload: bytes) -> None:
        await self._handle(payload)

    async def _handle_mqtt(self, payload: bytes, user: str | None) -> None:
        """``user`` from ``P/A/commands/<user>``; None: the shared topic, unauthenticated."""
        await self._handle(payload, user, shared=user is None)

    async def _applied(self, outcome: Outcome) -> None:
        changed = outcome.to_state != outcome.from_state or outcome.command.action == "repeat"
        if outcome.applied and changed:
            await self._republish(outcome)
        try:
            self._outcomes_tx.send_nowait(outcome)
        except anyio.WouldBlock:
            log.debug("no reader for command outcomes; dropped %s", outcome)

    async def _republish(self, outcome: Outcome) -> None:
        """Show the new state at once: the last verdict, with the state the command set."""
        uid = outcome.command.series_uid
        last = await anyio.to_thread.run_sync(self.outbox.latest_verdict, uid)
        if last is None:
            return
        doc = json.loads(last)
        doc["state"] = outcome.to_state
        doc["superseded"] = doc.get("superseded") or outcome.command.action == "repeat"
        put = partial(self.outbox.put, verdict=(uid, json.dumps(doc, separators=(",", ":"))))
        await anyio.to_thread.run_sync(put)
        self.link.wake()


def _log_alert(alert: Alert) -> None:
    reasons = "; ".join(f"{r.code}: {r.message}" for r in alert.reasons)
    log.log(
        _LEVEL[alert.severity],
        "ALERT %s %s %s action=%s series=%s id=%s: %s",
        alert.kind, alert.severity, alert.modality or "-", alert.action,
        alert.series_uid or "-", alert.id, reasons,
    )  # fmt: skip
