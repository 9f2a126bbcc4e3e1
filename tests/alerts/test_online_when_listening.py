"""The agent says "online" only once its DICOM listener is open: a console or monitor that
reads the status can send at once (issue 14, readiness)."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.support.agent_proc import AgentProcess
from tests.support.broker import Mosquitto, subscriber, unique_prefix
from tests.support.cli import scanner_agent

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _listening(port: int) -> bool:
    """One connection attempt, no retry: is the port open right now?"""
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_online_is_published_after_the_listener_opens(
    agent_factory: Any, mosquitto: Mosquitto
) -> None:
    prefix = unique_prefix()
    agent: AgentProcess = agent_factory(mqtt={"url": mosquitto.url, "topic_prefix": prefix})
    async with subscriber(mosquitto.port, f"{prefix}/test-agent/status") as sub, \
            anyio.create_task_group() as tg:  # fmt: skip
        tg.start_soon(anyio.to_thread.run_sync, agent.start)  # its warm-up runs meanwhile
        msgs = await sub.wait_for(lambda m: any(x.json()["state"] == "online" for x in m), 240)
        open_at_online = _listening(agent.port)
    assert [x.json()["state"] for x in msgs][-1] == "online"
    assert open_at_online, "the status said online while the DICOM port was still closed"


def test_warmup_verb_fills_the_cache() -> None:
    run = scanner_agent("warmup", timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("kernels compiled in "), run.stdout
