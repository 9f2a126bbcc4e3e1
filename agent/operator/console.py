"""The technologist console: ``scanner-agent console [-c CONFIG]``.

A terminal UI (textual) that fits 80x24: the recent series with state, QC, triage and
delivery; a red banner and the terminal bell for a critical alert; keys to release, hold or
mark a repeat of the selected series. It follows the broker when ``mqtt:`` is configured
(its own client id, so it never takes the agent's session) and reconnects by itself;
otherwise it follows ``<storage>/feed.jsonl`` and drops commands into ``<storage>/commands/``.

:class:`ConsoleModel` (:mod:`agent.operator.console_model`) holds what the screen shows and
is plain Python; :class:`ConsoleApp` draws it; the two sources feed it. Beside the agent, the
console also reads the journal (:mod:`agent.operator.journal_view`): delivery states as they
move on after the verdict, and each command's answer as the journal recorded it (``hold ...:
refused: already forwarded``), not merely that it was sent.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar

import aiomqtt
import anyio
from rich.console import Console
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Static

from agent.alerts.feed import FEED_NAME, drop_command
from agent.alerts.mqtt import BrokerSetupError, Topics, backoff_s, describe_error, observer_settings
from agent.config import AgentConfig
from agent.operator.console_model import (
    COLUMNS,
    MAX_SERIES,
    ConsoleModel,
    SeriesRow,
    alert_text,
    summarize_deliveries,
)
from agent.operator.journal_view import JournalView

__all__ = ["COLUMNS", "MAX_SERIES", "ConsoleApp", "ConsoleModel", "SeriesRow", "alert_text",
           "run_console", "summarize_deliveries"]  # fmt: skip

log = logging.getLogger(__name__)

JOURNAL_POLL_S = 0.5

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
        self.journal = JournalView(cfg.storage_path / "journal.sqlite")
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
        self.run_worker(self.follow_journal(), name="journal")

    # -- from the sources ------------------------------------------------------------------

    def receive(self, topic: str, payload: Any) -> None:
        with suppress(NoMatches, ScreenStackError):  # a message that lands as the app exits
            self._receive(topic, payload)

    def _receive(self, topic: str, payload: Any) -> None:
        uid = topic.removeprefix("series/")
        before = self.model.answers.get(uid)
        alert = self.model.apply(topic, payload)
        if topic.startswith("series/"):
            self._draw_series(uid)
            if self.model.answers.get(uid) != before:  # the verdict answered a command
                self.notify(self.model.answers[uid])
        if alert is not None:
            self._draw_alert(alert)
            refused = self.model.refused_early(alert)
            if refused is not None:
                self.notify(refused, severity="warning")
        self._draw_top()

    async def follow_journal(self) -> None:
        """Series and delivery states, and the answers to commands, from the journal itself
        (when the console runs beside the agent): a verdict is not republished when its
        deliveries move on, and a refusal is not a verdict."""
        self.model.last_answer_id = await anyio.to_thread.run_sync(self.journal.last_answer_id)
        while True:
            self.model.journal_readable = self.journal.path.is_file()
            now = await anyio.to_thread.run_sync(self.journal.series_now, list(self.model.series))
            for uid in self.model.apply_journal(now):
                with suppress(NoMatches, ScreenStackError):
                    self._draw_series(uid)
            after = self.model.last_answer_id
            for answer in await anyio.to_thread.run_sync(self.journal.answers_after, after):
                text = self.model.answered(answer)
                if text is not None:
                    self.notify(text, severity="information" if answer.applied else "warning")
            await anyio.sleep(JOURNAL_POLL_S)

    def set_link(self, state: str) -> None:
        self.link_state = state
        with suppress(NoMatches, ScreenStackError):
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
        self.notify(self.model.sent(uid, action))  # the answer follows from the agent

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
        return observer_settings(self.mqtt, self.cfg.agent_id, "console")

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
