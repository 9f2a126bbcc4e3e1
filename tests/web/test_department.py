"""The department view: two agents share a real Mosquitto under one topic prefix, and the
console of one lists both, from their retained status and series topics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.support.broker import Mosquitto, unique_prefix
from tests.support.peers import storescu
from tests.support.qc_series import write_series
from tests.support.web import add_users, login, web_overrides

pytestmark = pytest.mark.integration


def wait_for_department(http: Any, predicate: Any, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = http.get("/api/department").json()
        if predicate({a["agent_id"]: a for a in doc["agents"]}):
            return doc
        time.sleep(0.1)
    raise AssertionError(f"the department view never showed it; last: {doc}")


def test_department_lists_two_agents_sharing_a_broker(
    agent_factory: Any, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    mqtt = {"url": mosquitto.url, "topic_prefix": prefix}
    console = agent_factory(agent_id="ct-a", mqtt=mqtt, **web_overrides())
    add_users(console)
    console.start()
    other = agent_factory(agent_id="mr-b", mqtt=mqtt, qc={"enabled": True}).start()
    files = write_series(tmp_path / "ring", "ring", 3, n=4)
    uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    storescu(other.port, files)

    http, _ = login(console, "rad")
    doc = wait_for_department(
        http,
        lambda agents: (
            {"ct-a", "mr-b"} <= set(agents)
            and agents["mr-b"]["open_alerts"] == 1
            and agents["ct-a"]["state"] == "online"
        ),
    )
    assert doc["link"] == "online"
    b = next(a for a in doc["agents"] if a["agent_id"] == "mr-b")
    assert b["state"] == "online"
    assert b["last_series"]["series_uid"] == uid
    assert (b["last_series"]["label"], b["last_series"]["state"]) == ("HEAD RING", "held")
    assert [s["series_uid"] for s in b["open"]] == [uid]
    a = next(a for a in doc["agents"] if a["agent_id"] == "ct-a")
    assert a["open_alerts"] == 0 and a["last_series"] is None

    other.stop()  # its offline status is retained: the view says so
    wait_for_department(http, lambda agents: agents["mr-b"]["state"] == "offline", 30)
    page = http.get("/department")
    assert page.status_code == 200 and "Department" in page.text


def test_hostile_messages_are_ignored_and_bounded() -> None:
    from agent.web.department import MAX_AGENTS, MAX_PAYLOAD, MAX_SERIES_PER_AGENT, Department

    dept = Department()
    dept.apply("ct-1", "status", None, b'{"state": "online"}')
    dept.apply("<script>", "status", None, b'{"state": "online"}')  # not an agent id
    dept.apply("ct-1", "series", "1.2.3/../x", b'{"state": "held"}')  # not a UID
    dept.apply("ct-1", "series", "1.2.4", b"\xff\xfe not json")
    dept.apply("ct-1", "series", "1.2.5", b"[1, 2]")
    dept.apply("ct-1", "series", "1.2.6", b'{"state": "held"}' + b" " * MAX_PAYLOAD)
    assert [a["agent_id"] for a in dept.summaries()] == ["ct-1"]
    assert dept.agents["ct-1"].series == {}
    for n in range(MAX_SERIES_PER_AGENT + 10):
        dept.apply("ct-1", "series", f"1.2.{n}", b'{"state": "held"}')
    summary = dept.summaries()[0]
    assert summary["series"] == MAX_SERIES_PER_AGENT
    assert (
        summary["last_series"] == {"state": "held"}
        and summary["open_alerts"] == MAX_SERIES_PER_AGENT
    )
    dept.apply("ct-1", "series", f"1.2.{MAX_SERIES_PER_AGENT + 9}", b"")  # purged: retained cleared
    assert dept.summaries()[0]["series"] == MAX_SERIES_PER_AGENT - 1
    for n in range(MAX_AGENTS + 5):
        dept.apply(f"a{n}", "status", None, b'{"state": "online"}')
    assert len(dept.agents) == MAX_AGENTS
