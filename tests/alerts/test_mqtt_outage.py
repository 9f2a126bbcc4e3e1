"""Broker outages: what is produced while Mosquitto is down arrives, in order, once per id,
when it comes back, even when the agent itself was killed -9 in between."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import pytest

from agent.alerts.notifier import Notifier
from agent.alerts.outbox import Outbox
from tests.support.alert_samples import agent_config, repeat_alert, series_uid, verdict
from tests.support.broker import Mosquitto, Received, subscriber, unique_prefix

pytestmark = pytest.mark.anyio



async def watch_alerts(broker: Mosquitto, topic: str, want: int, settle_s: float = 1.0) -> list[Any]:
    """A persistent-session consumer (like a console): reconnects until it has ``want``
    alerts, then listens ``settle_s`` longer so duplicates would show."""
    got: list[Any] = []
    with anyio.fail_after(30):
        while len(got) < want:
            try:
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher",
                                          clean_session=False) as client:  # fmt: skip
                    await client.subscribe(topic, qos=1)
                    with anyio.move_on_after(settle_s * 3):
                        async for m in client.messages:
                            got.append(Received(m.topic.value, bytes(m.payload), m.retain).json())  # type: ignore[arg-type]
                            if len(got) >= want:
                                break
                    with anyio.move_on_after(settle_s):
                        async for m in client.messages:
                            got.append(Received(m.topic.value, bytes(m.payload), m.retain).json())  # type: ignore[arg-type]
            except aiomqtt.MqttError:
                await anyio.sleep(0.2)
    return got


async def register_watcher(broker: Mosquitto, topic: str) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher",
                              clean_session=False) as client:  # fmt: skip
        await client.subscribe(topic, qos=1)


@pytest.fixture
async def notifier(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Notifier]:
    cfg = agent_config(tmp_path / "state", {"url": mosquitto.url, "topic_prefix": unique_prefix()})
    n = Notifier.open(cfg)
    async with anyio.create_task_group() as tg:
        tg.start_soon(n.run)
        yield n
        tg.cancel_scope.cancel()
    n.outbox.close()


async def wait_state(n: Notifier, state: str) -> None:
    with anyio.fail_after(15):
        while n.link_state != state:
            await anyio.sleep(0.02)


async def test_alerts_produced_during_an_outage_arrive_in_order_once(
    notifier: Notifier, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agent.alerts.mqtt")
    base = notifier.link.topics.base  # type: ignore[union-attr]
    await register_watcher(mosquitto, f"{base}/alerts")
    await wait_state(notifier, "online")
    mosquitto.stop()
    await wait_state(notifier, "offline")
    sent = []
    for n in (1, 2, 3):
        v = verdict(series_uid(n))
        alert = repeat_alert(v)
        sent.append(alert.id)
        await notifier.series_verdict(v, alert)
    assert await anyio.to_thread.run_sync(notifier.outbox.backlog) == 6
    await anyio.sleep(1.5)  # a few reconnection attempts against the dead port
    mosquitto.restart()
    alerts = await watch_alerts(mosquitto, f"{base}/alerts", 3)
    assert [a["id"] for a in alerts] == sent, "every alert once, in the order produced"
    assert [a["series_uid"] for a in alerts] == [series_uid(n) for n in (1, 2, 3)]
    assert alerts[0]["latency_ms"] > 1500, "latency counts the outage"
    async with subscriber(mosquitto.port, f"{base}/series/#") as sub:
        await sub.wait_for(lambda ms: len(ms) == 3)
    assert all(m.retain for m in sub.messages)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    lines = [line for line in lines if line.startswith("MQTT")]
    assert len(lines) == 2, lines  # one line for the loss, one for the failing retries
    assert lines[0].startswith("MQTT connection lost")
    assert lines[1] == "MQTT connection failed: [Errno 111] Connection refused"
    assert await anyio.to_thread.run_sync(notifier.outbox.backlog) == 0


async def test_outbox_survives_kill9_during_outage(
    mosquitto: Mosquitto, runner_factory: Any
) -> None:
    prefix = unique_prefix()
    base = f"{prefix}/ct-1"
    await register_watcher(mosquitto, f"{base}/alerts")
    mosquitto.stop()
    runner = runner_factory({"url": mosquitto.url, "topic_prefix": prefix})
    for n in (1, 2, 3):
        runner.send({"verdict": series_uid(n)})
    runner.kill9()
    backlog = Outbox.open(runner.storage / "journal.sqlite")
    assert backlog.backlog() == 6
    backlog.close()
    mosquitto.restart()
    runner.start()  # the same storage: it finds the backlog in the journal
    alerts = await watch_alerts(mosquitto, f"{base}/alerts", 3)
    assert [a["series_uid"] for a in alerts] == [series_uid(n) for n in (1, 2, 3)]
    assert len({a["id"] for a in alerts}) == 3
