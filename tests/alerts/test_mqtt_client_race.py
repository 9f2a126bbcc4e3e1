"""The write-watch race under a dying connection (see agent/alerts/mqtt_client.py).

paho asks for a write watch; before the event loop adds it, the socket closes. Stock aiomqtt
then hands a closed descriptor to the loop (``OSError: [Errno 9]`` in its exception
handler); the agent's client skips the watch. The stock case is asserted too, so this test
says so when an aiomqtt release fixes the race and the override can go.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiomqtt
import anyio
import pytest

from agent.alerts.mqtt_client import GuardedClient
from tests.support.broker import Mosquitto

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the race is in aiomqtt's asyncio selector hooks


async def loop_errors_when_socket_closes_under_a_write_watch(
    cls: type[aiomqtt.Client], broker: Mosquitto
) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            async with cls("127.0.0.1", broker.port, identifier=f"race-{cls.__name__}",
                           keepalive=1) as client:  # fmt: skip
                paho = client._client
                sock = paho.socket()
                assert sock is not None
                client._on_socket_register_write(paho, None, sock)  # as paho's sender thread would
                sock.close()  # the broker went away before the loop ran the request
                await anyio.sleep(0.2)
    finally:
        loop.set_exception_handler(before)
    return errors


async def test_stock_aiomqtt_hands_the_loop_a_closed_socket(mosquitto: Mosquitto) -> None:
    errors = await loop_errors_when_socket_closes_under_a_write_watch(aiomqtt.Client, mosquitto)
    assert any(isinstance(e.get("exception"), OSError) for e in errors), (
        "aiomqtt no longer shows the race: drop agent/alerts/mqtt_client.py's overrides"
    )


async def test_agent_client_skips_the_watch_of_a_closed_socket(mosquitto: Mosquitto) -> None:
    errors = await loop_errors_when_socket_closes_under_a_write_watch(GuardedClient, mosquitto)
    assert errors == []
