"""Retries back off exponentially, capped, with jitter; a destination whose oldest undelivered
item is older than ``forward.alert_after_s`` raises one ``forward.backlog`` system alert
(README step 6)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, RetryConfig
from agent.forward.forwarder import DestinationWorker, backoff_s
from agent.forward.senders import FolderSender
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import free_port, storescu


def test_backoff_doubles_from_initial_up_to_the_cap() -> None:
    cfg = RetryConfig(initial_s=0.5, max_s=10.0, jitter=0.0)
    delays = [backoff_s(n, cfg, random.Random(0)) for n in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_backoff_stays_capped_however_long_the_outage() -> None:
    cfg = RetryConfig(initial_s=1.0, max_s=300.0, jitter=0.2)
    rng = random.Random(1)
    for failures in (20, 1024, 1025, 10_000, 10**9):  # a weekend's outage and far beyond
        assert 240.0 <= backoff_s(failures, cfg, rng) <= 360.0


def test_jitter_spreads_the_same_attempt_within_its_band() -> None:
    cfg = RetryConfig(initial_s=1.0, max_s=300.0, jitter=0.2)
    rng = random.Random(42)
    fourth = [backoff_s(4, cfg, rng) for _ in range(50)]  # base 8 s
    assert len(set(fourth)) > 40, "each call draws its own jitter"
    assert all(6.4 <= d <= 9.6 for d in fourth)
    assert min(fourth) < 7.6 and max(fourth) > 8.4, "the band is used both ways"


def test_jitter_is_deterministic_for_a_seeded_rng() -> None:
    cfg = RetryConfig(initial_s=1.0, max_s=60.0, jitter=0.5)
    first = [backoff_s(n, cfg, random.Random(7)) for n in range(1, 12)]
    again = [backoff_s(n, cfg, random.Random(7)) for n in range(1, 12)]
    other = [backoff_s(n, cfg, random.Random(8)) for n in range(1, 12)]
    assert first == again and first != other


class AgedQueue:
    """Stands in for the delivery queue: only the age of the oldest undelivered item."""

    def __init__(self) -> None:
        self.age: float | None = None

    def oldest_undelivered_age(self, destination: str) -> float | None:
        return self.age


@pytest.mark.anyio
async def test_backlog_alert_once_past_alert_after_s_and_again_after_recovery(
    tmp_path: Path,
) -> None:
    cfg = AgentConfig.model_validate(
        {"storage": {"path": str(tmp_path)}, "forward": {"alert_after_s": 100}}
    )
    alerts: list[tuple[str, str]] = []

    async def alert(code: str, message: str) -> None:
        alerts.append((code, message))

    queue = AgedQueue()
    worker = DestinationWorker("pacs", FolderSender(tmp_path), queue, cfg, alert)  # type: ignore[arg-type]
    for age in (None, 10.0, 99.0):
        queue.age = age
        await worker._check_age()
    assert alerts == [], "not before alert_after_s"
    for age in (101.0, 150.0, 400.0):
        queue.age = age
        await worker._check_age()
    assert [code for code, _ in alerts] == ["forward.backlog"], "one alert per backlog"
    assert "pacs" in alerts[0][1] and "101 s" in alerts[0][1]
    queue.age = None  # delivered: the backlog is gone
    await worker._check_age()
    queue.age = 120.0
    await worker._check_age()
    assert [code for code, _ in alerts] == ["forward.backlog"] * 2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def backlog_alerts(agent: AgentProcess) -> list[dict[str, Any]]:
    feed = agent.storage / "feed.jsonl"
    lines = feed.read_text().splitlines() if feed.exists() else []
    docs = [json.loads(line) for line in lines]
    return [
        d["payload"] for d in docs
        if d["topic"] == "alerts" and any(r["code"] == "forward.backlog" for r in d["payload"]["reasons"])
    ]  # fmt: skip


@pytest.mark.integration
def test_unreachable_destination_raises_a_backlog_system_alert(
    agent_factory: Any, tmp_path: Path
) -> None:
    down = {
        "name": "pacs",
        "ae_title": "PACS",
        "host": "127.0.0.1",
        "port": free_port(),
    }  # nothing listens
    forward = {
        "destinations": [down],
        "alert_after_s": 1,
        "retry": {"initial_s": 0.1, "max_s": 0.3},
    }
    agent = agent_factory(forward=forward).start()
    storescu(agent.port, write_ct_series(tmp_path / "s", 2, images_in_acquisition=2))
    deadline = time.monotonic() + 60
    while not backlog_alerts(agent) and time.monotonic() < deadline:
        time.sleep(0.1)
    alerts = backlog_alerts(agent)
    assert alerts, f"no forward.backlog alert in the feed\n--- agent log ---\n{agent.log()[-3000:]}"
    alert = alerts[0]
    assert (alert["kind"], alert["severity"]) == ("system", "warning")
    assert "destination pacs" in alert["reasons"][0]["message"]
    (attempts,) = agent.query("SELECT MAX(attempts) FROM deliveries")[0]
    agent.wait_for("SELECT MAX(attempts) FROM deliveries", lambda r: r[0][0] >= attempts + 3, 60)
    assert len(backlog_alerts(agent)) == 1, "retrying goes on without repeating the alert"
    states = {r[0] for r in agent.query("SELECT state FROM deliveries")}
    assert states == {"queued"}, "nothing is given up while the destination is down"
