"""Release, hold and repeat on the journal's series, with an audit trail (who, when, what).

Give :class:`SeriesActions` its own connection to the journal file
(``agent.journal.database.connect(spool.journal_path)``): SQLite serialises it with the journal's
connection, so neither needs the other's lock. Each command is one transaction that changes
the series and writes its audit row together.

Transitions (anything else is refused, audited, and answered with a system alert):

    release  complete | held                 -> released (deliveries queued, as the gate does)
    hold     receiving | complete            -> held
    repeat   receiving | complete | held     -> held, superseded
             released | forwarded | quarantined: superseded only (the images may be gone)

Holding a released series is refused: its images may already be on their way to the PACS.
A superseded series waits for a new series of the same study; :meth:`replacement_of` finds it.
Each applied repeat also calls ``on_repeat`` (the daemon files the series' IOCM rejection KOS,
recorded as a ``rejected`` event); :func:`repeat_rate` counts repeats over received series.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from agent.domain.commands import Command, Outcome, UnknownSeries
from agent.domain.instances import SeriesState
from agent.errors import JournalError
from agent.journal.database import locked_transaction, queue_instances, settle_series

_AUDIT = """
CREATE TABLE IF NOT EXISTS series_audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    applied INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS series_audit_series ON series_audit(series_uid);
"""
_SERIES_COLUMNS = {"superseded_at": "REAL", "superseded_by": "TEXT"}

S = SeriesState
_RELEASABLE = {S.COMPLETE, S.HELD}
_HOLDABLE = {S.RECEIVING, S.COMPLETE}
_REPEAT_HOLDS = {S.RECEIVING, S.COMPLETE, S.HELD}


def ensure_schema(conn: sqlite3.Connection) -> None:
    """The audit table and the series' superseded columns; needs the journal's schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(series)")}
    if not columns:
        raise JournalError("the journal has no series table: open the Journal first")
    conn.executescript(_AUDIT)
    for name, kind in _SERIES_COLUMNS.items():
        if name not in columns:
            conn.execute(f"ALTER TABLE series ADD COLUMN {name} {kind}")


