"""The agent as a real subprocess, the way systemd runs it, so tests can kill -9 it."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.peers import free_port, stop_process, wait_for_port

# agent.receive.receiver logs "DICOM SCP <AE> listening on <bind>:<port>"
LISTENING = re.compile(r"DICOM SCP \S+ listening on ")


class AgentProcess:
    def __init__(self, workdir: Path, **overrides: Any) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.storage = workdir / "state"
        self.config_path = workdir / "agent.yaml"
        self.log_path = workdir / "agent.log"
        config: dict[str, Any] = {
            "agent_id": "test-agent",
            "storage": {"path": str(self.storage), "min_free_bytes": "1MB"},
            "dicom": {"ae_title": "EDGE", "bind": "127.0.0.1", "port": self.port},
            "series": {"grace_s": 0.5, "idle_timeout_s": {"default": 30}},
            "forward": {"destinations": [{"kind": "folder", "name": "local"}]},
            # QC and triage look at every image; the receive and forward tests switch them off
            # to stay fast and focused, and their own tests switch them on.
            "qc": {"enabled": False},
            "triage": {"enabled": False},
        }
        for key, value in overrides.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, probe_port: bool = True) -> AgentProcess:
        """Start and wait until the listener is open (a cold Numba cache compiles first).
        ``probe_port=False`` waits for the listener's log line instead of connecting, for
        tests that count every connection the agent saw."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "-c", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        if probe_port:
            wait_for_port(self.port, 180, self.proc)
        else:
            self._wait_for_log(LISTENING, 180)
        return self

    def _wait_for_log(self, pattern: re.Pattern[str], timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not pattern.search(self.log()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent did not listen within {timeout} s:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        return stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        conn = sqlite3.connect(
            f"file:{self.storage / 'journal.sqlite'}?mode=ro", uri=True, timeout=30
        )
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def wait_for(
        self, sql: str, predicate: Any, timeout: float = 30.0, *args: Any
    ) -> list[sqlite3.Row]:
        """Poll the journal until ``predicate(rows)`` holds; fail with the log otherwise."""
        deadline = time.monotonic() + timeout
        rows: list[sqlite3.Row] = []
        while time.monotonic() < deadline:
            try:
                rows = self.query(sql, *args)
            except sqlite3.OperationalError:
                rows = []
            if predicate(rows):
                return rows
            time.sleep(0.05)
        raise AssertionError(
            f"journal never satisfied the condition for {sql!r}; last rows {[dict(r) for r in rows]}"
            f"\n--- agent log ---\n{self.log()[-4000:]}"
        )

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 60.0) -> None:
        """Wait until ``text`` appears in the agent's log at least ``count`` times."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} x{count} never logged\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def wait_series_state(self, state: str = "forwarded", timeout: float = 60.0) -> None:
        """Wait until the first series the journal recorded is in ``state``."""
        self.wait_for(
            "SELECT state FROM series ORDER BY rowid LIMIT 1",
            lambda rows: bool(rows) and rows[0][0] == state,
            timeout,
        )
