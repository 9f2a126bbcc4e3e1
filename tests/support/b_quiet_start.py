"""Start an AgentProcess without probing its port: a bare TCP connect (what
``wait_for_port`` does) is itself held by pynetdicom as a pending association for up to
its ACSE timeout, which would skew tests that count associations."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from tests.support.agent_proc import AgentProcess

# agent.receive.receiver logs "DICOM SCP <AE> listening on <bind>:<port>"
LISTENING = re.compile(r"DICOM SCP \S+ listening on ")


def start_quietly(agent: AgentProcess, timeout: float = 180.0) -> AgentProcess:
    """Like ``agent.start()``, but waits for the listener's log line instead of connecting."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with agent.log_path.open("ab") as log:
        agent.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(agent.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + timeout  # a cold Numba cache compiles first
    while not LISTENING.search(agent.log()):
        if agent.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {agent.proc.returncode}:\n{agent.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"agent did not listen within {timeout} s:\n{agent.log()[-4000:]}")
        time.sleep(0.05)
    return agent
