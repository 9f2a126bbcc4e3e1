"""Hostile strings against a real Mosquitto (issue 13): a SeriesInstanceUID with ``+``, ``#``,
``/``, NUL or a control character is published on its escaped topic with the raw UID in the
payload; a message the broker refuses is quarantined with a system alert; nothing stops the
agent or the messages queued behind."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from agent.alerts.notifier import Notifier
from agent.alerts.outbox import Outbox
from agent.config import MqttConfig, parse_config
from agent.domain.verdicts import system_alert
from agent.errors import ConfigError
from agent.journal.database import Journal
from tests.support.agent_proc import AgentProcess
from tests.support.alert_samples import agent_config, series_uid, verdict
from tests.support.broker import Mosquitto, Subscriber, subscriber, unique_prefix
from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.scu import send_files

pytestmark = pytest.mark.anyio
ROOT = "1.2.826.0.1.3680043.8.498.13"


def key(uid: str) -> str:
    """The documented rule, written again here so a change to it shows."""
    if re.fullmatch(r"[A-Za-z0-9._]{1,64}", uid):
        return uid
    return "x-" + hashlib.sha256(uid.encode()).hexdigest()[:32]


def verdicts_of(sub: Subscriber, base: str, uid: str) -> list[Any]:
    return [m.json() for m in sub.messages if m.topic == f"{base}/series/{key(uid)}" and m.payload]


def has_verdicts(sub: Subscriber, base: str, *uids: str) -> Any:
    return lambda ms: all(verdicts_of(sub, base, u) for u in uids)


def system_codes(sub: Subscriber, base: str) -> list[str]:
    alerts = [m.json() for m in sub.messages if m.topic == f"{base}/alerts"]
    return [a["reasons"][0]["code"] for a in alerts if a["kind"] == "system"]


# -- the rule and the config -------------------------------------------------------------------


@pytest.mark.parametrize(
    "uid", ["1.2.840.113619.2.55.3.604688119", "1.3.12.2.1107.5.1.4.ABCDEF01", "abc_DEF.9"]
)
def test_topic_safe_uids_keep_their_topic_byte_for_byte(uid: str) -> None:
    from agent.alerts.mqtt import Topics

    assert Topics("P/A").series(uid) == f"P/A/series/{uid}"


@pytest.mark.parametrize(
    "uid", ["1.2+3", "1.2.#", "1.2/3", "1.2\x003", "1.2\x013", "1.2.é", "1" * 65, "", "x-1",
            "1.2 3", "1.2.3\n", "\ud800"],
)  # fmt: skip
def test_unsafe_uids_are_escaped_to_one_level(uid: str) -> None:
    from agent.alerts.mqtt import Topics

    topic = Topics("P/A").series(uid)
    level = topic.removeprefix("P/A/series/")
    assert re.fullmatch(r"x-[0-9a-f]{32}", level), topic
    if uid != "\ud800":
        assert level == key(uid)
    assert Topics("P/A").series(uid + "0") != topic, "distinct UIDs, distinct topics"


@pytest.mark.parametrize(
    "prefix", ["a+b", "a/#", "a\x00b", "a\x01b", "$SYS", "a//b", "/a", "a/", "wärme", "a\n"]
)
def test_topic_prefix_refused_at_load(prefix: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"mqtt: {{topic_prefix: {prefix!r}}}".replace("'", '"'))
    assert any(p.startswith("mqtt.topic_prefix:") for p in info.value.problems), info.value


@pytest.mark.parametrize("agent_id", ["ct-1\n", "ct/1", "ct+1", "ct\x00"])
def test_agent_id_refused_at_load(agent_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"agent_id: {agent_id!r}".replace("'", '"'))
    assert any(p.startswith("agent_id:") for p in info.value.problems), info.value


def test_multi_level_prefix_is_accepted() -> None:
    assert MqttConfig(topic_prefix="site-a/ct.1_x").topic_prefix == "site-a/ct.1_x"


# -- the daemon, with C-STORE ------------------------------------------------------------------


def send_series(agent: AgentProcess, folder: Path, uid: str) -> list[int | None]:
    header = series_header("HOSTILE")
    header.SeriesInstanceUID = uid
    files = write_ct_series(folder, 2, images_in_acquisition=2, header=header)
    return send_files(agent.port, files)


@pytest.mark.integration
async def test_wildcard_uids_reach_their_safe_topic_and_the_agent_lives(
    agent_factory: Any, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    base = f"{prefix}/test-agent"
    mqtt = {"url": mosquitto.url, "topic_prefix": prefix, "reconnect_max_s": 1.0}
    agent: AgentProcess = agent_factory(mqtt=mqtt).start()
    plus, pound, normal = f"{ROOT}.1+1", f"{ROOT}.2.#", f"{ROOT}.3"
    async with subscriber(mosquitto.port, f"{base}/#") as sub:
        for n, uid in enumerate((plus, pound, normal)):
            statuses = await anyio.to_thread.run_sync(send_series, agent, tmp_path / f"s{n}", uid)
            assert statuses == [0, 0], (uid, statuses)
        await sub.wait_for(has_verdicts(sub, base, plus, pound, normal), 90)
        assert agent.proc is not None and agent.proc.poll() is None, agent.log()[-3000:]
        assert verdicts_of(sub, base, normal)[-1]["series_uid"] == normal
        assert f"{base}/series/{normal}" in {m.topic for m in sub.messages}, "unchanged topic"
        for uid in (plus, pound):
            assert verdicts_of(sub, base, uid)[-1]["series_uid"] == uid, "raw UID in payload"
        assert not any(m.topic.startswith(f"{base}/series/{ROOT}.1") for m in sub.messages)

        # a restart finds nothing poisonous and keeps publishing
        assert agent.stop() == 0, agent.log()[-3000:]
        agent.start()
        statuses = await anyio.to_thread.run_sync(send_series, agent, tmp_path / "s4", f"{ROOT}.4")
        assert statuses == [0, 0]
        await sub.wait_for(has_verdicts(sub, base, f"{ROOT}.4"), 90)
    assert agent.proc.poll() is None
    log = agent.log()
    assert "wildcards" not in log and "MQTT publisher error" not in log, log[-3000:]


def seed_poisoned_outbox(storage: Path, uid: str) -> None:
    """The journal as an older version left it: the raw UID in the stored topic."""
    storage.mkdir(parents=True, exist_ok=True)
    Journal.open(storage / "journal.sqlite").close()
    Outbox.open(storage / "journal.sqlite").close()
    conn = sqlite3.connect(storage / "journal.sqlite")
    with conn:
        conn.execute(
            "INSERT INTO alert_outbox (kind, topic, payload, retain, series_uid, created_at)"
            " VALUES ('verdict', ?, ?, 1, ?, ?)",
            (f"series/{uid}", verdict(uid).to_json(), uid, time.time()),
        )
        conn.execute(  # a row no version writes, with no UID to derive a topic from again
            "INSERT INTO alert_outbox (kind, topic, payload, retain, created_at)"
            " VALUES ('alert', 'alerts/+', ?, 0, ?)",
            (system_alert("legacy", "odd").to_json(), time.time()),
        )
        conn.execute(  # a payload that is not JSON: stamping its latency_ms raises
            "INSERT INTO alert_outbox (kind, topic, payload, retain, last_image_at, created_at)"
            " VALUES ('alert', 'alerts', '{not json', 0, ?, ?)",
            (time.time(), time.time()),
        )
    conn.close()


@pytest.mark.integration
async def test_agent_started_on_a_poisoned_outbox_lives_and_drains_it(
    agent_factory: Any, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    base = f"{prefix}/test-agent"
    poisoned = f"{ROOT}.5+"
    agent: AgentProcess = agent_factory(mqtt={"url": mosquitto.url, "topic_prefix": prefix})
    seed_poisoned_outbox(agent.storage, poisoned)
    async with subscriber(mosquitto.port, f"{base}/#") as sub:
        agent.start()
        statuses = await anyio.to_thread.run_sync(send_series, agent, tmp_path / "s", f"{ROOT}.6")
        assert statuses == [0, 0]
        await sub.wait_for(has_verdicts(sub, base, poisoned, f"{ROOT}.6"), 90)
        await sub.wait_for(lambda ms: system_codes(sub, base).count("mqtt-refused") == 2, 30)
    assert agent.proc is not None and agent.proc.poll() is None, agent.log()[-3000:]
    assert verdicts_of(sub, base, poisoned)[-1]["series_uid"] == poisoned
    wildcard, not_json = agent.query("SELECT topic, reason FROM alert_quarantine ORDER BY seq")
    assert wildcard["topic"] == "alerts/+" and "wildcard" in wildcard["reason"]
    assert not_json["topic"] == "alerts" and "JSONDecodeError" in not_json["reason"]
    agent.wait_for(  # both legacy rows leave the outbox: one sent, one quarantined
        "SELECT COUNT(*) FROM alert_outbox WHERE topic = 'alerts/+' OR series_uid = ?",
        lambda rows: rows[0][0] == 0, 30, poisoned,
    )  # fmt: skip


# -- the publisher alone, for what C-STORE may refuse ------------------------------------------


@pytest.fixture
def small_broker(tmp_path: Path) -> Any:
    """Mosquitto that drops the connection of a client sending a packet over 8 KiB."""
    broker = Mosquitto(tmp_path / "small", extra=("max_packet_size 8192",)).start()
    yield broker
    broker.stop()


@asynccontextmanager
async def running(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[tuple[Notifier, str]]:
    prefix = unique_prefix()
    cfg = agent_config(tmp_path / "state", {"url": broker.url, "topic_prefix": prefix})
    notifier = Notifier.open(cfg)
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        yield notifier, f"{prefix}/ct-1"
        tg.cancel_scope.cancel()
    notifier.outbox.close()


async def drained(notifier: Notifier) -> None:
    """Until the outbox is empty: a row leaves it just after its PUBACK, not before."""
    with anyio.fail_after(15):
        while await anyio.to_thread.run_sync(notifier.outbox.backlog):
            await anyio.sleep(0.05)


async def test_nul_control_and_slash_uids_publish_without_dropping_the_link(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    hostile = [f"{ROOT}.7\x00", f"{ROOT}.8\x01x", f"{ROOT}/9", f"{ROOT}.é", "1" * 80]
    async with running(tmp_path, mosquitto) as (notifier, base):
        async with subscriber(mosquitto.port, f"{base}/#") as sub:
            for uid in [*hostile, series_uid(1)]:
                await notifier.series_verdict(verdict(uid))
            await sub.wait_for(has_verdicts(sub, base, *hostile, series_uid(1)), 30)
        for uid in hostile:
            assert verdicts_of(sub, base, uid)[-1]["series_uid"] == uid
        assert f"{base}/series/{series_uid(1)}" in {m.topic for m in sub.messages}
        await drained(notifier)
    log = mosquitto.log()
    assert "malformed" not in log, "Mosquitto never had to drop the agent's connection"


def big_alert() -> Any:
    return system_alert("big", "x" * 20_000)  # over the broker's max_packet_size


async def test_refused_message_is_quarantined_and_the_rest_go_on(
    tmp_path: Path, small_broker: Mosquitto
) -> None:
    async with running(tmp_path, small_broker) as (notifier, base):
        async with subscriber(small_broker.port, f"{base}/#") as sub:
            await sub.wait_for(lambda ms: any(m.topic == f"{base}/status" for m in ms))
            await notifier.series_verdict(verdict(series_uid(1)))
            await notifier.system(big_alert())
            await notifier.series_verdict(verdict(series_uid(2)))
            await notifier.system(system_alert("after", "behind the big one"))
            await sub.wait_for(lambda ms: "after" in system_codes(sub, base), 60)
            await sub.wait_for(lambda ms: "mqtt-refused" in system_codes(sub, base), 30)
            await sub.wait_for(has_verdicts(sub, base, series_uid(1), series_uid(2)), 30)
        codes = system_codes(sub, base)
        assert "big" not in codes and codes.count("mqtt-refused") == 1, codes
        refusal = next(
            m.json() for m in sub.messages
            if m.topic == f"{base}/alerts" and m.json()["reasons"][0]["code"] == "mqtt-refused"
        )  # fmt: skip
        assert "closed the connection each of the 3 times" in refusal["reasons"][0]["message"]
        (bad,) = await anyio.to_thread.run_sync(notifier.outbox.quarantined)
        assert bad.kind == "alert" and "3 times" in bad.reason
        await drained(notifier)
        assert notifier.link_state == "online"
    drops = small_broker.log().count("disconnected due to oversize packet")
    assert drops <= 3 + 1, f"{drops} drops: retried past the bound"  # +1: one batch send


async def test_feed_sets_aside_a_row_that_is_not_json(tmp_path: Path) -> None:
    """Without a broker the same poison must not stop the local feed either."""
    storage = tmp_path / "state"
    storage.mkdir()
    box = Outbox.open(storage / "journal.sqlite")
    box.put(alert=("{not json", time.time()))
    box.close()
    notifier = Notifier.open(agent_config(storage))
    feed = storage / "feed.jsonl"
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        await notifier.series_verdict(verdict(f"{ROOT}.10#"))
        with anyio.fail_after(15):
            while f"series/{key(f'{ROOT}.10#')}" not in (feed.read_text() if feed.exists() else ""):
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    (bad,) = notifier.outbox.quarantined()
    assert bad.kind == "alert" and "Expecting property name" in bad.reason
    notifier.outbox.close()
