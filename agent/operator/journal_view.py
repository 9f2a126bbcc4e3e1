"""What the console reads from the journal itself: live series and delivery state, and the
journal's answer to each command.

A verdict is published when a series is judged; its delivery states move on afterwards
(queued -> delivered) and a command's refusal reaches the broker only as a system alert. The
console runs beside the agent, so it reads ``<storage>/journal.sqlite`` read-only: the
series' ``state``, its per-destination delivery summary, and the ``series_audit`` rows that
:mod:`agent.journal.series_actions` writes for every command, applied or refused. A journal
that is missing or not yet complete reads as empty: the console then shows what the
verdicts say.

Every call opens and closes its own connection, so it can run in any worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.journal.database import connect

MAX_QUERY_UIDS = 500  # SQLite's parameter limit is far above; the console keeps 200 rows
_DELIVERY_ORDER = ("queued", "quarantined", "delivered", "dropped")  # as the verdict's summary


@dataclass(frozen=True, slots=True)
class SeriesNow:
    state: str
    deliveries: dict[str, str]  # destination -> queued | quarantined | delivered | dropped


@dataclass(frozen=True, slots=True)
class Answer:
    """The journal's answer to one command (a ``series_audit`` row)."""

    id: int
    at: float
    who: str
    action: str
    series_uid: str
    from_state: str
    to_state: str
    applied: bool
    detail: str

    def text(self) -> str:
        """``held``, ``released; 3 deliveries queued``, ``refused: already forwarded``."""
        if self.applied:
            return self.detail
        if self.from_state in ("released", "forwarded", "quarantined"):
            return f"refused: already {self.from_state} ({self.detail})"
        return f"refused: {self.detail}"


class JournalView:
    def __init__(self, journal_path: Path) -> None:
        self.path = journal_path

    def series_now(self, uids: Iterable[str]) -> dict[str, SeriesNow]:
        """State and delivery summary per destination of each known series in ``uids``."""
        wanted = list(dict.fromkeys(uids))[:MAX_QUERY_UIDS]
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = self._query(f"SELECT series_uid, state FROM series WHERE series_uid IN ({marks})",
                           wanted)  # fmt: skip
        out = {str(r[0]): SeriesNow(str(r[1]), {}) for r in rows}
        deliveries = self._query(
            "SELECT i.series_uid, d.destination, GROUP_CONCAT(DISTINCT d.state) FROM deliveries d"
            f" JOIN instances i ON i.id = d.instance_id WHERE i.series_uid IN ({marks})"
            " GROUP BY i.series_uid, d.destination",
            wanted,
        )
        for uid, dest, states in deliveries:
            if str(uid) in out:
                out[str(uid)].deliveries[str(dest)] = _summary(str(states))
        return out

    def answers_after(self, after_id: int, series_uid: str | None = None) -> list[Answer]:
        """Audit rows newer than ``after_id`` (of one series, when given), oldest first."""
        sql = "SELECT * FROM series_audit WHERE id > ?"
        args: list[object] = [after_id]
        if series_uid is not None:
            sql += " AND series_uid = ?"
            args.append(series_uid)
        rows = self._query(sql + " ORDER BY id LIMIT 100", args)
        return [_answer(r) for r in rows]

    def last_answer_id(self) -> int:
        rows = self._query("SELECT COALESCE(MAX(id), 0) FROM series_audit", [])
        return int(rows[0][0]) if rows else 0

    def _query(self, sql: str, args: list[object] | list[str]) -> list[sqlite3.Row]:
        if not self.path.is_file():
            return []
        try:
            conn = connect(self.path, readonly=True)
        except Exception:  # JournalError: the agent may be creating it right now
            return []
        try:
            return list(conn.execute(sql, args).fetchall())
        except sqlite3.Error:  # a table not created yet (no command ever applied)
            return []
        finally:
            conn.close()


def _summary(states: str) -> str:
    found = set(states.split(","))
    return next((s for s in _DELIVERY_ORDER if s in found), states)


def _answer(r: sqlite3.Row) -> Answer:
    return Answer(int(r["id"]), float(r["at"]), str(r["who"]), str(r["action"]),
                  str(r["series_uid"]), str(r["from_state"]), str(r["to_state"]),
                  bool(r["applied"]), str(r["detail"]))  # fmt: skip
