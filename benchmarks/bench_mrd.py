"""MRD streaming benchmarks: an in-process MrdServer fed by ismrmrd's ProtocolSerializer over
loopback TCP, with the kernels-only reconstruction of the same slice as the anchor.

- latency: 8 coils, 256x256, R=2 GRAPPA (24 ACS lines). The client sends one slice, waits
  for its image to come back, then sends the next, so nothing queues. Figure: from the
  moment the slice's last readout is parsed to the moment ``on_image`` has returned (the
  image is reconstructed, a DICOM data set, and handed on: kept in memory, or stored in a
  spool and journal as the daemon's on_image does). ``benchmarks/profile_mrd.py`` splits
  the same path into its stages. Anchor: ``grappa`` + ``ifftc``
  + ``rss`` on the same k-space in one call (the floor).
- memory: 1,000 slices streamed in one connection, 8 coils, 128x128 (not 256x256: 1,000
  slices of 256x256 take minutes on two shared cores), R=2 GRAPPA, images sent back and
  read concurrently; the process's resident set size is sampled every 100 slices.

The anchor of the latency benchmark runs interleaved with the stream (one anchor between
consecutive slices), so both see the same load on a shared machine.

Run: ``NUMBA_CACHE_DIR=/root/.numba_cache python -m pytest benchmarks/bench_mrd.py
--benchmark-only -s -p no:cacheprovider --benchmark-json=benchmarks/json/bench_mrd.json``.
"""

from __future__ import annotations

import queue
import socket
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from ismrmrd.serialization import ProtocolDeserializer, ProtocolSerializer

from agent.journal.database import Journal
from agent.receive.local_ingest import store_dataset
from agent.receive.spool import Spool
from agent.recon.mrd_server import Result
from benchmarks.cpu_time import load, record_load
from kernels.mri import ifftc, rss, warmup
from kernels.mri.grappa import grappa
from tests.support.mrd_streams import cartesian_slice, grappa_lines, header, running_server
from tests.support.mri_phantoms import cartesian_multicoil, nrmse, phantom_kspace_256


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    warmup()


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Client:
    """One MRD connection: write with ProtocolSerializer, read images on a thread."""

    def __init__(self, port: int, keep: bool = True) -> None:
        self.keep = keep  # False: count images, drop them (memory benchmark)
        self.received = 0
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.wfile = self.sock.makefile("wb")
        self.ser = ProtocolSerializer(self.wfile)
        self.images: queue.Queue[Any] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with self.sock.makefile("rb") as rfile:
            for item in ProtocolDeserializer(rfile).deserialize():
                self.received += 1
                if self.keep:
                    self.images.put(item)
        self.images.put(None)

    def send(self, *objs: Any) -> None:
        for o in objs:
            self.ser.serialize(o)
        self.wfile.flush()

    def close(self) -> None:
        self.ser.close()
        self.reader.join(60)
        self.wfile.close()
        self.sock.close()


def _spool_sink(root: Path) -> Callable[[Any], Awaitable[None]]:
    """The daemon's on_image without the pipeline feed: store_dataset (write, fsync, rename,
    journal commit) in a worker thread, into a spool and journal under ``root``."""
    spool = Spool(root / "state", min_free_bytes=0)
    journal = Journal.open(spool.journal_path)

    async def on_image(ds: Any) -> None:
        await anyio.to_thread.run_sync(store_dataset, ds, spool, journal)

    return on_image


