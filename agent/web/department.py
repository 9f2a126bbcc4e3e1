"""The department view: every agent publishing under this agent's broker prefix.

Each agent keeps its status (``P/A/status``) and each series' latest verdict
(``P/A/series/<uid>``) retained on the broker, so subscribing to ``P/+/status`` and
``P/+/series/+`` is enough to see every scanner at once, including ones that started
before this console and ones that went offline (their last will says so). Everything here
is read from the network, so topics and payloads are checked and bounded: agent ids as the
config allows them, payloads up to :data:`MAX_PAYLOAD`, at most :data:`MAX_AGENTS` agents
and :data:`MAX_SERIES_PER_AGENT` series each (the newest kept).

Without a broker the page shows this agent alone, from its own journal.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import anyio

from agent.alerts.mqtt import BrokerSetupError, backoff_s, describe_error, observer_settings
from agent.config import AgentConfig

log = logging.getLogger(__name__)

MAX_PAYLOAD = 65536
MAX_AGENTS = 64
MAX_SERIES_PER_AGENT = 200
_AGENT_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_UID_RE = re.compile(r"[0-9.]{1,64}")
_OPEN_STATES = {"held"}  # a series waiting for the technologist's decision


@dataclass
class AgentView:
    agent_id: str
    status: dict[str, Any] = field(default_factory=dict)
    series: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> verdict, in order

    def summary(self) -> dict[str, Any]:
        verdicts = list(self.series.values())
        last = verdicts[-1] if verdicts else None
        open_series = [v for v in verdicts if v.get("state") in _OPEN_STATES]
        return {
            "agent_id": self.agent_id,
            "state": str(self.status.get("state", "unknown")),
            "scanner": _scanner(self.status, verdicts),
            "since": self.status.get("at"),
            "last_series": last,
            "open_alerts": len(open_series),
            "open": open_series[-5:],
            "series": len(verdicts),
        }


class Department:
    def __init__(self) -> None:
        self.agents: dict[str, AgentView] = {}
        self.link = "off"

    def apply(self, agent_id: str, kind: str, uid: str | None, payload: bytes) -> None:
        """One retained message below ``P/<agent_id>/``; anything malformed is ignored."""
        if not _AGENT_RE.fullmatch(agent_id) or len(payload) > MAX_PAYLOAD:
            return
        if uid is not None and not _UID_RE.fullmatch(uid):
            return
        view = self.agents.get(agent_id)
        if view is None:
            if len(self.agents) >= MAX_AGENTS:
                return
            view = self.agents[agent_id] = AgentView(agent_id)
        doc = _json(payload)
        if kind == "status" and isinstance(doc, dict):
            view.status = doc
        elif kind == "series" and uid is not None:
            view.series.pop(uid, None)
            if isinstance(doc, dict):  # empty: the series was purged
                view.series[uid] = doc
            while len(view.series) > MAX_SERIES_PER_AGENT:
                view.series.pop(next(iter(view.series)))

    def summaries(self) -> list[dict[str, Any]]:
        return [self.agents[a].summary() for a in sorted(self.agents)]


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload) if payload else None
    except (UnicodeDecodeError, ValueError):
        return None


def _scanner(status: dict[str, Any], verdicts: list[dict[str, Any]]) -> str:
    """The scanner behind an agent, as its images name it (station name, modality)."""
    for v in reversed(verdicts):
        station, modality = v.get("station_name"), v.get("modality")
        if isinstance(station, str) and station:
            return f"{station} ({modality})" if isinstance(modality, str) and modality else station
    return str(status.get("scanner", "")) if isinstance(status.get("scanner"), str) else ""


class DepartmentFeed:
    """Follows the broker with a client id of its own (never the agent's session)."""

    def __init__(self, cfg: AgentConfig, department: Department) -> None:
        assert cfg.mqtt is not None
        self.cfg = cfg
        self.mqtt = cfg.mqtt
        self.department = department

    def _settings(self) -> dict[str, Any]:
        return observer_settings(self.mqtt, self.cfg.agent_id, "web")

    async def run(self) -> None:
        attempt = 0
        while True:
            self.department.link = "connecting"
            try:
                settings = await anyio.to_thread.run_sync(self._settings)
                async with aiomqtt.Client(**settings) as client:
                    attempt = 0
                    await self._follow(client)
            except (aiomqtt.MqttError, BrokerSetupError, OSError) as exc:
                self.department.link = f"offline: {describe_error(exc)}"
                log.warning("web department view: %s", describe_error(exc))
            attempt += 1
            await anyio.sleep(backoff_s(attempt, self.mqtt.reconnect_max_s))

    async def _follow(self, client: aiomqtt.Client) -> None:
        prefix = self.mqtt.topic_prefix
        await client.subscribe([(f"{prefix}/+/status", 1), (f"{prefix}/+/series/+", 1)])
        self.department.link = "online"
        for_us = prefix + "/"
        async for message in client.messages:
            levels = message.topic.value.removeprefix(for_us).split("/")
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            if len(levels) == 2 and levels[1] == "status":
                self.department.apply(levels[0], "status", None, bytes(payload))
            elif len(levels) == 3 and levels[1] == "series":
                self.department.apply(levels[0], "series", levels[2], bytes(payload))
