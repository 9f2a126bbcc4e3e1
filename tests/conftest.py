from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Numba compiles slowly; keep its cache beside the checkout (gitignored) across runs.
os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache")
)

from tests.support.agent_proc import AgentProcess
from tests.support.broker import mosquitto  # noqa: F401  (the real-broker fixture)
from tests.support.notifier_proc import runner_factory  # noqa: F401  (the notifier as a process)


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[type[AgentProcess]]:
    """Start agents as subprocesses; every one still running is stopped at teardown."""
    started: list[AgentProcess] = []

    class Factory(AgentProcess):
        def __init__(self, **overrides: object) -> None:
            workdir = tmp_path / f"agent{len(started)}"
            super().__init__(workdir, **overrides)
            started.append(self)

    yield Factory
    for agent in started:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()


@pytest.fixture
def agent(agent_factory: type[AgentProcess]) -> AgentProcess:
    return agent_factory().start()
