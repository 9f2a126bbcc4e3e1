"""Forwarding throughput and end-to-end latency (issue: store-and-forward).

Anchors in the same run: dcmtk's storescu sending the same 500 files straight to the same
kind of destination (Orthanc; dcmtk's storescp; storescp with ``--fork``, which takes several
associations at once, where the agent uses ``max_associations: 3``).

    python -m pytest benchmarks/bench_forward.py --benchmark-only -s
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import record
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.orthanc import Orthanc
from tests.support.peers import (
    dcmtk_env,
    free_port,
    require_tool,
    stop_process,
    storescu,
    wait_for_port,
)

N = 500
ROUNDS = 2


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_ct_series(tmp_path_factory.mktemp("ct500"), N, images_in_acquisition=N)


@contextmanager
def orthanc_dest(folder: Path) -> Iterator[tuple[int, Any]]:
    server = Orthanc(folder).start()
    try:
        yield server.dicom_port, lambda: len(server.instance_ids())
    finally:
        server.stop()


@contextmanager
def storescp_dest(folder: Path, *flags: str) -> Iterator[tuple[int, Any]]:
    out = folder / "out"
    out.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(
        [
            require_tool("storescp"),
            *flags,
            "--max-pdu",
            "131072",
            "-aet",
            "PACS",
            "-od",
            str(out),
            str(port),
        ],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30, proc)
        yield port, lambda: sum(1 for _ in out.iterdir())
    finally:
        stop_process(proc)


@contextmanager
def forking_storescp_dest(folder: Path) -> Iterator[tuple[int, Any]]:
    with storescp_dest(folder, "--fork") as dest:
        yield dest


DESTS = {"orthanc": orthanc_dest, "dcmtk storescp": storescp_dest,
         "dcmtk storescp --fork, 3 associations": forking_storescp_dest}  # fmt: skip
LANES = {"dcmtk storescp --fork, 3 associations": 3}


def agent_forward_rate(slices: list[Path], workdir: Path, dest: Any, lanes: int = 1) -> float:
    """Images/s from the series' completion to the last delivery the destination confirmed."""
    with dest(workdir / "dest") as (port, _count):
        target = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port,
                  "max_associations": lanes}  # fmt: skip
        agent = AgentProcess(
            workdir / "agent", forward={"destinations": [target], "batch_size": 128}
        ).start()
        try:
            storescu(agent.port, slices)
            agent.wait_for("SELECT state FROM series", lambda r: r and r[0][0] == "forwarded", 600)
            (done, last) = agent.query(
                "SELECT s.completed_at, MAX(d.delivered_at) FROM series s, deliveries d"
            )[0]
        finally:
            agent.stop()
    return N / (last - done)


def storescu_rate(slices: list[Path], workdir: Path, dest: Any) -> float:
    with dest(workdir / "dest") as (port, count):
        start = time.perf_counter()
        storescu(port, slices, called="PACS")
        elapsed = time.perf_counter() - start
        assert count() == N
    return N / elapsed


@pytest.mark.parametrize("dest", list(DESTS))
def test_forward_500_ct_slices(
    benchmark: Any, slices: list[Path], tmp_path: Path, dest: str
) -> None:
    ours: list[float] = []
    anchor: list[float] = []
    rounds = iter(range(ROUNDS))

    def one_round() -> None:
        i = next(rounds)
        ours.append(agent_forward_rate(slices, tmp_path / f"a{i}", DESTS[dest], LANES.get(dest, 1)))
        anchor.append(storescu_rate(slices, tmp_path / f"s{i}", DESTS[dest]))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    group = "forward-to-" + "-".join(dest.replace(",", "").split())
    goal = 0.8 if dest == "orthanc" else 0.5  # issue 3 (Orthanc) and issue 17 (storescp)
    ratio = statistics.median(ours) / statistics.median(anchor)
    record(group, "agent forwarder", statistics.median(ours), "images/s", ratio=ratio,
           goal=f">= {goal}x agent / storescu", met=ratio >= goal)  # fmt: skip
    record(group, "dcmtk storescu", statistics.median(anchor), "images/s", anchor=True)
    benchmark.extra_info.update(agent_images_per_s=ours, storescu_images_per_s=anchor)


def test_end_to_end_latency_300_slices(benchmark: Any, tmp_path: Path) -> None:
    """From the last image the agent received to the last image the PACS confirmed."""
    latencies: list[float] = []
    with orthanc_dest(tmp_path / "orthanc") as (port, _count):
        target = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port}
        agent = AgentProcess(tmp_path / "agent", forward={"destinations": [target]}).start()
        try:

            def one() -> None:
                files = write_ct_series(
                    tmp_path / f"s{len(latencies)}", 300, header=series_header()
                )
                storescu(agent.port, files)
                uid = agent.query(
                    "SELECT series_uid FROM series ORDER BY first_received_at DESC LIMIT 1"
                )[0][0]
                agent.wait_for(
                    "SELECT state FROM series WHERE series_uid = ?",
                    lambda r: r and r[0][0] == "forwarded",
                    300,
                    uid,
                )
                (last_in, last_out) = agent.query(
                    "SELECT MAX(i.received_at), MAX(d.delivered_at) FROM instances i JOIN deliveries d "
                    "ON d.instance_id = i.id WHERE i.series_uid = ?", uid)[0]  # fmt: skip
                latencies.append(last_out - last_in)

            benchmark.pedantic(one, rounds=2, iterations=1)
        finally:
            agent.stop()
    record(
        "end-to-end",
        "last image in -> last image confirmed by Orthanc (300 slices)",
        statistics.median(latencies),
        "s",
    )
