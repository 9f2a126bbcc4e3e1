"""Start-up: one agent per state directory, and every start-up failure in one line.

The agents are real subprocesses (tests/support/agent_proc.py); a failed start is run to its
exit, and its stderr must be one line that names the problem by its YAML path."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_proc import AgentProcess
from tests.support.peers import dcmtk_env, require_tool

pytestmark = pytest.mark.integration
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


def run_to_exit(agent: AgentProcess, *flags: str) -> subprocess.CompletedProcess[str]:
    """``scanner-agent [FLAGS] run -c`` for an agent expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *flags, "run", "-c", str(agent.config_path)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of the refusal; the agent's own log lines (timestamped) may precede it."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    lines = [ln for ln in result.stderr.strip().splitlines() if not LOG_LINE.match(ln)]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def c_echo(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("echoscu"), "-aet", "SCANNER", "-aec", "EDGE", "127.0.0.1", str(port)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_second_agent_on_the_same_state_directory_is_refused(
    agent_factory: type[AgentProcess],
) -> None:
    first = agent_factory().start()
    in_flight = first.storage / "incoming" / "being-received.part"
    in_flight.write_bytes(b"half a data set")  # what recovery at start-up would delete
    second = agent_factory(storage={"path": str(first.storage)})
    line = one_line(run_to_exit(second))
    pid = first.proc.pid if first.proc else None
    assert line == f"scanner-agent: storage.path {first.storage}: in use by scanner-agent pid {pid}"
    assert in_flight.exists(), "the second agent touched the first one's spool"
    echo = c_echo(first.port)
    assert echo.returncode == 0, echo.stderr
    assert first.proc is not None and first.proc.poll() is None


def test_a_state_directory_is_free_again_after_kill_9(agent_factory: type[AgentProcess]) -> None:
    first = agent_factory().start()
    first.kill9()
    again = agent_factory(storage={"path": str(first.storage)}).start()
    assert c_echo(again.port).returncode == 0


def test_port_in_use_is_one_line(agent_factory: type[AgentProcess]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        agent = agent_factory(dicom={"port": port})
        line = one_line(run_to_exit(agent))
        assert f"dicom.port {port}: cannot listen on 127.0.0.1: address in use" in line, line
        debug = run_to_exit(agent, "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr, debug.stderr[-3000:]


def test_missing_certificate_is_one_line(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    tls: dict[str, Any] = {"cert_file": str(tmp_path / "no.crt"), "key_file": str(tmp_path / "no.key")}
    line = one_line(run_to_exit(agent_factory(dicom={"tls": tls})))
    assert f"dicom.tls.cert_file {tmp_path / 'no.crt'}: cannot read: No such file" in line, line
    assert "dicom.tls.key_file" in line, line


def test_unusable_state_directory_is_one_line(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file where a folder should be")
    agent = agent_factory(storage={"path": str(blocker / "sub")})
    line = one_line(run_to_exit(agent))
    assert line.startswith(f"scanner-agent: storage.path {blocker / 'sub'}: cannot use it"), line


def test_bad_config_is_one_line(agent_factory: type[AgentProcess]) -> None:
    agent = agent_factory()
    agent.config_path.write_text("dicom: {port: 0, colour: red}\n")
    line = one_line(run_to_exit(agent))
    assert "dicom.port: must be between 1 and 65535" in line and "dicom.colour: unknown key" in line


def test_missing_onnxruntime_names_the_extra(agent_factory: type[AgentProcess]) -> None:
    agent = agent_factory(triage={"enabled": True})
    # None in sys.modules is how Python spells "not installed" for one interpreter
    code = ("import sys; sys.modules['onnxruntime'] = None; from agent.cli import main; "
            f"raise SystemExit(main(['run', '-c', {str(agent.config_path)!r}]))")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False
    )
    line = one_line(result)
    assert "onnxruntime is not installed: pip install 'scanner-agent[cpu]'" in line, line
