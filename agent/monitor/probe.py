"""``check-config --probe``: is each peer the config names reachable now? One line each.

A DIMSE destination gets a C-ECHO (Verification), the broker a connect and disconnect under
a client id of its own, so a running agent's session is never taken over. Folder and STOW
destinations are not probed (a folder is checked by ``run``; STOW has no echo).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import aiomqtt
import anyio
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from agent.alerts.mqtt import BrokerSetupError, client_settings, describe_error
from agent.config import AgentConfig, DimseDestination
from agent.forward.dimse_sender import _client_tls

TIMEOUT_S = 10


def probe_all(cfg: AgentConfig) -> list[tuple[bool, str]]:
    """(ok, line) per DIMSE destination and for the broker."""
    results = [
        echo(dest, cfg.dicom.ae_title)
        for dest in cfg.forward.destinations
        if isinstance(dest, DimseDestination)
    ]
    if cfg.mqtt is not None:
        results.append(probe_broker(cfg))
    return results


def echo(dest: DimseDestination, calling: str) -> tuple[bool, str]:
    where = f"forward.destinations {dest.name} ({dest.ae_title}@{dest.host}:{dest.port})"
    ae = AE(ae_title=dest.calling_ae_title or calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    ae.add_requested_context(Verification)
    try:  # pynetdicom reports a refused connection only as "no association": ask TCP first
        socket.create_connection((dest.host, dest.port), timeout=TIMEOUT_S).close()
        tls = (_client_tls(dest.tls), dest.host) if dest.tls else None
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls)
    except OSError as exc:
        return False, f"{where}: cannot connect: {exc.strerror or exc}"
    if not assoc.is_established:
        why = "association rejected" if assoc.is_rejected else "no association (refused or timed out)"
        return False, f"{where}: {why}"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = int(status.Status) if status and "Status" in status else None
    if code != 0:
        return False, f"{where}: C-ECHO answered {'nothing' if code is None else f'0x{code:04X}'}"
    return True, f"{where}: C-ECHO ok"


def probe_broker(cfg: AgentConfig) -> tuple[bool, str]:
    assert cfg.mqtt is not None
    where = f"mqtt {cfg.mqtt.url}"
    try:
        settings: dict[str, Any] = client_settings(cfg.mqtt, cfg.agent_id)
    except BrokerSetupError as exc:
        return False, f"{where}: {exc}"
    settings.pop("will")
    settings.update(identifier=f"scanner-agent-probe-{os.getpid()}", clean_session=True)

    async def connect() -> None:
        with anyio.fail_after(TIMEOUT_S + 5):
            async with aiomqtt.Client(**settings):
                pass

    try:
        anyio.run(connect)
    except Exception as exc:  # aiomqtt, paho and ssl raise their own kinds; describe_error maps
        return False, f"{where}: {describe_error(exc)}"
    return True, f"{where}: connected"
