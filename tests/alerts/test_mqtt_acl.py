"""Commands only from whom they claim to be (issue 13, item 5), against a real Mosquitto with
a password file and the shipped config/mosquitto/acl.example: a command on
``P/A/commands/<user>`` is audited under the broker-authenticated user, whatever its ``by``
says; writing another user's topic or the shared topic is refused by the broker."""

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
from tests.support.broker import Mosquitto, Subscriber, make_passwd, subscriber, unique_prefix

pytestmark = pytest.mark.anyio
ACL_EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "mosquitto" / "acl.example"
PASSWORDS = {"ct1": "agent-secret", "anna": "anna-secret", "ben": "ben-secret"}


def site_acl(folder: Path, prefix: str) -> Path:
    """The shipped example, with this test's topic prefix in place of the default one."""
    text = ACL_EXAMPLE.read_text()
    assert "pattern write scanner-agent/+/commands/%u" in text
    path = folder / "acl"
    path.write_text(text.replace("scanner-agent/", f"{prefix}/"))
    return path


@dataclass
class Site:
    broker: Mosquitto
    notifier: Notifier
    actions: SeriesActions
    sub: Subscriber
    base: str

    def client(self, user: str) -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", self.broker.port, username=user,
                              password=PASSWORDS[user], identifier=f"{user}-console")  # fmt: skip

    async def series_state(self, uid: str, state: str) -> None:
        def found(ms: Any) -> bool:
            return any(m.json()["state"] == state for m in self.sub.on(f"/series/{uid}"))

        await self.sub.wait_for(found)

    def audit(self, uid: str) -> list[tuple[str, str, str]]:
        trail = self.actions.audit_trail(uid)
        return [(a["who"], a["action"], a["to_state"]) for a in trail]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    prefix = unique_prefix()
    passwd = make_passwd(tmp_path / "passwd", "ct1", PASSWORDS["ct1"],
                         anna=PASSWORDS["anna"], ben=PASSWORDS["ben"])  # fmt: skip
    acl = site_acl(tmp_path, prefix)
    broker = Mosquitto(tmp_path / "broker", passwd=passwd, extra=(f"acl_file {acl}",)).start()
    (tmp_path / "pw").write_text(PASSWORDS["ct1"])
    storage = tmp_path / "state"
    seed_series(storage, series_uid(1), series_uid(2))
    cfg = agent_config(storage, {"url": broker.url, "topic_prefix": prefix, "username": "ct1",
                                 "password_file": str(tmp_path / "pw")})  # fmt: skip
    actions = SeriesActions(connect(storage / "journal.sqlite"), ["local"])
    notifier = Notifier.open(cfg, actions)
    base = f"{prefix}/ct-1"
    try:
        async with subscriber(broker.port, f"{base}/#", username="anna",
                              password=PASSWORDS["anna"]) as sub, anyio.create_task_group() as tg:  # fmt: skip
            tg.start_soon(notifier.run)
            await sub.wait_for(lambda ms: sub.on("/status"))
            for n in (1, 2):
                await notifier.series_verdict(verdict(series_uid(n), state="complete"))
            await sub.wait_for(lambda ms: sub.on(f"/series/{series_uid(2)}"))
            yield Site(broker, notifier, actions, sub, base)
            tg.cancel_scope.cancel()
    finally:
        broker.stop()


