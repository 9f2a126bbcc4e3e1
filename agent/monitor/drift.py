"""The drift watch: does the latest window of triage scores and QC metrics still look like
the baseline? A population stability index (PSI) over ten bins cut at the baseline's
deciles; PSI above :data:`PSI_ALERT` (the usual "significant shift") raises one ``system``
alert per key until it recovers. Keys need :data:`MIN_SAMPLES` in both the baseline and
the window before they are judged. ``scanner-agent drift`` prints the table, and
``drift pin`` makes the latest window the new baseline (see agent/journal/drift_log.py).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from agent.journal import drift_log

PSI_ALERT = 0.25
MIN_SAMPLES = 50
_EPS = 1e-4  # an empty bin counts as this share, so the log stays finite


@dataclass(frozen=True)
class Row:
    key: str
    baseline_n: int
    baseline_median: float
    window_n: int
    window_median: float
    psi: float  # NaN: too few samples to judge

    @property
    def drifted(self) -> bool:
        return math.isfinite(self.psi) and self.psi > PSI_ALERT


def psi(baseline: list[float], window: list[float]) -> float:
    """Population stability index of ``window`` against ``baseline`` (decile bins)."""
    if len(baseline) < MIN_SAMPLES or len(window) < MIN_SAMPLES:
        return math.nan
    edges = np.unique(np.quantile(np.asarray(baseline), np.linspace(0.1, 0.9, 9)))
    expected = np.bincount(np.searchsorted(edges, baseline, side="right"),
                           minlength=len(edges) + 1) / len(baseline)  # fmt: skip
    actual = np.bincount(np.searchsorted(edges, window, side="right"),
                         minlength=len(edges) + 1) / len(window)  # fmt: skip
    e, a = np.maximum(expected, _EPS), np.maximum(actual, _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def table(db: sqlite3.Connection) -> list[Row]:
    rows = []
    for key in drift_log.keys(db):
        base, win = drift_log.baseline(db, key), drift_log.window(db, key)
        rows.append(Row(key, len(base), _median(base), len(win), _median(win), psi(base, win)))
    return rows


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def format_table(rows: list[Row]) -> str:
    lines = [f"{'key':40s} {'baseline n':>10s} {'median':>9s} {'window n':>9s} {'median':>9s} "
             f"{'PSI':>6s}"]  # fmt: skip
    for r in rows:
        flag = "  DRIFT" if r.drifted else ""
        lines.append(f"{r.key[:40]:40s} {r.baseline_n:10d} {r.baseline_median:9.4g} "
                     f"{r.window_n:9d} {r.window_median:9.4g} {r.psi:6.3f}{flag}")  # fmt: skip
    return "\n".join(lines)


class DriftWatch:
    """Checks every key after new samples; alerts once per key while it stays drifted."""

    def __init__(self, alert: Callable[[str, str], Awaitable[None]]) -> None:
        self.alert = alert
        self.alerted: set[str] = set()

    async def check(self, rows: list[Row]) -> list[str]:
        raised = []
        for r in rows:
            if r.drifted and r.key not in self.alerted:
                self.alerted.add(r.key)
                raised.append(r.key)
                await self.alert("drift", (
                    f"{r.key}: PSI {r.psi:.2f} > {PSI_ALERT} (median {r.baseline_median:.4g} "
                    f"over the baseline's {r.baseline_n} series, {r.window_median:.4g} over "
                    f"the latest {r.window_n}); validate the model or protocol on local data"
                ))  # fmt: skip
            elif not r.drifted:
                self.alerted.discard(r.key)
        return raised
