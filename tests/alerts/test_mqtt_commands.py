"""Commands over MQTT: release, hold and repeat change the series and are audited; garbage,
unknown actions and unknown series are answered with system alerts; nothing stops."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import pytest

from agent.alerts.notifier import Notifier
from agent.journal.database import connect
from agent.journal.series_actions import SeriesActions
from tests.support.alert_samples import agent_config, seed_series, series_uid, verdict
from tests.support.broker import Mosquitto, Subscriber, subscriber, unique_prefix

pytestmark = pytest.mark.anyio



@dataclass
class Rig:
    notifier: Notifier
    actions: SeriesActions
    sub: Subscriber
    commander: aiomqtt.Client
    base: str

    async def send(self, payload: bytes | dict[str, Any]) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.commander.publish(f"{self.base}/commands", raw, qos=1)

    async def system_alert(self, code: str) -> dict[str, Any]:
        def found(ms: Any) -> bool:
            return any(a["reasons"][0]["code"] == code for a in self.alerts())

        await self.sub.wait_for(found)
        return next(a for a in self.alerts() if a["reasons"][0]["code"] == code)

    def alerts(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.sub.on("/alerts")]

    async def series_state(self, uid: str, state: str) -> dict[str, Any]:
        def found(ms: Any) -> bool:
            return any(m.json()["state"] == state for m in self.sub.on(f"/series/{uid}"))

        await self.sub.wait_for(found)
        return next(m.json() for m in self.sub.on(f"/series/{uid}") if m.json()["state"] == state)


@pytest.fixture
async def rig(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Rig]:
    storage = tmp_path / "state"
    seed_series(storage, series_uid(1), series_uid(2))
    prefix = unique_prefix()
    cfg = agent_config(storage, {"url": mosquitto.url, "topic_prefix": prefix})
    actions = SeriesActions(connect(storage / "journal.sqlite"), ["local"])
    notifier = Notifier.open(cfg, actions)
    base = f"{prefix}/ct-1"
    async with subscriber(mosquitto.port, f"{base}/#") as sub, aiomqtt.Client(
        "127.0.0.1", mosquitto.port
    ) as commander, anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        await sub.wait_for(lambda ms: sub.on("/status"))
        for n in (1, 2):
            await notifier.series_verdict(verdict(series_uid(n), state="complete"))
        yield Rig(notifier, actions, sub, commander, base)
        tg.cancel_scope.cancel()


def journal_state(storage: Path, uid: str) -> Any:
    conn = connect(storage / "journal.sqlite", readonly=True)
    try:
        return dict(conn.execute("SELECT * FROM series WHERE series_uid = ?", (uid,)).fetchone())
    finally:
        conn.close()


async def test_hold_release_repeat_change_state_and_are_audited(rig: Rig, tmp_path: Path) -> None:
    s1, s2 = series_uid(1), series_uid(2)
    await rig.send({"action": "hold", "series_uid": s1, "by": "tech-anna"})
    assert (await rig.series_state(s1, "held"))["superseded"] is False
    await rig.send({"action": "release", "series_uid": s1, "by": "tech-anna"})
    await rig.series_state(s1, "released")
    await rig.send({"action": "repeat", "series_uid": s2, "by": "tech-ben"})
    assert (await rig.series_state(s2, "held"))["superseded"] is True
    storage = tmp_path / "state"
    assert journal_state(storage, s1)["state"] == "released"
    conn = connect(storage / "journal.sqlite", readonly=True)
    queued = conn.execute("SELECT COUNT(*) FROM deliveries d JOIN instances i ON i.id = d.instance_id"
                          " WHERE i.series_uid = ?", (s1,)).fetchone()[0]  # fmt: skip
    conn.close()
    assert queued == 1, "a release queues the series for every destination"
    trail = rig.actions.audit_trail(s1)
    assert [(a["who"], a["action"], a["from_state"], a["to_state"]) for a in trail] == [
        ("tech-anna (unauthenticated)", "hold", "complete", "held"),  # the shared topic
        ("tech-anna (unauthenticated)", "release", "held", "released"),
    ]
    superseded_by = journal_state(storage, s2)["superseded_by"]
    assert rig.actions.is_superseded(s2) and superseded_by == "tech-ben (unauthenticated)"
    assert rig.actions.replacement_of(s2) is None  # still waiting for the repeat
    seed_series(storage, series_uid(3))  # the repeat arrives, same study
    assert rig.actions.replacement_of(s2) == series_uid(3)
    outcomes = []
    with anyio.move_on_after(0.5):
        async for outcome in rig.notifier.commands():
            outcomes.append(outcome.command.action)
    assert outcomes == ["hold", "release", "repeat"]


async def test_bad_commands_answer_with_system_alerts_and_nothing_stops(rig: Rig) -> None:
    s1 = series_uid(1)
    await rig.send(b"{not json")
    bad_json = await rig.system_alert("bad-json")
    assert bad_json["kind"] == "system" and bad_json["severity"] == "warning"
    await rig.send({"action": "explode", "series_uid": s1, "by": "x"})
    unknown = await rig.system_alert("unknown-action")
    assert "explode" in unknown["reasons"][0]["message"] and unknown["series_uid"] == s1
    await rig.send({"action": "hold", "series_uid": "1.2.3.999", "by": "x"})
    assert "1.2.3.999" in (await rig.system_alert("unknown-series"))["reasons"][0]["message"]
    await rig.send({"action": "hold", "series_uid": s1})
    assert "by: required" in (await rig.system_alert("bad-command"))["reasons"][0]["message"]
    await rig.send(b"\xff\xfe" * 10)
    await rig.send(b"[1, 2]")
    await rig.send(b"x" * 10_000)
    await rig.system_alert("command-too-large")
    await rig.send({"action": "release", "series_uid": s1, "by": "x"})
    await rig.series_state(s1, "released")
    await rig.send({"action": "hold", "series_uid": s1, "by": "x"})
    refused = await rig.system_alert("command-refused")
    assert refused["reasons"][0]["message"] == "cannot hold a series that is released"
    codes = [a["reasons"][0]["code"] for a in rig.alerts()]
    assert codes.count("bad-json") == 2 and codes.count("bad-command") == 2, codes
    assert rig.notifier.link_state == "online"
    assert [a["applied"] for a in rig.actions.audit_trail(s1)] == [1, 0]
