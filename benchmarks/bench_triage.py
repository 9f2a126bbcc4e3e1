"""Triage latency on a 40-slice head CT, on the CPU, against a decode-and-window anchor.

The series: 40 synthetic 512x512 head slices (models/phantoms.py, upsampled 4x, int16,
0.5 mm pixels; two of them with a bleed), built in memory as pydicom data sets.

- per slice: ``SeriesTriage.add(ds)`` as each image arrives: pixel decode, preprocessing for
  both shipped models (ich, bodypart) and one ONNX Runtime run each, batch of one.
- verdict after the last slice: ``add(last)`` plus ``result()`` (aggregation); the daemon's
  triage latency once the last image is in, excluding queueing.
- batched: 40 preprocessed slices through ``infer_slices`` in one call per model (slices/s).
- anchor: ``ds.pixel_array`` plus three numpy window clips per slice, the least any
  triage pipeline does with a slice.

    PYTHONPATH=. python -m pytest benchmarks/bench_triage.py --benchmark-only -s -p no:cacheprovider
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import parse_config
from agent.triage.engine import TriageEngine, infer_slices, preprocess
from benchmarks.conftest import record
from models.phantoms import head_slice
from tests.support.triage_helpers import ct_dataset, head_header

SLICES = 40
ROUNDS = 5
GROUP = "triage"


def series(seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    hdr = head_header()
    out = []
    for i in range(SLICES):
        hu = head_slice(rng, "intraparenchymal" if i in (20, 21) else None)
        out.append(ct_dataset(np.kron(hu, np.ones((4, 4), np.float32)), hdr, i, pixel_mm=0.5))
    return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> TriageEngine:
    cfg = parse_config("triage: {device: cpu, threads: 1}").triage
    return TriageEngine.start(cfg, Path(tmp_path_factory.mktemp("ortcache")))


def fresh(datasets: list[Any]) -> list[Any]:
    for ds in datasets:  # drop pydicom's cached pixel array: decode is part of the work
        ds._pixel_array = None
        ds._pixel_id = {}
    return datasets


def test_triage_40_slices(benchmark: Any, engine: TriageEngine) -> None:
    per_slice: list[float] = []
    verdict: list[float] = []
    anchor: list[float] = []
    batched: list[float] = []
    for r in range(ROUNDS):
        data = fresh(series(r))
        t0 = time.perf_counter()
        for ds in data:
            a = ds.pixel_array.astype(np.float32) - 1024
            for c, w in ((40, 80), (80, 200), (40, 380)):
                np.clip((a - (c - w / 2)) / w, 0, 1)
        anchor.append(time.perf_counter() - t0)
        data = fresh(data)
        acc = engine.series()
        for ds in data[:-1]:
            t = time.perf_counter()
            acc.add(ds)
            per_slice.append(time.perf_counter() - t)
        t = time.perf_counter()
        acc.add(data[-1])
        triage = acc.result()
        verdict.append(time.perf_counter() - t)
        assert triage is not None and triage.status == "ok"
        arrays = {rn.name: [preprocess(ds, rn.model) for ds in data] for rn in engine.runners}
        t = time.perf_counter()
        for rn in engine.runners:
            infer_slices(rn, arrays[rn.name])
        batched.append(time.perf_counter() - t)
    benchmark.pedantic(lambda: None, rounds=1)
    ps = sorted(per_slice)
    record(GROUP, "per-slice add (decode+preprocess+2 models), median", statistics.median(ps) * 1e3, "ms")
    record(GROUP, "per-slice add, p95", ps[int(0.95 * len(ps))] * 1e3, "ms")
    record(GROUP, "verdict after last slice (add + result), median", statistics.median(verdict) * 1e3, "ms")
    record(GROUP, "verdict after last slice, max", max(verdict) * 1e3, "ms")
    record(GROUP, "streamed series throughput", SLICES / (statistics.median(ps) * SLICES), "slices/s")
    record(GROUP, "batched inference only (40 slices, 2 models)", SLICES / statistics.median(batched), "slices/s")
    record(GROUP, "anchor: decode + 3 window clips, per slice", statistics.median(anchor) / SLICES * 1e3, "ms", anchor=True)
    print(f"\ntriage: per-slice median {statistics.median(ps) * 1e3:.1f} ms, p95 {ps[int(0.95 * len(ps))] * 1e3:.1f} ms; "
          f"verdict after last slice median {statistics.median(verdict) * 1e3:.1f} ms (max {max(verdict) * 1e3:.1f}); "
          f"batched {SLICES / statistics.median(batched):.0f} slices/s; anchor {statistics.median(anchor) / SLICES * 1e3:.2f} ms/slice")