@pytest.mark.parametrize("sink", ["memory", "spool"])
@pytest.mark.benchmark(group="mrd latency 8x256^2 R=2")
def test_streamed_slice_latency(benchmark: Any, results: Any, sink: str, tmp_path: Path) -> None:
    """One fixture round = send one slice over MRD and wait for its image. The anchor
    (kernels only, the same k-space) runs in the same loop, in pedantic's untimed ``setup``:
    before the slice on even rounds, after the previous slice on odd rounds, so anchor and
    pipeline alternate and see the same load. ``sink``: on_image keeps the data set in
    memory, or stores it as the daemon does (spool file fsynced, journal committed)."""
    k = np.asarray(phantom_kspace_256())
    lines = grappa_lines(256, 2, 24)
    us = np.zeros_like(k)
    for ky, _ in lines:
        us[:, ky] = k[:, ky]
    slices = 20
    latencies: list[float] = []
    anchor: list[float] = []

    def one_anchor() -> None:
        t0 = time.perf_counter()
        rss(ifftc(grappa(us, 2, device="cpu")))
        anchor.append(time.perf_counter() - t0)

    load_start = load()
    with running_server() as (srv, _got):
        if sink == "spool":
            srv.on_image = _spool_sink(tmp_path)
        srv.on_result = lambda r: latencies.append(time.perf_counter() - r.image.last_readout_at)
        client = Client(srv.port)
        client.send(header(256, 8, accel=2, slices=slices))
        counter = iter(range(slices))

        def setup() -> tuple[tuple[int], dict[str, Any]]:
            s = next(counter)
            if s % 2 == 0:
                if s > 0:
                    one_anchor()  # the previous (odd) slice's anchor, after it
                one_anchor()  # this (even) slice's anchor, before it
            return (s,), {}

        def one_slice(s: int) -> Any:
            client.send(*cartesian_slice(k, lines, s))
            return client.images.get(timeout=60)

        image = benchmark.pedantic(
            one_slice, setup=setup, rounds=slices, iterations=1, warmup_rounds=0
        )
        one_anchor()  # after the last (odd) slice
        client.close()
    ref = rss(ifftc(k))
    assert nrmse(image.data[0, 0], ref) <= 0.03
    assert len(latencies) == slices
    # the first two rounds of each include thread-pool and cache warm-up
    lat = sorted(latencies[2:])
    anc = sorted(anchor[2:])
    trip = sorted(list(benchmark.stats.stats.data)[2:])
    med, p95 = statistics.median(lat) * 1e3, lat[int(0.95 * (len(lat) - 1))] * 1e3
    a_med = statistics.median(anc) * 1e3
    t_med = statistics.median(trip) * 1e3
    benchmark.extra_info.update(
        timed="one round = send one slice (ProtocolSerializer) and wait for its image back",
        anchor_median_ms=round(a_med, 2),
        ratio_latency_median_to_anchor=round(med / a_med, 2),
    )
    group = f"mrd-latency-{sink}"
    results(group, f"anchor: grappa + ifftc + rss on the same k-space, median of {len(anc)}",
            a_med, "ms", anchor=True)  # fmt: skip
    results(group, f"last readout -> on_image returned ({sink}), median of {len(lat)}", med,
            "ms", ratio=med / a_med, goal="<= 60 ms", met=med <= 60)  # fmt: skip
    results(group, "last readout -> on_image returned, p95", p95, "ms", ratio=p95 / a_med)
    results(group, "round trip: send slice -> image back at the client, median", t_med, "ms",
            ratio=t_med / a_med)  # fmt: skip
    results(group, "image NRMSE vs fully sampled RSS", float(nrmse(image.data[0, 0], ref)), "")
    record_load(results, group, load_start)
    print(
        f"\nlatency median {med:.1f} ms, p95 {p95:.1f} ms, max {lat[-1] * 1e3:.1f} ms over {len(lat)} slices; "
        f"anchor median {a_med:.1f} ms (interleaved); ratio {med / a_med:.2f}x"
    )


@pytest.mark.benchmark(group="mrd memory 1000 slices 8x128^2 R=2")
def test_rss_flat_over_1000_slices(benchmark: Any, results: Any) -> None:
    n, coils, slices = 128, 8, 1000
    k = cartesian_multicoil(n, coils).astype(np.complex64)
    lines = grappa_lines(n, 2, 16)
    samples: list[tuple[int, float]] = []
    done = [0]

    def on_result(r: Result) -> None:
        done[0] += 1
        if done[0] % 100 == 0:
            samples.append((done[0], round(_rss_mib(), 1)))

    def stream() -> int:
        with running_server(keep=False) as (srv, got):
            srv.on_result = on_result
            client = Client(srv.port, keep=False)
            client.send(header(n, coils, accel=2, slices=slices))
            for s in range(slices):
                client.send(*cartesian_slice(k, lines, s))
            client.close()
            got.wait_for(slices, timeout=600)
            assert client.received == slices
            return got.count

    t0 = time.perf_counter()
    count = benchmark.pedantic(stream, rounds=1, iterations=1)
    wall = time.perf_counter() - t0
    assert count == slices
    growth = samples[-1][1] - samples[1][1]
    benchmark.extra_info.update(
        timed=f"one round = {slices} slices streamed in one connection", rss_mib=samples
    )
    results("mrd-memory", "RSS at slice 200", samples[1][1], "MiB", anchor=True)
    results("mrd-memory", "RSS at slice 1000", samples[-1][1], "MiB")
    results(
        "mrd-memory",
        "RSS growth 200 -> 1000",
        growth,
        "MiB",
        ratio=None,
        goal="flat (< 16 MiB)",
        met=abs(growth) < 16,
    )
    results("mrd-memory", "slices per second", slices / wall, "slices/s")
    print("\nRSS (slice, MiB):", ", ".join(f"{s}: {m:.0f}" for s, m in samples))
    print(f"{slices} slices in {wall:.1f} s; growth 200->1000: {growth:+.1f} MiB")