class SeriesActions:
    def __init__(
        self, conn: sqlite3.Connection, destinations: Sequence[str],
        on_release: Callable[[str], object] | None = None,
        on_repeat: Callable[[str, str], object] | None = None,
    ) -> None:  # fmt: skip
        """``on_release``, when given, queues a released series through the routing rules
        (after this transaction commits) instead of to every destination. ``on_repeat(uid,
        by)`` runs after a repeat commits (the daemon files the rejection KOS there)."""
        self._conn = conn
        self._lock = threading.Lock()
        self.destinations = list(destinations)
        self.on_release = on_release
        self.on_repeat = on_repeat
        ensure_schema(conn)

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return locked_transaction(self._conn, self._lock)

    def apply(self, command: Command) -> Outcome:
        with self._tx() as db:
            row = db.execute(
                "SELECT state FROM series WHERE series_uid = ?", (command.series_uid,)
            ).fetchone()
            if row is None:
                raise UnknownSeries(command.series_uid)
            outcome = _ACTIONS[command.action](self, db, command, SeriesState(row[0]))
            _audit(db, outcome)
        if self.on_release and outcome.applied and outcome.to_state == S.RELEASED:
            self.on_release(command.series_uid)
        if self.on_repeat and outcome.applied and command.action == "repeat":
            self.on_repeat(command.series_uid, command.by)
        return outcome

    def _release(self, db: sqlite3.Connection, cmd: Command, state: SeriesState) -> Outcome:
        if state not in _RELEASABLE:
            return _refused(cmd, state, f"cannot release a series that is {state}")
        now = time.time()
        _set_state(db, cmd.series_uid, S.RELEASED, now)
        dests = [] if self.on_release else self.destinations  # else queued by routing
        queued = queue_instances(db, cmd.series_uid, dests, now)
        settle_series(db, cmd.series_uid, now)  # an expedited series may be delivered already
        return Outcome(cmd, True, state, S.RELEASED, f"released; {queued} deliveries queued")

    def _hold(self, db: sqlite3.Connection, cmd: Command, state: SeriesState) -> Outcome:
        if state == S.HELD:
            return Outcome(cmd, True, state, state, "already held")
        if state not in _HOLDABLE:
            return _refused(cmd, state, f"cannot hold a series that is {state}")
        _set_state(db, cmd.series_uid, S.HELD, time.time())
        return Outcome(cmd, True, state, S.HELD, "held")

    def _repeat(self, db: sqlite3.Connection, cmd: Command, state: SeriesState) -> Outcome:
        now = time.time()
        db.execute(
            "UPDATE series SET superseded_at = ?, superseded_by = ? WHERE series_uid = ?",
            (now, cmd.by, cmd.series_uid),
        )
        if state in _REPEAT_HOLDS:
            _set_state(db, cmd.series_uid, S.HELD, now)
            return Outcome(cmd, True, state, S.HELD, "superseded; held for the repeat")
        return Outcome(cmd, True, state, state, f"superseded; already {state}, state kept")

    # -- queries ---------------------------------------------------------------------------

    def audit_trail(self, series_uid: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM series_audit WHERE series_uid = ? ORDER BY id", (series_uid,)
            ).fetchall()
        return [dict(r) for r in rows]

    def is_superseded(self, series_uid: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT superseded_at FROM series WHERE series_uid = ?", (series_uid,)
            ).fetchone()
        return bool(row and row[0] is not None)

    def replacement_of(self, series_uid: str) -> str | None:
        """The first series of the same study and modality received after the repeat was
        asked for; None while the agent is still waiting for it."""
        with self._lock:
            row = self._conn.execute(
                """SELECT n.series_uid FROM series o JOIN series n
                       ON n.study_uid = o.study_uid AND n.modality = o.modality
                   WHERE o.series_uid = ? AND o.superseded_at IS NOT NULL
                       AND n.series_uid != o.series_uid AND n.superseded_at IS NULL
                       AND n.first_received_at >= o.superseded_at
                   ORDER BY n.first_received_at LIMIT 1""",
                (series_uid,),
            ).fetchone()
        return str(row[0]) if row else None


def repeat_rate(conn: sqlite3.Connection, since: float = 0.0) -> dict[str, Any]:
    """Image series first received at or after ``since`` (result objects left out), how many
    the technologist marked for a repeat, and their ratio; works on a read-only connection."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(series)")}
    repeated = "COUNT(superseded_at)" if "superseded_at" in columns else "0"
    series, repeats = conn.execute(
        f"SELECT COUNT(*), {repeated} FROM series "
        "WHERE derived_from IS NULL AND first_received_at >= ?",
        (since,),
    ).fetchone()
    rate = round(repeats / series, 4) if series else 0.0
    return {"series": int(series), "repeated": int(repeats), "rate": rate}


_ACTIONS = {
    "release": SeriesActions._release,
    "hold": SeriesActions._hold,
    "repeat": SeriesActions._repeat,
}


def _refused(cmd: Command, state: SeriesState, message: str) -> Outcome:
    return Outcome(cmd, False, state, state, message)


def _set_state(db: sqlite3.Connection, series_uid: str, state: SeriesState, now: float) -> None:
    held_at = now if state == S.HELD else None  # the hold timeout counts from here
    db.execute(
        "UPDATE series SET state = ?, updated_at = ?, held_at = COALESCE(?, held_at) "
        "WHERE series_uid = ?",
        (state, now, held_at, series_uid),
    )


def _audit(db: sqlite3.Connection, outcome: Outcome) -> None:
    cmd = outcome.command
    db.execute(
        "INSERT INTO series_audit (at, who, action, series_uid, from_state, to_state, applied,"
        " detail) VALUES (?,?,?,?,?,?,?,?)",
        (time.time(), cmd.by, cmd.action, cmd.series_uid, outcome.from_state,
         outcome.to_state, int(outcome.applied), outcome.message),
    )  # fmt: skip
