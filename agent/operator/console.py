"""The technologist console: ``scanner-agent console [-c CONFIG]``.

A terminal UI (textual) that fits 80x24: the recent series with state, QC, triage and
delivery; a red banner and the terminal bell for a critical alert; keys to release, hold or
mark a repeat of the selected series. It follows the broker when ``mqtt:`` is configured
(its own client id, so it never takes the agent's session) and reconnects by itself;
otherwise it follows ``<storage>/feed.jsonl`` and drops commands into ``<storage>/commands/``.

:class:`ConsoleModel` holds what the screen shows and is plain Python; :class:`ConsoleApp`
draws it; the two sources feed it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiomqtt
import anyio
from rich.console import Console
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from agent.alerts.feed import FEED_NAME, drop_command
from agent.alerts.mqtt import BrokerSetupError, Topics, backoff_s, client_settings, describe_error
from agent.config import AgentConfig

log = logging.getLogger(__name__)

MAX_SERIES = 200  # rows kept; the console shows what happens now, the PACS keeps history
COLUMNS = ("Series", "Mod", "Img", "State", "QC", "Triage", "Delivery", "Time")


@dataclass
class SeriesRow:
    uid: str
    description: str = ""
    modality: str = ""
    instances: int = 0
    state: str = ""
    qc: str = ""
    priority: str = ""
    delivery: str = ""
    superseded: bool = False
    updated: float = field(default_factory=time.time)

    def cells(self) -> tuple[str, ...]:
        name = self.description or self.uid[-20:]
        state = f"{self.state}*" if self.superseded else self.state
        return (name[:22], self.modality, str(self.instances), state, self.qc,
                self.priority or "-", self.delivery or "-",
                time.strftime("%H:%M:%S", time.localtime(self.updated)))  # fmt: skip


def _triage_cell(triage: dict[str, Any]) -> str:
    """The priority; ``n/a`` when the series is not what the model was made for."""
    if triage.get("status") == "not_applicable":
        return "n/a"
    return str(triage.get("priority", ""))


def summarize_deliveries(deliveries: dict[str, str]) -> str:
    if not deliveries:
        return ""
    states = set(deliveries.values())
    return states.pop() if len(states) == 1 else f"{len(deliveries)} mixed"


@dataclass
class ConsoleModel:
    series: dict[str, SeriesRow] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    agent_state: str = "unknown"
    seen_alert_ids: set[str] = field(default_factory=set)

    def apply(self, topic: str, payload: Any) -> dict[str, Any] | None:
        """Take one message (topic below ``P/A``); returns a new alert, else None."""
        if topic == "status" and isinstance(payload, dict):
            self.agent_state = str(payload.get("state", "unknown"))
        elif topic.startswith("series/"):
            self._verdict(topic.removeprefix("series/"), payload)
        elif topic == "alerts" and isinstance(payload, dict):
            return self._alert(payload)
        return None

    def _verdict(self, uid: str, doc: Any) -> None:
        if not isinstance(doc, dict):  # an empty retained message: the series was purged
            self.series.pop(uid, None)
            return
        triage = doc.get("triage") or {}
        self.series[uid] = SeriesRow(
            uid, str(doc.get("series_description", "")), str(doc.get("modality", "")),
            int(doc.get("instances", 0)), str(doc.get("state", "")),
            str((doc.get("qc") or {}).get("status", "")), _triage_cell(triage),
            summarize_deliveries(doc.get("deliveries") or {}), bool(doc.get("superseded")),
        )  # fmt: skip
        while len(self.series) > MAX_SERIES:
            self.series.pop(min(self.series.values(), key=lambda r: r.updated).uid)

    def _alert(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        alert_id = str(doc.get("id", ""))
        if alert_id in self.seen_alert_ids:  # at-least-once delivery: drop the duplicate
            return None
        self.seen_alert_ids.add(alert_id)
        self.alerts = [doc, *self.alerts][:50]
        return doc


def alert_text(doc: dict[str, Any]) -> str:
    reasons = "; ".join(str(r.get("message", "")) for r in doc.get("reasons") or [])
    what = doc.get("series_description") or doc.get("series_uid") or "agent"
    action = str(doc.get("action", "none")).upper()
    head = f"{doc.get('severity', '').upper()} {doc.get('kind', '')}"
    return f"{head}: {action if action != 'NONE' else ''} {what}: {reasons}".replace("  ", " ")


Send = Callable[[dict[str, str]], Awaitable[None]]


class ConsoleApp(App[None]):
    TITLE = "scanner-agent console"
    CSS = """
    #top { height: 1; background: $primary-background; }
    #banner { height: auto; max-height: 3; background: darkred; color: white;
              text-style: bold; display: none; }
    #banner.shown { display: block; }
    DataTable { height: 1fr; }
    #alerts { height: 4; border-top: solid $secondary; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "command('release')", "Release"),
        Binding("h", "command('hold')", "Hold"),
        Binding("x", "command('repeat')", "Repeat"),
        Binding("escape", "dismiss", "Clear banner"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, cfg: AgentConfig, by: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.by = by
        self.model = ConsoleModel()
        self.link_state = "connecting"
        self.source: MqttSource | FeedSource = (
            MqttSource(cfg, self) if cfg.mqtt is not None else FeedSource(cfg, self)
        )

    def compose(self) -> ComposeResult:
        yield Static(id="top", markup=False)  # text from the network is never markup
        yield Static(id="banner", markup=False)
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        for name in COLUMNS:
            table.add_column(name, key=name)
        yield table
        yield Static(id="alerts", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._draw_top()
        self.run_worker(self.source.run(), name="source", exclusive=True)

    # -- from the sources ------------------------------------------------------------------

    def receive(self, topic: str, payload: Any) -> None:
        alert = self.model.apply(topic, payload)
        if topic.startswith("series/"):
            self._draw_series(topic.removeprefix("series/"))
        if alert is not None:
            self._draw_alert(alert)
        self._draw_top()

    def set_link(self, state: str) -> None:
        self.link_state = state
        self._draw_top()

    # -- drawing ---------------------------------------------------------------------------

    def _draw_top(self) -> None:
        where = self.source.where
        text = f"{self.cfg.agent_id}  agent {self.model.agent_state}  {where} {self.link_state}"
        self.query_one("#top", Static).update(text[:80])

    def _draw_series(self, uid: str) -> None:
        table: DataTable[str] = self.query_one(DataTable)
        row = self.model.series.get(uid)
        if row is None:
            if uid in table.rows:
                table.remove_row(uid)
            return
        if uid in table.rows:
            for name, value in zip(COLUMNS, row.cells(), strict=True):
                table.update_cell(uid, name, value)
        else:
            table.add_row(*row.cells(), key=uid)
        for stale in [k.value for k in table.rows if k.value not in self.model.series]:
            if stale is not None:
                table.remove_row(stale)

    def _draw_alert(self, alert: dict[str, Any]) -> None:
        lines = [alert_text(a)[:78] for a in self.model.alerts[:3]]
        self.query_one("#alerts", Static).update("\n".join(lines))
        if alert.get("severity") == "critical":
            banner = self.query_one("#banner", Static)
            banner.update(alert_text(alert)[:70] + "  [Esc]")
            banner.add_class("shown")
            self.bell()

    # -- keys ------------------------------------------------------------------------------

    def selected_series(self) -> str | None:
        table: DataTable[str] = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return key.value

    async def action_command(self, action: str) -> None:
        uid = self.selected_series()
        if uid is None:
            self.notify("no series selected", severity="warning")
            return
        try:
            await self.source.send({"action": action, "series_uid": uid, "by": self.by})
        except (aiomqtt.MqttError, OSError) as exc:
            self.notify(f"{action} not sent: {exc}", severity="error")
            return
        self.notify(f"{action} sent for {self.model.series[uid].description or uid}")

    def action_dismiss(self) -> None:
        self.query_one("#banner", Static).remove_class("shown")

    def export_text(self) -> str:
        """The screen as plain text (what ``export_screenshot`` draws as SVG)."""
        width, height = self.size
        console = Console(width=width, height=height, file=io.StringIO(), record=True,
                          force_terminal=True, color_system=None, legacy_windows=False)  # fmt: skip
        compositor = self.screen._compositor
        console.print(compositor.render_update(full=True, screen_stack=[], simplify=True))
        return console.export_text(styles=False)


class MqttSource:
    """Follows ``P/A/#`` on the broker; reconnects with backoff; publishes commands."""

    def __init__(self, cfg: AgentConfig, app: ConsoleApp) -> None:
        assert cfg.mqtt is not None
        self.cfg = cfg
        self.mqtt = cfg.mqtt
        self.app = app
        self.topics = Topics.of(cfg.mqtt, cfg.agent_id)
        self.where = f"broker {self.mqtt.url.split('://', 1)[1]}"
        self._client: aiomqtt.Client | None = None

    def _settings(self) -> dict[str, Any]:
        settings = client_settings(self.mqtt, self.cfg.agent_id)
        suffix = f"{os.getpid()}-{random.randrange(1 << 16):04x}"
        settings.update(identifier=f"scanner-agent-console-{suffix}", clean_session=True,
                        will=None)  # fmt: skip
        return settings

    async def run(self) -> None:
        attempt = 0
        while True:
            self.app.set_link("connecting")
            try:
                settings = await anyio.to_thread.run_sync(self._settings)
                async with aiomqtt.Client(**settings) as client:
                    attempt = 0
                    await self._follow(client)
            except (aiomqtt.MqttError, BrokerSetupError, OSError) as exc:
                self.app.set_link(f"offline: {describe_error(exc)[:40]}")
            finally:
                self._client = None
            attempt += 1
            await anyio.sleep(backoff_s(attempt, self.mqtt.reconnect_max_s))

    async def _follow(self, client: aiomqtt.Client) -> None:
        await client.subscribe(f"{self.topics.base}/#", qos=1)
        self._client = client
        self.app.set_link("online")
        prefix = self.topics.base + "/"
        async for message in client.messages:
            topic = message.topic.value.removeprefix(prefix)
            if topic != "commands" and not topic.startswith("commands/"):
                self.app.receive(topic, _decode(message.payload))

    async def send(self, command: dict[str, str]) -> None:
        if self._client is None:
            raise aiomqtt.MqttError("not connected to the broker")
        # as the broker user this console logged in as: the ACL proves it, the audit keeps it
        user = self.mqtt.username
        topic = self.topics.commands_of(user) if user else self.topics.commands
        await self._client.publish(topic, json.dumps(command), qos=1)


class FeedSource:
    """Follows ``<storage>/feed.jsonl`` across rotations; commands go to ``commands/``."""

    POLL_S = 0.2

    def __init__(self, cfg: AgentConfig, app: ConsoleApp) -> None:
        self.storage = cfg.storage_path
        self.path = cfg.storage_path / FEED_NAME
        self.app = app
        self.where = "feed"

    async def run(self) -> None:
        for old in (self.path.with_name(FEED_NAME + ".1"),):  # history first
            await self._read_all(old)
        inode, offset = None, 0
        while True:
            stat = await anyio.to_thread.run_sync(_stat, self.path)
            if stat is None:
                self.app.set_link("waiting for the agent")
            else:
                if stat[0] != inode or stat[1] < offset:  # rotated or replaced
                    await self._finish_rotated(inode, offset)
                    inode, offset = stat[0], 0
                offset = await self._read_from(offset)
                self.app.set_link("following")
            await anyio.sleep(self.POLL_S)

    async def _finish_rotated(self, inode: int | None, offset: int) -> None:
        """Lines written to the old file after our last look, before it was renamed."""
        old = self.path.with_name(FEED_NAME + ".1")
        stat = await anyio.to_thread.run_sync(_stat, old)
        if inode is not None and stat is not None and stat[0] == inode:
            await self._read_from(offset, old)

    async def _read_all(self, path: Path) -> None:
        if await anyio.to_thread.run_sync(_stat, path) is not None:
            for line in (await anyio.Path(path).read_text("utf-8")).splitlines():
                self._line(line)

    async def _read_from(self, offset: int, path: Path | None = None) -> int:
        data = await anyio.to_thread.run_sync(_read_from, path or self.path, offset)
        complete = data[: data.rfind(b"\n") + 1]  # a half-written last line waits
        for line in complete.decode("utf-8", "replace").splitlines():
            self._line(line)
        return offset + len(complete)

    def _line(self, line: str) -> None:
        try:
            doc = json.loads(line)
            self.app.receive(str(doc["topic"]), doc.get("payload"))
        except (ValueError, KeyError, TypeError):
            log.debug("skipped a bad feed line: %.80s", line)

    async def send(self, command: dict[str, str]) -> None:
        await anyio.to_thread.run_sync(drop_command, self.storage, command)


def _decode(payload: Any) -> Any:
    if not payload:
        return None
    try:
        return json.loads(payload)
    except (ValueError, TypeError):
        return None


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(1 << 20)


def run_console(cfg: AgentConfig, by: str) -> None:
    ConsoleApp(cfg, by).run()
