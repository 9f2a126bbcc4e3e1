"""MRD streaming benchmarks: an in-process MrdServer fed by ismrmrd's ProtocolSerializer over
loopback TCP, with the kernels-only reconstruction of the same slice as the anchor.

- latency: 8 coils, 256x256, R=2 GRAPPA (24 ACS lines). The client sends one slice, waits
  for its image to come back, then sends the next, so nothing queues. Figure: from the
  moment the slice's last readout is parsed to the moment ``on_image`` has returned (the
  image is reconstructed, a DICOM data set, and handed on). Anchor: ``grappa`` + ``ifftc``
  + ``rss`` on the same k-space in one call (the floor).
- memory: 1,000 slices streamed in one connection, 8 coils, 128x128 (not 256x256: 1,000
  slices of 256x256 take minutes on two shared cores), R=2 GRAPPA, images sent back and
  read concurrently; the process's resident set size is sampled every 100 slices.

Run: ``NUMBA_CACHE_DIR=.numba_cache PYTHONPATH=. python -m pytest benchmarks/bench_mrd.py
--benchmark-only -s``.
"""

from __future__ import annotations

import queue
import socket
import statistics
import threading
import time
from typing import Any

import numpy as np
import pytest
from ismrmrd.serialization import ProtocolDeserializer, ProtocolSerializer

from agent.recon.mrd_server import Result
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


@pytest.mark.benchmark(group="mrd latency 8x256^2 R=2")
def test_streamed_slice_latency(benchmark: Any, results: Any) -> None:
    k = np.asarray(phantom_kspace_256())
    lines = grappa_lines(256, 2, 24)
    slices = 20
    latencies: list[float] = []
    with running_server() as (srv, _got):
        srv.on_result = lambda r: latencies.append(time.perf_counter() - r.image.last_readout_at)
        client = Client(srv.port)
        client.send(header(256, 8, accel=2, slices=slices))
        counter = iter(range(slices))

        def one_slice() -> Any:
            client.send(*cartesian_slice(k, lines, next(counter)))
            return client.images.get(timeout=60)

        image = benchmark.pedantic(one_slice, rounds=slices, iterations=1, warmup_rounds=0)
        client.close()
    ref = rss(ifftc(k))
    assert nrmse(image.data[0, 0], ref) <= 0.03
    us = np.zeros_like(k)
    for ky, _ in lines:
        us[:, ky] = k[:, ky]
    anchor = []
    for _ in range(10):
        t0 = time.perf_counter()
        rss(ifftc(grappa(us, 2, device="cpu")))
        anchor.append(time.perf_counter() - t0)
    lat = sorted(latencies[2:])  # the first two include thread-pool and cache warm-up
    med, p95 = statistics.median(lat) * 1e3, lat[int(0.95 * (len(lat) - 1))] * 1e3
    results(
        "mrd-latency",
        "kernels only (grappa+ifft+rss)",
        statistics.median(anchor) * 1e3,
        "ms",
        anchor=True,
    )
    results("mrd-latency", "last readout -> on_image, median", med, "ms")
    results("mrd-latency", "last readout -> on_image, p95", p95, "ms")
    print(
        f"\nlatency median {med:.1f} ms, p95 {p95:.1f} ms, max {lat[-1] * 1e3:.1f} ms over {len(lat)} slices"
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
            samples.append((done[0], _rss_mib()))

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
    results("mrd-memory", "RSS at slice 200", samples[1][1], "MiB")
    results("mrd-memory", "RSS at slice 1000", samples[-1][1], "MiB")
    results("mrd-memory", "RSS growth 200 -> 1000", growth, "MiB")
    results("mrd-memory", "slices per second", slices / wall, "1/s")
    print("\nRSS (slice, MiB):", ", ".join(f"{s}: {m:.0f}" for s, m in samples))
    print(f"{slices} slices in {wall:.1f} s; growth 200->1000: {growth:+.1f} MiB")
