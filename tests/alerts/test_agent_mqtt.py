"""The daemon itself on a real Mosquitto: online retained at start, offline through the last
will after kill -9, and a technologist's hold and release through P/A/commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import anyio.to_thread
import pytest

from tests.support.agent_proc import AgentProcess
from tests.support.broker import Mosquitto, subscriber, unique_prefix
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import storescu

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def retained_status(port: int, base: str) -> Any:
    """What a subscriber that connects only now gets on P/A/status: the retained message."""
    async with subscriber(port, f"{base}/status") as late:
        (first, *_) = await late.wait_for(lambda m: m, 30)
    assert first.retain, "a late subscriber gets the status only if it was published retained"
    return first.json()


async def test_status_last_will_and_commands(agent_factory: Any, mosquitto: Mosquitto, tmp_path: Path) -> None:
    prefix = unique_prefix()
    base = f"{prefix}/test-agent"
    agent: AgentProcess = agent_factory(mqtt={"url": mosquitto.url, "topic_prefix": prefix}).start()
    files = write_ct_series(tmp_path / "s", 6, images_in_acquisition=12)  # short of its count
    async with subscriber(mosquitto.port, f"{base}/#") as sub:
        await sub.wait_for(lambda m: any(x.topic == f"{base}/status" and x.json()["state"] == "online" for x in m), 30)
        assert (await retained_status(mosquitto.port, base))["state"] == "online"
        await anyio.to_thread.run_sync(storescu, agent.port, files)
        series_uid = (await anyio.to_thread.run_sync(agent.query, "SELECT series_uid FROM series"))[0][0]
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            hold = {"action": "hold", "series_uid": series_uid, "by": "tech-7"}
            await client.publish(f"{base}/commands", json.dumps(hold), qos=1)
            await anyio.to_thread.run_sync(
                agent.wait_for, "SELECT state FROM series", lambda r: r and r[0][0] == "held", 30
            )
            release = {"action": "release", "series_uid": series_uid, "by": "tech-7"}
            await client.publish(f"{base}/commands", json.dumps(release), qos=1)
            await client.publish(f"{base}/commands", b"{not json", qos=1)
        await anyio.to_thread.run_sync(agent.wait_series_state, "forwarded", 30)
        await sub.wait_for(lambda m: any(x.topic == f"{base}/alerts" and x.json()["kind"] == "system" for x in m), 30)
        await anyio.to_thread.run_sync(agent.kill9)
        await sub.wait_for(
            lambda m: any(x.topic == f"{base}/status" and x.json()["state"] == "offline" for x in m), 60
        )
    after_kill = await retained_status(mosquitto.port, base)
    assert after_kill["state"] == "offline", "the last will replaces the retained status"
    audit = agent.query("SELECT who, action, to_state FROM series_audit ORDER BY id")
    who = "tech-7 (unauthenticated)"  # the shared topic: anyone may claim any name
    assert [tuple(a) for a in audit] == [(who, "hold", "held"), (who, "release", "released")]
