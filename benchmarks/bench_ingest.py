"""Ingest, completion latency and memory of the durable receiver (issue: the spine).

Anchors, timed in the same run: pynetdicom's bare storescp app (no fsync, no journal) and
dcmtk's storescp --max-pdu 131072. The scanner is dcmtk's storescu with TCP_NODELAY=1.

    python -m pytest benchmarks/bench_ingest.py --benchmark-only -s
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks.conftest import record
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.peers import dcmtk_env, free_port, require_tool, stop_process, wait_for_port

N = 500
ROUNDS = 3


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_ct_series(tmp_path_factory.mktemp("ct500"), N)


@contextmanager
def agent_receiver(workdir: Path) -> Iterator[tuple[int, Callable[[], int]]]:
    agent = AgentProcess(workdir).start()
    try:
        yield agent.port, lambda: agent.query("SELECT COUNT(*) FROM instances")[0][0]
    finally:
        agent.stop()


@contextmanager
def process_receiver(
    cmd: list[str], port: int, out: Path
) -> Iterator[tuple[int, Callable[[], int]]]:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        cmd, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, 30, proc)
        yield port, lambda: sum(1 for _ in out.iterdir())
    finally:
        stop_process(proc)


def pynetdicom_receiver(workdir: Path) -> Any:
    port, out = free_port(), workdir / "out"
    cmd = [
        sys.executable,
        "-m",
        "pynetdicom",
        "storescp",
        str(port),
        "-aet",
        "EDGE",
        "-od",
        str(out),
        "-q",
    ]
    return process_receiver(cmd, port, out)


def dcmtk_receiver(workdir: Path) -> Any:
    port, out = free_port(), workdir / "out"
    cmd = [
        require_tool("storescp"),
        "--max-pdu",
        "131072",
        "-aet",
        "EDGE",
        "-od",
        str(out),
        str(port),
    ]
    return process_receiver(cmd, port, out)


RECEIVERS = {
    "agent (fsync + journal)": (agent_receiver, False),
    "pynetdicom storescp app": (pynetdicom_receiver, True),
    "dcmtk storescp": (dcmtk_receiver, True),
}


def send(port: int, files: list[Path], associations: int) -> None:
    """storescu over ``associations`` parallel associations; returns when all are acknowledged."""
    chunks = [files[i::associations] for i in range(associations)]
    procs = [
        subprocess.Popen(
            [
                require_tool("storescu"),
                "-aet",
                "SCANNER",
                "-aec",
                "EDGE",
                "127.0.0.1",
                str(port),
                *map(str, chunk),
            ],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]


@pytest.mark.parametrize("associations", [1, 4])
@pytest.mark.parametrize("receiver", list(RECEIVERS))
def test_ingest_500_ct_slices(
    benchmark: Any, slices: list[Path], tmp_path: Path, receiver: str, associations: int
) -> None:
    factory, is_anchor = RECEIVERS[receiver]
    benchmark.group = f"ingest-{associations}assoc"
    counts: list[int] = []

    def one_round(round_dir: Path) -> None:
        with factory(round_dir) as (port, stored):
            start = time.perf_counter()
            send(port, slices, associations)
            durations.append(time.perf_counter() - start)
            counts.append(stored())

    durations: list[float] = []
    rounds = iter(range(ROUNDS))
    benchmark.pedantic(
        lambda: one_round(tmp_path / f"r{next(rounds)}"), rounds=ROUNDS, iterations=1
    )
    assert counts == [N] * ROUNDS, f"{receiver} stored {counts}, expected {N} each round"
    rate = N / statistics.median(durations)
    benchmark.extra_info["images_per_s"] = round(rate, 1)
    record(f"ingest-{associations}assoc", receiver, rate, "images/s", anchor=is_anchor)


def test_completion_latency(benchmark: Any, tmp_path: Path) -> None:
    """From storescu's exit (its last image acknowledged, association released) to the
    journal's series-complete time, for 50-slice series completed by release + grace."""
    agent = AgentProcess(tmp_path / "agent").start()
    latencies: list[float] = []
    try:

        def one() -> None:
            files = write_ct_series(tmp_path / f"s{len(latencies)}", 50, header=series_header())
            send(agent.port, files, 1)
            released = time.time()
            rows = agent.wait_for("SELECT completed_at FROM series WHERE state IN ('released', 'forwarded')",
                                  lambda r: len(r) == len(latencies) + 1, 30)  # fmt: skip
            latencies.append(max(r[0] for r in rows) - released)

        benchmark.pedantic(one, rounds=5, iterations=1)
    finally:
        agent.stop()
    median_ms = statistics.median(latencies) * 1000
    benchmark.extra_info["completion_latency_ms"] = round(median_ms, 1)
    record("completion-latency", "release + grace (grace_s 0.5)", median_ms, "ms")


def test_rss_flat_over_5000_images(benchmark: Any, tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent").start()
    assert agent.proc is not None
    proc = psutil.Process(agent.proc.pid)
    rss: list[float] = []
    try:

        def batch() -> None:
            folder = tmp_path / f"b{len(rss)}"
            files = write_ct_series(folder, 500, header=series_header())
            send(agent.port, files, 1)
            for f in files:
                f.unlink()
            agent.wait_for("SELECT COUNT(*) FROM series WHERE state IN ('released', 'forwarded')",
                           lambda r: r[0][0] == len(rss) + 1, 60)  # fmt: skip
            rss.append(proc.memory_info().rss / 2**20)

        benchmark.pedantic(batch, rounds=10, iterations=1)
    finally:
        agent.stop()
    benchmark.extra_info["rss_mib"] = [round(r, 1) for r in rss]
    record("memory", "RSS after 500 images", rss[0], "MiB", anchor=True)
    record("memory", "RSS after 5,000 images", rss[-1], "MiB")
