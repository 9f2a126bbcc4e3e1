"""Monotonic counters and histograms kept in the journal, for ``/metrics``.

Each series' verdict adds to them in the transaction that records it, so a restart loses no
count and the figures are the journal's, like everything else ``/metrics`` reports. One row
per family and label set; the label values come from the config (protocol and model names)
or from fixed sets (QC statuses), never from the network, so the table stays small.

A histogram is stored as cumulative bucket rows (``le`` label), a ``sum`` row and a
``count`` row, which is the form Prometheus exposes.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    family TEXT NOT NULL, labels TEXT NOT NULL, part TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (family, labels, part)
);
"""

# seconds from the series' last image to its verdict
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# triage scores: fine near the top, where the urgent and stat thresholds sit
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975, 0.99, 0.998, 1.0)


def ensure_schema(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)


def _key(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


def _add(db: sqlite3.Connection, family: str, labels: str, part: str, by: float) -> None:
    db.execute(
        "INSERT INTO counters VALUES (?, ?, ?, ?) ON CONFLICT(family, labels, part) "
        "DO UPDATE SET value = value + excluded.value",
        (family, labels, part, by),
    )


def count(db: sqlite3.Connection, family: str, labels: Mapping[str, str], by: float = 1) -> None:
    _add(db, family, _key(labels), "total", by)


def observe(
    db: sqlite3.Connection, family: str, labels: Mapping[str, str], value: float,
    buckets: Iterable[float],
) -> None:  # fmt: skip
    """One observation; NaN and infinities are not observations and are skipped."""
    if not math.isfinite(value):
        return
    key = _key(labels)
    for le in buckets:  # every bucket gets a row, so none is missing from the exposition
        _add(db, family, key, f"le={le!r}", 1 if value <= le else 0)
    _add(db, family, key, "le=+Inf", 1)
    _add(db, family, key, "sum", value)
    _add(db, family, key, "count", 1)


@dataclass(frozen=True)
class Counted:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Histogram:
    labels: dict[str, str]
    buckets: list[tuple[str, float]]  # (le, cumulative count), +Inf last
    sum: float


def counts(db: sqlite3.Connection, family: str) -> list[Counted]:
    rows = db.execute(
        "SELECT labels, value FROM counters WHERE family = ? AND part = 'total' ORDER BY labels",
        (family,),
    )
    return [Counted(json.loads(labels), value) for labels, value in rows]


def histograms(db: sqlite3.Connection, family: str) -> list[Histogram]:
    parts: dict[str, dict[str, float]] = {}
    for labels, part, value in db.execute(
        "SELECT labels, part, value FROM counters WHERE family = ?", (family,)
    ):
        parts.setdefault(labels, {})[part] = value
    out = []
    for labels, p in sorted(parts.items()):
        les = sorted((k[3:] for k in p if k.startswith("le=") and k != "le=+Inf"), key=float)
        buckets = [(le, p[f"le={le}"]) for le in les] + [("+Inf", p.get("le=+Inf", 0.0))]
        out.append(Histogram(json.loads(labels), buckets, p.get("sum", 0.0)))
    return out
