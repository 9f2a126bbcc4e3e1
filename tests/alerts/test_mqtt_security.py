"""TLS and passwords against a real Mosquitto: certificates made here with ``cryptography``,
the password file with ``mosquitto_passwd``. Right credentials connect; wrong ones are
refused with one clear log line; a certificate for another host name is not trusted."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.alerts.notifier import Notifier
from tests.support.alert_samples import agent_config
from tests.support.broker import (
    Mosquitto,
    TlsFiles,
    make_passwd,
    make_tls,
    subscriber,
    unique_prefix,
)

pytestmark = pytest.mark.anyio
USER, PASSWORD = "ct1", "s3cret-for-tests"



@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "pki")


@pytest.fixture
def secure_broker(tmp_path: Path, tls: TlsFiles) -> Any:
    broker = Mosquitto(
        tmp_path / "broker", tls=tls, passwd=make_passwd(tmp_path / "passwd", USER, PASSWORD)
    ).start()
    yield broker
    broker.stop()


def mqtt_settings(broker: Mosquitto, tls: TlsFiles, **extra: Any) -> dict[str, Any]:
    return {
        "url": broker.url, "topic_prefix": unique_prefix(), "username": USER,
        "tls": {"ca_file": str(tls.ca), "cert_file": str(tls.client_cert),
                "key_file": str(tls.client_key)},
        **extra,
    }  # fmt: skip


def client_tls(tls: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    return ctx


async def run_for(cfg: Any, seconds: float) -> Notifier:
    notifier = Notifier.open(cfg)
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        with anyio.move_on_after(seconds):
            while notifier.link_state != "online":
                await anyio.sleep(0.02)
        states = notifier.link_state
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    notifier.outbox.close()
    notifier.final_state = states  # type: ignore[attr-defined]
    return notifier


async def test_right_credentials_and_certificate_connect(
    tmp_path: Path, secure_broker: Mosquitto, tls: TlsFiles
) -> None:
    pw = tmp_path / "mqtt.pw"
    pw.write_text(PASSWORD + "\n")
    settings = mqtt_settings(secure_broker, tls, password_file=str(pw))
    base = f"{settings['topic_prefix']}/ct-1"
    async with subscriber(secure_broker.port, f"{base}/status", username=USER,
                          password=PASSWORD, tls_context=client_tls(tls)) as sub:  # fmt: skip
        n = await run_for(agent_config(tmp_path / "state", settings), 10)
        await sub.wait_for(lambda ms: any(m.json()["state"] == "online" for m in ms))
    assert n.final_state == "online"  # type: ignore[attr-defined]


async def test_wrong_password_is_refused_with_one_clear_line(
    tmp_path: Path, secure_broker: Mosquitto, tls: TlsFiles,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("MQTT_TEST_PASSWORD", "not-the-password")
    caplog.set_level(logging.INFO, "agent.alerts.mqtt")
    settings = mqtt_settings(secure_broker, tls, password_env="MQTT_TEST_PASSWORD")
    n = await run_for(agent_config(tmp_path / "state", settings), 3)
    assert n.final_state != "online"  # type: ignore[attr-defined]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [  # Mosquitto 2 answers a wrong password with "not authorized"
        "MQTT broker refused the connection: not authorized"
        " (check mqtt.username and its password_file or password_env)"
    ]
    assert "not-the-password" not in caplog.text


async def test_missing_password_variable_is_named(
    tmp_path: Path, secure_broker: Mosquitto, tls: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    settings = mqtt_settings(secure_broker, tls, password_env="MQTT_TEST_UNSET_VARIABLE")
    await run_for(agent_config(tmp_path / "state", settings), 1)
    assert "MQTT not started: mqtt.password_env: $MQTT_TEST_UNSET_VARIABLE is not set" in [
        r.getMessage() for r in caplog.records
    ]


async def test_certificate_for_another_host_is_not_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = make_tls(tmp_path / "pki", server_names=("broker.example",))
    broker = Mosquitto(tmp_path / "broker", tls=tls).start()
    try:
        n = await run_for(agent_config(tmp_path / "state", mqtt_settings(broker, tls)), 2)
    finally:
        broker.stop()
    assert n.final_state != "online"  # type: ignore[attr-defined]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("MQTT TLS handshake failed"), errors
