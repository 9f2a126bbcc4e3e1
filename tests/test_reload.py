"""SIGHUP re-reads the config: a new route applies to the next series while an association
stays open across the reload; a bad config is refused with a system alert naming the error
and the running config is kept; a change that needs a restart is reported (issue 14)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.peers import storescu
from tests.support.scu import associate

pytestmark = pytest.mark.integration


def _hangup(agent: AgentProcess, edit: Any, reloads: int) -> None:
    """Rewrite the agent's config with ``edit(doc)``, send SIGHUP, wait until it is read."""
    doc = yaml.safe_load(agent.config_path.read_text())
    edit(doc)
    agent.config_path.write_text(yaml.safe_dump(doc))
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for_log("received SIGHUP", reloads)


def _delivered_to(agent: AgentProcess, series_uid: str) -> set[str]:
    rows = agent.wait_for(
        "SELECT d.destination, d.state FROM deliveries d JOIN instances i ON i.id = d.instance_id"
        " WHERE i.series_uid = ?", lambda r: r and {x[1] for x in r} == {"delivered"}, 60,
        series_uid,
    )  # fmt: skip
    return {r[0] for r in rows}


def _send(agent: AgentProcess, folder: Path) -> str:
    hdr = series_header("ROUTED")
    storescu(agent.port, write_ct_series(folder, 2, images_in_acquisition=2, header=hdr))
    return str(hdr.SeriesInstanceUID)


def _system_alert(agent: AgentProcess, code: str, timeout: float = 30.0) -> dict[str, Any]:
    """The first system alert with ``code`` in the feed; it follows its log line shortly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = (agent.storage / "feed.jsonl").read_text().splitlines()
        for doc in (json.loads(x) for x in lines):
            alert = doc["payload"] if doc["topic"] == "alerts" else None
            if alert and alert["kind"] == "system" and alert["reasons"][0]["code"] == code:
                return dict(alert)
        time.sleep(0.1)
    raise AssertionError(f"no {code} system alert in the feed\n{agent.log()[-3000:]}")


def test_sighup_applies_a_route_keeps_associations_and_refuses_a_bad_config(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(forward={
        "destinations": [{"kind": "folder", "name": "a", "path": str(tmp_path / "a")},
                         {"kind": "folder", "name": "b", "path": str(tmp_path / "b")}],
        "default_to": ["a"],
    }).start()  # fmt: skip
    assert _delivered_to(agent, _send(agent, tmp_path / "s1")) == {"a"}

    held = associate(agent.port)  # open across the reload
    assert held.is_established

    def to_b(doc: dict[str, Any]) -> None:
        doc["forward"]["default_to"] = ["b"]

    _hangup(agent, to_b, 1)
    agent.wait_for_log("config reloaded", 1)
    assert held.is_established and held.send_c_echo().Status == 0x0000
    assert _delivered_to(agent, _send(agent, tmp_path / "s2")) == {"b"}

    def broken(doc: dict[str, Any]) -> None:
        doc["forward"]["default_to"] = ["nowhere"]
        doc["dicom"]["port"] = 70000

    _hangup(agent, broken, 2)
    agent.wait_for_log("reload refused", 1)
    message = _system_alert(agent, "config.reload-failed")["reasons"][0]["message"]
    assert "dicom.port" in message and "nowhere" in message, message
    assert _delivered_to(agent, _send(agent, tmp_path / "s3")) == {"b"}, "the old config runs on"

    def new_port(doc: dict[str, Any]) -> None:
        doc["forward"]["default_to"] = ["b"]
        doc["dicom"]["port"] = agent.port + 1

    _hangup(agent, new_port, 3)
    agent.wait_for_log("config reloaded", 2)
    later = _system_alert(agent, "config.restart-needed")["reasons"][0]["message"]
    assert "dicom.port" in later, later
    assert held.send_c_echo().Status == 0x0000, "still the same listener, still connected"
    held.release()


def test_sighup_adds_changes_and_removes_destinations(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    folder = {"kind": "folder", "name": "a", "path": str(tmp_path / "a")}
    agent = agent_factory(forward={"destinations": [folder], "default_to": ["a"]}).start()
    assert _delivered_to(agent, _send(agent, tmp_path / "s1")) == {"a"}

    def add_b(doc: dict[str, Any]) -> None:
        doc["forward"]["destinations"].append(
            {"kind": "folder", "name": "b", "path": str(tmp_path / "b")})  # fmt: skip
        doc["forward"]["default_to"] = ["b"]

    _hangup(agent, add_b, 1)
    agent.wait_for_log("destinations added b", 1)
    assert _delivered_to(agent, _send(agent, tmp_path / "s2")) == {"b"}
    assert len(list((tmp_path / "b").rglob("*.dcm"))) == 2

    def move_b(doc: dict[str, Any]) -> None:
        doc["forward"]["destinations"][1]["path"] = str(tmp_path / "b2")

    _hangup(agent, move_b, 2)
    agent.wait_for_log("destinations changed b", 1)
    assert _delivered_to(agent, _send(agent, tmp_path / "s3")) == {"b"}
    assert len(list((tmp_path / "b2").rglob("*.dcm"))) == 2, "the new worker has the new path"
    assert len(list((tmp_path / "b").rglob("*.dcm"))) == 2, "and the old one sent nothing more"

    def drop_a(doc: dict[str, Any]) -> None:
        del doc["forward"]["destinations"][0]

    _hangup(agent, drop_a, 3)
    note = _system_alert(agent, "config.destination-removed")["reasons"][0]["message"]
    assert "destination(s) a removed" in note, note
    assert _delivered_to(agent, _send(agent, tmp_path / "s4")) == {"b"}
    assert "config.restart-needed" not in (agent.storage / "feed.jsonl").read_text()


def test_sighup_sets_model_modes_and_refuses_an_unknown_model(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(triage={"enabled": True}).start()

    def shadow(doc: dict[str, Any]) -> None:
        doc["triage"]["models"] = [{"name": "ich", "mode": "shadow"}]

    _hangup(agent, shadow, 1)
    agent.wait_for_log("config reloaded", 1)

    def typo(doc: dict[str, Any]) -> None:
        doc["triage"]["models"] = [{"name": "icj", "mode": "shadow"}]

    _hangup(agent, typo, 2)
    message = _system_alert(agent, "config.reload-failed")["reasons"][0]["message"]
    assert "triage.models[0].name: no model 'icj'" in message, message
    assert "config.restart-needed" not in (agent.storage / "feed.jsonl").read_text()
