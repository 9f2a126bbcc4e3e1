"""``scanner-agent health``: does the agent for this config run, and does it serve?

Running means a live process holds the state directory's lock (a killed agent's lock is gone
with it, whatever its file still says); serving means its own listener answers a C-ECHO.
"""

from __future__ import annotations

import socket

from agent.config import AgentConfig, DimseDestination
from agent.journal.state_lock import LOCK_NAME, holder_pid, is_held
from agent.monitor.probe import TIMEOUT_S, echo


def check_health(cfg: AgentConfig) -> tuple[bool, str]:
    storage = cfg.storage_path
    pid = holder_pid(storage)
    if not is_held(storage):
        last = f" (pid {pid} held it last)" if pid else ""
        return False, f"not running: no agent holds {storage / LOCK_NAME}{last}"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(cfg.dicom.bind, cfg.dicom.bind)
    where = f"{cfg.dicom.ae_title}@{host}:{cfg.dicom.port}"
    if cfg.dicom.tls is not None:  # a C-ECHO would need a client certificate it trusts
        return _tcp_only(pid, host, cfg.dicom.port, where)
    me = DimseDestination(
        name="self", ae_title=cfg.dicom.ae_title, host=host, port=cfg.dicom.port,
        calling_ae_title=(cfg.dicom.allowed_calling_aets or ["HEALTHCHECK"])[0],
    )  # fmt: skip
    ok, line = echo(me, cfg.dicom.ae_title)
    if not ok:
        return False, f"pid {pid} holds {storage} but does not serve: {line.split(': ', 1)[1]}"
    return True, f"ok: scanner-agent pid {pid} serves {where} (C-ECHO ok), storage {storage}"


def _tcp_only(pid: int | None, host: str, port: int, where: str) -> tuple[bool, str]:
    try:
        socket.create_connection((host, port), timeout=TIMEOUT_S).close()
    except OSError as exc:
        return False, f"pid {pid} runs but {where} does not accept connections: {exc.strerror}"
    return True, f"ok: scanner-agent pid {pid} listens on {where} (TLS: TCP connect only)"
