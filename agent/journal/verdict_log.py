"""Each series' QC verdict, kept next to the technologist's decision on it, and the verdict
counters that ``/metrics`` reads (see :mod:`agent.journal.counters`).

The decision is the last applied ``release`` or ``repeat`` in the series' audit trail
(:mod:`agent.journal.series_actions`): only people write that trail, so a release by the hold
timeout is no decision. On a failed series, ``repeat`` agrees with QC and ``release`` does
not; ``scanner-agent drift`` prints the rate.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from agent.journal import counters

_SCHEMA = """
CREATE TABLE IF NOT EXISTS qc_verdicts (
    series_uid TEXT PRIMARY KEY, protocol TEXT NOT NULL, status TEXT NOT NULL,
    judged_at REAL NOT NULL
);
"""

QC_RESULTS = "qc_results"
VERDICT_LATENCY = "verdict_latency_seconds"
TRIAGE_SCORE = "triage_score"


def ensure_schema(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)
    counters.ensure_schema(db)


@dataclass(frozen=True)
class Judged:
    """What one verdict adds: its QC outcome, its latency and its triage scores."""

    series_uid: str
    protocol: str  # the matched QC protocol's name; "none" when none matched
    status: str  # pass | warn | fail
    latency_s: float  # from the series' last image to its verdict
    scores: Iterable[tuple[str, str, float]] = ()  # (model name@version, finding, score)


def record(db: sqlite3.Connection, judged: Judged) -> None:
    """Called once per verdict, amendments included (they count again, as they are judged
    again); the series' row keeps its latest QC status."""
    db.execute(
        "INSERT INTO qc_verdicts VALUES (?, ?, ?, ?) ON CONFLICT(series_uid) DO UPDATE SET "
        "protocol = excluded.protocol, status = excluded.status, judged_at = excluded.judged_at",
        (judged.series_uid, judged.protocol, judged.status, time.time()),
    )
    counters.count(db, QC_RESULTS, {"protocol": judged.protocol, "status": judged.status})
    counters.observe(db, VERDICT_LATENCY, {}, judged.latency_s, counters.LATENCY_BUCKETS)
    for model, finding, score in judged.scores:
        counters.observe(db, TRIAGE_SCORE, {"model": model, "finding": finding}, score,
                         counters.SCORE_BUCKETS)  # fmt: skip


@dataclass(frozen=True)
class Agreement:
    failed: int  # series whose latest QC verdict is fail
    repeated: int  # ... that a technologist then marked repeat (agreed)
    released: int  # ... that a technologist released instead (disagreed)

    @property
    def decided(self) -> int:
        return self.repeated + self.released

    @property
    def rate(self) -> float | None:
        """How often the technologist agreed with a fail; None before any decision."""
        return self.repeated / self.decided if self.decided else None


def agreement(db: sqlite3.Connection) -> Agreement:
    failed = db.execute("SELECT COUNT(*) FROM qc_verdicts WHERE status = 'fail'").fetchone()[0]
    has_audit = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'series_audit'"
    ).fetchone()
    if not has_audit:
        return Agreement(int(failed), 0, 0)
    rows = db.execute(
        """SELECT a.action, COUNT(*) FROM qc_verdicts v
           JOIN series_audit a ON a.id = (
               SELECT MAX(id) FROM series_audit WHERE series_uid = v.series_uid
               AND applied = 1 AND action IN ('release', 'repeat'))
           WHERE v.status = 'fail' GROUP BY a.action"""
    ).fetchall()
    by_action = dict(rows)
    return Agreement(int(failed), int(by_action.get("repeat", 0)),
                     int(by_action.get("release", 0)))  # fmt: skip


def format_agreement(a: Agreement) -> str:
    if a.rate is None:
        return (f"technologist agreement with QC fails: no decision yet "
                f"({a.failed} failed series)")  # fmt: skip
    return (f"technologist agreement with QC fails: {a.rate:.0%} ({a.repeated} repeated, "
            f"{a.released} released of {a.decided} decided; {a.failed} failed series)")  # fmt: skip