async def test_user_topic_is_audited_under_the_broker_user(site: Site) -> None:
    s1, s2 = series_uid(1), series_uid(2)
    async with site.client("anna") as anna, site.client("ben") as ben:
        claim = {"action": "hold", "series_uid": s1, "by": "ben"}  # claims to be ben
        await anna.publish(f"{site.base}/commands/anna", json.dumps(claim), qos=1)
        await site.series_state(s1, "held")
        forged = {"action": "release", "series_uid": s1, "by": "ben"}
        await anna.publish(f"{site.base}/commands/ben", json.dumps(forged), qos=1)  # not hers
        await anna.publish(f"{site.base}/commands", json.dumps(forged), qos=1)  # shared: closed
        # ben's own command goes to the agent after anna's two: the broker delivers in order,
        # so once it is applied, hers would have been too had the broker let them through
        await ben.publish(f"{site.base}/commands/ben", json.dumps(
            {"action": "repeat", "series_uid": s2}), qos=1)  # fmt: skip
        await site.series_state(s2, "held")
    assert site.audit(s1) == [("anna", "hold", "held")], "the topic's user, not the claim"
    assert site.audit(s2) == [("ben", "repeat", "held")], "by is optional on a user topic"
    log = site.broker.log()
    denied = [line for line in log.splitlines() if "Denied PUBLISH from anna-console" in line]
    assert [line.split("'")[1] for line in denied] == [
        f"{site.base}/commands/ben", f"{site.base}/commands"], "the broker refused both"  # fmt: skip
    assert site.notifier.link_state == "online"
    with pytest.raises(aiomqtt.MqttError):  # and nobody gets in without a password
        async with aiomqtt.Client("127.0.0.1", site.broker.port) as anonymous:
            await anonymous.publish(f"{site.base}/commands/anna", b"{}", qos=1)


async def test_bad_user_level_is_refused_with_a_system_alert(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """On a broker without the ACL the topic's user is not proven, but still checked."""
    storage = tmp_path / "state"
    seed_series(storage, series_uid(1))
    prefix = unique_prefix()
    cfg = agent_config(storage, {"url": mosquitto.url, "topic_prefix": prefix})
    actions = SeriesActions(connect(storage / "journal.sqlite"), ["local"])
    notifier = Notifier.open(cfg, actions)
    base = f"{prefix}/ct-1"
    hold = json.dumps({"action": "hold", "series_uid": series_uid(1), "by": "x"})
    async with subscriber(mosquitto.port, f"{base}/#") as sub, anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        await notifier.series_verdict(verdict(series_uid(1), state="complete"))
        await sub.wait_for(lambda ms: sub.on(f"/series/{series_uid(1)}"))  # after subscribing
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.publish(f"{base}/commands/a b", hold, qos=1)
            await client.publish(f"{base}/commands", hold, qos=1)
        await sub.wait_for(lambda ms: any(
            m.json()["state"] == "held" for m in sub.on(f"/series/{series_uid(1)}")))  # fmt: skip
        tg.cancel_scope.cancel()
    codes = [m.json()["reasons"][0]["code"] for m in sub.on("/alerts")]
    assert "bad-command" in codes
    message = next(m.json() for m in sub.on("/alerts"))["reasons"][0]["message"]
    assert "names no valid user" in message
    trail = actions.audit_trail(series_uid(1))
    assert [(a["who"], a["action"]) for a in trail] == [("x (unauthenticated)", "hold")]


class _Screen:
    """What MqttSource needs of the console app: where the link state and messages go."""

    def __init__(self) -> None:
        self.link = ""

    def set_link(self, state: str) -> None:
        self.link = state

    def receive(self, topic: str, payload: Any) -> None:
        pass


async def test_the_console_sends_as_its_broker_user(site: Site, tmp_path: Path) -> None:
    from agent.operator.console import MqttSource

    (tmp_path / "anna-pw").write_text(PASSWORDS["anna"])
    prefix = site.base.rsplit("/", 1)[0]
    cfg = agent_config(tmp_path / "console", {
        "url": site.broker.url, "topic_prefix": prefix, "username": "anna",
        "password_file": str(tmp_path / "anna-pw")})  # fmt: skip
    screen = _Screen()
    source = MqttSource(cfg, screen)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        with anyio.fail_after(30):
            while screen.link != "online":
                await anyio.sleep(0.05)
        await source.send({"action": "hold", "series_uid": series_uid(1), "by": "anyone"})
        await site.series_state(series_uid(1), "held")
        tg.cancel_scope.cancel()
    assert site.audit(series_uid(1)) == [("anna", "hold", "held")]
    assert "Denied PUBLISH from" not in site.broker.log(), "the ACL let the console's user in"
