"""Benchmarks time the agent and its anchor in the same run and report the ratio.

Each benchmark records its figures with ``record(group, name, value, unit)``. A figure goes
to three places: the summary printed at the end of the session, ``benchmarks/.results/
<group>.json`` (gitignored), and the running benchmark's ``extra_info["figures"]``, so that
``--benchmark-json=FILE`` holds every figure. ``benchmarks/results.py`` writes the tables of
RESULTS.md from those JSON files.

The JSON also gets the command line (``command``) and, in ``machine_info``, the number of
CPUs and the load average at the start and the end of the session.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache")
)

RESULTS: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
OUT = Path(__file__).resolve().parent / ".results"
_CURRENT: list[Any] = []  # the running test's benchmark fixture, if it has one
_LOAD_AT_START = os.getloadavg()


def record(
    group: str, name: str, value: float, unit: str, *, anchor: bool = False, **extra: Any
) -> None:
    """One figure. ``extra`` may carry ``ratio`` (to this group's anchor, computed by the
    benchmark), ``goal`` (text) and ``met`` (bool); they go to the JSON as they are."""
    RESULTS[group][name] = {"value": value, "unit": unit, "anchor": anchor, **extra}
    if _CURRENT:
        figures = _CURRENT[-1].extra_info.setdefault("figures", [])
        figures.append(
            {"group": group, "name": name, "value": value, "unit": unit, "anchor": anchor, **extra}
        )


@pytest.fixture
def results() -> Any:
    return record


def interleaved(
    benchmark: Any, ours: Callable[[], Any], anchor: Callable[[], Any], rounds: int
) -> tuple[list[float], list[float]]:
    """Time ``ours`` with the fixture and ``anchor`` in its untimed setup, alternately, so
    both see the same load: anchor, ours, anchor, ours... Returns the seconds of each round
    (ours, anchor), one warm-up call of each first."""
    ours(), anchor()
    anchor_s: list[float] = []

    def setup() -> None:
        t0 = time.perf_counter()
        anchor()
        anchor_s.append(time.perf_counter() - t0)

    benchmark.pedantic(ours, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
    return list(benchmark.stats.stats.data), anchor_s


def record_pair(
    group: str, ours_name: str, anchor_name: str, ours_s: list[float], anchor_s: list[float],
    **extra: Any,
) -> float:
    """Record the medians of an interleaved pair and their ratio (anchor / ours); returns it."""
    o, a = statistics.median(ours_s), statistics.median(anchor_s)
    record(group, f"{anchor_name}, median of {len(anchor_s)} (interleaved)", a * 1e3, "ms",
           anchor=True)  # fmt: skip
    record(group, f"{ours_name}, median of {len(ours_s)} (interleaved)", o * 1e3, "ms",
           ratio=o / a, **extra)  # fmt: skip
    record(group, f"speed-up: {anchor_name} / {ours_name} (medians)", a / o, "x")
    return a / o


@pytest.fixture(autouse=True)
def _figures_to_benchmark(request: pytest.FixtureRequest) -> Any:
    if "benchmark" in request.fixturenames:
        _CURRENT.append(request.getfixturevalue("benchmark"))
    yield
    _CURRENT.clear()


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["loadavg_at_start"] = [round(x, 2) for x in _LOAD_AT_START]
    machine_info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    try:
        with open("/proc/meminfo") as f:
            machine_info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    args = [a for a in sys.argv[1:]]
    output_json["command"] = "python -m pytest " + shlex.join(args)
    output_json["env"] = {
        k: os.environ[k] for k in ("NUMBA_CACHE_DIR", "NUMBA_NUM_THREADS") if k in os.environ
    }


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not RESULTS:
        return
    OUT.mkdir(exist_ok=True)
    lines = ["", "benchmark figures (ratio = value / anchor value):"]
    for group, entries in RESULTS.items():
        anchors = {n: e for n, e in entries.items() if e["anchor"]}
        lines.append(f"[{group}]")
        for name, e in entries.items():
            ratios = ", ".join(
                f"{e['value'] / a['value']:.2f}x {an}" for an, a in anchors.items()
                if an != name and a["unit"] == e["unit"] and a["value"]
            )  # fmt: skip
            lines.append(f"  {name:40s} {e['value']:12.3f} {e['unit']:10s} {ratios}")
        (OUT / f"{group}.json").write_text(json.dumps(entries, indent=2))
    print("\n".join(lines))
