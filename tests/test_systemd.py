"""The systemd unit verifies, and the agent speaks sd_notify to a real socket."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess
from tests.support.peers import require_tool

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "scanner-agent.service"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    agent_bin = shutil.which("scanner-agent")
    assert agent_bin, "the package must be installed (pip install -e .)"
    # verify checks that ExecStart exists, so point it at this machine's installation
    unit = tmp_path / "scanner-agent.service"
    unit.write_text(
        UNIT.read_text().replace("/opt/scanner-agent/venv/bin/scanner-agent", agent_bin)
    )
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "scanner-agent.service" not in result.stderr, result.stderr


def test_unit_is_hardened() -> None:
    text = UNIT.read_text()
    for setting in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=",
                    "DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes",
                    "NoNewPrivileges=yes", "PrivateTmp=yes", "CapabilityBoundingSet=",
                    "RestrictAddressFamilies=", "EnvironmentFile="):  # fmt: skip
        assert setting in text, setting


@pytest.mark.integration
def test_ready_watchdog_and_stopping_are_notified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
        monkeypatch.setenv("WATCHDOG_USEC", "400000")
        agent = AgentProcess(tmp_path).start()
        messages = [sock.recv(4096).decode()]
        while messages[-1] != "READY=1":  # warm-up asks for more start time first
            messages.append(sock.recv(4096).decode())
        messages += [sock.recv(4096).decode() for _ in range(2)]
        assert agent.stop() == 0
        while True:
            msg = sock.recv(4096).decode()
            messages.append(msg)
            if msg == "STOPPING=1":
                break
    ready = messages.index("READY=1")
    warming = messages[:ready]
    assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in warming), warming
    assert all(m.startswith(("STATUS=", "EXTEND_TIMEOUT_USEC=")) for m in warming), warming
    assert "WATCHDOG=1" in messages[ready:]
    assert messages[-1] == "STOPPING=1"
