"""Benchmarks time the agent and its anchor in the same run and report the ratio.

Each benchmark records its figures with ``record(group, name, value, unit)``; at the end of
the session the figures and the ratios to each group's anchor are printed and written to
``benchmarks/.results/<group>.json`` (gitignored), from which RESULTS.md is written by hand.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache")
)

RESULTS: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
OUT = Path(__file__).resolve().parent / ".results"


def record(
    group: str, name: str, value: float, unit: str, *, anchor: bool = False, **extra: Any
) -> None:
    RESULTS[group][name] = {"value": value, "unit": unit, "anchor": anchor, **extra}


@pytest.fixture
def results() -> Any:
    return record


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
