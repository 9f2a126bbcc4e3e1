"""Where an MRD slice's latency goes: per-stage wall and CPU time for streamed slices.

The bench_mrd latency stream (8 coils, 256x256, R=2 GRAPPA, 24 ACS; one slice sent, its
image awaited, then the next), with ``on_image`` either the benchmark's in-memory sink or
the daemon's own (``store_dataset`` into a temporary spool and journal: write, fsync,
rename, journal commit). Each stage of the server's slice path is wrapped with a timer (wall and process CPU):

    send     the client serialising and writing the slice (ProtocolSerializer)
    decode   parsing the slice's messages (read_message), event-loop thread CPU
    buffer   copying its readouts into the k-space buffer (feed), event-loop thread CPU
    queue    last readout parsed -> the worker thread starts the slice
    recon    reconstruct(): prewhiten/GRAPPA/iFFT/RSS (the kernels)
    dicom    to_dataset(): the MR Image Storage data set
    mrdimg   the MRD IMAGE message sent back
    store    on_image(): nothing, or the spool write and journal commit
    latency  last readout parsed -> on_image returned (bench_mrd's figure)

Run: ``NUMBA_CACHE_DIR=/root/.numba_cache python benchmarks/profile_mrd.py [--store]
[--slices N]``; for a sampled whole-process profile (reader, event loop, client):
``py-spy record -r 250 -f raw -o /tmp/mrd.txt -- python benchmarks/profile_mrd.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

import agent.recon.mrd_server as srv_mod
from benchmarks import bench_mrd
from benchmarks.bench_mrd import Client
from tests.support.mrd_streams import cartesian_slice, grappa_lines, header, running_server
from tests.support.mri_phantoms import phantom_kspace_256

WALL: dict[str, list[float]] = defaultdict(list)
CPU: dict[str, list[float]] = defaultdict(list)


def _process_cpu() -> float:
    """CPU seconds of the whole process (all threads: numba's, BLAS's, the event loop's).
    Nothing else runs during a stage (the client waits for each image), so this is the
    stage's CPU cost, which the other processes' load does not inflate as it does wall."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        w, c = time.perf_counter(), _process_cpu()
        try:
            return fn(*args, **kwargs)
        finally:
            WALL[name].append(time.perf_counter() - w)
            CPU[name].append(_process_cpu() - c)

    return wrapper


def _instrument_reader() -> None:
    """decode (read_message) and buffer (feed) CPU of the event-loop thread per slice."""
    read, feed = srv_mod.read_message, srv_mod.feed
    spent = {"decode": 0.0, "buffer": 0.0}

    async def timed_read(*args: Any) -> Any:
        c = time.thread_time()
        try:
            return await read(*args)
        finally:
            spent["decode"] += time.thread_time() - c

    def timed_feed(*args: Any) -> Any:
        c = time.thread_time()
        job = feed(*args)
        spent["buffer"] += time.thread_time() - c
        if job is not None:  # the slice's last readout: one figure per slice
            for name in spent:
                CPU[name].append(spent[name])
                WALL[name].append(spent[name])
                spent[name] = 0.0
        return job

    srv_mod.read_message = timed_read  # type: ignore[assignment]
    srv_mod.feed = timed_feed  # type: ignore[assignment]


def _instrument() -> None:
    _instrument_reader()
    process = srv_mod.process

    def timed_process(job: Any, *args: Any) -> Any:
        WALL["queue"].append(time.perf_counter() - job.last_readout_at)
        return process(job, *args)

    srv_mod.reconstruct = _timed("recon", srv_mod.reconstruct)  # type: ignore[assignment]
    srv_mod.to_dataset = _timed("dicom", srv_mod.to_dataset)  # type: ignore[assignment]
    srv_mod.encode = _timed("mrdimg", srv_mod.encode)  # type: ignore[assignment]
    srv_mod.process = timed_process  # type: ignore[assignment]


@contextmanager
def _daemon_store() -> Iterator[Callable[[Any], Any]]:
    """bench_mrd's spool sink (the daemon's on_image), with store_dataset timed."""
    import agent.receive.local_ingest as ingest

    with tempfile.TemporaryDirectory() as tmp:
        bench_mrd.store_dataset = _timed("store", ingest.store_dataset)  # type: ignore[assignment]
        yield bench_mrd._spool_sink(Path(tmp))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", action="store_true", help="on_image = the daemon's spool store")
    ap.add_argument("--slices", type=int, default=20)
    args = ap.parse_args()
    _instrument()
    k = np.asarray(phantom_kspace_256())
    lines = grappa_lines(256, 2, 24)
    latency: list[float] = []
    load0 = os.getloadavg()
    with running_server() as (srv, _got), _maybe_store(args.store) as sink:
        if sink is not None:
            srv.on_image = sink
        srv.on_result = lambda r: latency.append(time.perf_counter() - r.image.last_readout_at)
        client = Client(srv.port)
        client.send(header(256, 8, accel=2, slices=args.slices))
        for s in range(args.slices):
            t0 = time.perf_counter()
            client.send(*cartesian_slice(k, lines, s))
            WALL["send"].append(time.perf_counter() - t0)
            client.images.get(timeout=120)
            WALL["trip"].append(time.perf_counter() - t0)
        client.close()
    WALL["latency"] = latency
    print(f"load average {load0} -> {os.getloadavg()}, {args.slices} slices, first 2 left out")
    print(f"{'stage':10s} {'wall med ms':>12s} {'wall min':>9s} {'process cpu med ms':>19s}")
    for name in ("send", "decode", "buffer", "queue", "recon", "dicom", "mrdimg", "store",
                 "latency", "trip"):  # fmt: skip
        if WALL.get(name):
            w = WALL[name][2:]
            c = CPU.get(name, [])[2:]
            cpu = f"{statistics.median(c) * 1e3:19.1f}" if c else ""
            print(f"{name:10s} {statistics.median(w) * 1e3:12.1f} {min(w) * 1e3:9.1f} {cpu}")


@contextmanager
def _maybe_store(on: bool) -> Iterator[Callable[[Any], Any] | None]:
    if not on:
        yield None
        return
    with _daemon_store() as sink:
        yield sink


if __name__ == "__main__":
    main()
