"""The console, driven headless at 80x24 by textual's Pilot against a real Mosquitto (and
against the local feed): an incoming alert shows, and a key press sends the command.

``CONSOLE_CAPTURE_DIR=docs python -m pytest tests/test_console.py`` also writes the 80x24
captures used in the docs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiomqtt
import anyio
import pytest

from agent.alerts.feed import FEED_NAME, FeedWriter, feed_line
from agent.operator.console import ConsoleApp
from tests.support.alert_samples import agent_config, repeat_alert, series_uid, verdict
from tests.support.broker import Mosquitto, subscriber, unique_prefix

pytestmark = pytest.mark.anyio



async def until(predicate: object, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.05)


def capture(app: ConsoleApp, name: str) -> None:
    folder = os.environ.get("CONSOLE_CAPTURE_DIR")
    if folder:
        Path(folder, f"{name}.svg").write_text(app.export_screenshot())
        Path(folder, f"{name}.txt").write_text(app.export_text())


async def test_console_shows_alert_and_sends_hold(tmp_path: Path, mosquitto: Mosquitto) -> None:
    prefix = unique_prefix()
    base = f"{prefix}/ct-1"
    cfg = agent_config(tmp_path / "state", {"url": mosquitto.url, "topic_prefix": prefix})
    app = ConsoleApp(cfg, by="tech-anna")
    uid = series_uid(7)
    v = verdict(uid, state="held", series_description="Head 5mm axial")
    others = [verdict(series_uid(n), status="pass", state="released", series_description=d)
              for n, d in ((4, "Scout"), (5, "Head 0.625mm"), (6, "Head bone"))]  # fmt: skip
    async with app.run_test(size=(80, 24)) as pilot, aiomqtt.Client(
        "127.0.0.1", mosquitto.port
    ) as agent, subscriber(mosquitto.port, f"{base}/commands") as commands:
        await until(lambda: app.link_state == "online")
        await agent.publish(f"{base}/status", json.dumps({"state": "online"}), qos=1, retain=True)
        for o in others:
            await agent.publish(f"{base}/series/{o.series_uid}", o.to_json(), qos=1, retain=True)
        await agent.publish(f"{base}/series/{uid}", v.to_json(), qos=1, retain=True)
        await agent.publish(f"{base}/alerts", repeat_alert(v).to_json(published_at=v.last_image_at + 0.4), qos=1)
        await until(lambda: app.model.alerts and uid in app.model.series)
        await pilot.pause()
        banner = str(app.query_one("#banner").render())
        assert "CRITICAL qc: REPEAT Head 5mm axial" in banner and "[Esc]" in banner and app.query_one("#banner").has_class("shown")
        assert "motion streaks" in app.export_text()
        capture(app, "console-80x24")
        table = app.query_one("DataTable")
        table.move_cursor(row=table.get_row_index(uid))  # type: ignore[attr-defined]
        await pilot.press("h")
        await commands.wait_for(lambda ms: ms)
    assert commands.messages[0].json() == {"action": "hold", "series_uid": uid, "by": "tech-anna"}


async def test_console_follows_the_feed_and_drops_commands(tmp_path: Path) -> None:
    storage = tmp_path / "state"
    cfg = agent_config(storage)
    writer = FeedWriter(storage / FEED_NAME, 10_000)
    v = verdict(series_uid(9), status="warn", state="complete")
    app = ConsoleApp(cfg, by="tech-ben")
    async with app.run_test(size=(80, 24)) as pilot:
        writer.write([feed_line(f"series/{v.series_uid}", json.loads(v.to_json()))])
        await until(lambda: v.series_uid in app.model.series)
        for n in range(60):  # past the cap: the feed rotates under the console
            writer.write([feed_line("alerts", {**json.loads(repeat_alert(v).to_json()), "id": str(n)})])
            await anyio.sleep(0.02)
        await until(lambda: len(app.model.seen_alert_ids) == 60)
        await pilot.press("r")
        await until(lambda: list((storage / "commands").glob("*.json")))
        assert "following" in app.link_state
    (dropped,) = (storage / "commands").glob("*.json")
    assert json.loads(dropped.read_text()) == {"action": "release", "series_uid": v.series_uid, "by": "tech-ben"}
    assert (storage / (FEED_NAME + ".1")).exists(), "the feed rotated during the test"
