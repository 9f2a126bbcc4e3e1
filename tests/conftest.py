from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Numba compiles slowly; keep its cache beside the checkout (gitignored) across runs.
os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache")
)

from tests.support.agent_proc import AgentProcess
from tests.support.broker import mosquitto  # noqa: F401  (the real-broker fixture)
from tests.support.notifier_proc import runner_factory  # noqa: F401  (the notifier as a process)
from tests.support.orthanc import Orthanc
from tests.support.peers import StoreSCP


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


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    """Orthanc servers on free ports, each in its own folder; all stopped at teardown.
    Not started: a test may choose when (``.start()``), and may stop and restart them."""
    made: list[Orthanc] = []

    def make(name: str = "orthanc", **settings: Any) -> Orthanc:
        server = Orthanc(tmp_path / f"{name}{len(made)}", **settings)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def orthanc(orthanc_factory: Callable[..., Orthanc]) -> Orthanc:
    return orthanc_factory().start()


@pytest.fixture
def storescp_factory(tmp_path: Path) -> Iterator[Callable[..., StoreSCP]]:
    """dcmtk storescp processes writing into their own folders; all stopped at teardown."""
    made: list[StoreSCP] = []

    def make(*flags: str, aet: str = "PACS") -> StoreSCP:
        made.append(StoreSCP(tmp_path / f"storescp{len(made)}", *flags, aet=aet))
        return made[-1]

    yield make
    for scp in made:
        scp.stop()
