"""tests/support/notifier_runner.py as a subprocess: the notifier alone, which a test can kill -9."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml


class Runner:
    """tests/support/notifier_runner.py as a subprocess: the notifier alone, killable."""

    def __init__(self, tmp: Path, mqtt: dict[str, Any], **extra: Any) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.storage = tmp / "state"
        mqtt = {"reconnect_max_s": 1.0, "keepalive": 5, "client_id": tmp.name, **mqtt}
        config = {"agent_id": "ct-1", "storage": {"path": str(self.storage)}, "mqtt": mqtt,
                  **extra}  # fmt: skip
        self.config_path = tmp / "agent.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp / "runner.log"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Runner:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.notifier_runner", str(self.config_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log_path.open("w"),
            text=True,
        )  # fmt: skip
        return self

    def send(self, doc: dict[str, str]) -> None:
        assert self.proc and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(doc) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok", self.log()

    def kill9(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def runner_factory(tmp_path: Path) -> Iterator[Callable[..., Runner]]:
    """Start runners (each with its own storage and client id); all killed at teardown."""
    started: list[Runner] = []

    def make(mqtt: dict[str, Any], **extra: Any) -> Runner:
        runner = Runner(tmp_path / f"runner{len(started)}", mqtt, **extra)
        started.append(runner.start())
        return runner

    yield make
    for runner in started:
        runner.stop()
