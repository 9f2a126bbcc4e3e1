"""MPPS in the journal: each procedure step's latest state, the series and instances it
lists, and the outbox of messages to pass on to the RIS or PACS.

A step is committed here before the N-CREATE or N-SET is answered, with its outgoing
copies queued in the same transaction, so an acknowledged MPPS is never lost: the forwarder
(agent/forward/mpps_forward.py) drains ``mpps_outbox`` per peer, in order, after a restart
too. ``procedure_state`` is what the status verb and the consoles show for a series.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from agent.domain.procedures import PerformedSeries, ProcedureStep, StepStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mpps (
    sop_instance_uid TEXT PRIMARY KEY, status TEXT NOT NULL, accession_number TEXT NOT NULL,
    calling_aet TEXT NOT NULL, discontinued_reason TEXT NOT NULL DEFAULT '',
    dataset BLOB NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mpps_studies (
    mpps_uid TEXT NOT NULL, study_uid TEXT NOT NULL, PRIMARY KEY (mpps_uid, study_uid)
);
CREATE INDEX IF NOT EXISTS mpps_studies_study ON mpps_studies(study_uid);
CREATE TABLE IF NOT EXISTS mpps_refs (
    mpps_uid TEXT NOT NULL, series_uid TEXT NOT NULL, sop_instance_uid TEXT NOT NULL,
    PRIMARY KEY (mpps_uid, series_uid, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS mpps_refs_series ON mpps_refs(series_uid);
CREATE TABLE IF NOT EXISTS mpps_outbox (
    id INTEGER PRIMARY KEY, peer TEXT NOT NULL, mpps_uid TEXT NOT NULL,
    operation TEXT NOT NULL, dataset BLOB NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, queued_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS mpps_outbox_peer ON mpps_outbox(peer, state, id);
"""

# how a step's status reads on the consoles and in ``scanner-agent status``
SHOWN_AS = {
    StepStatus.IN_PROGRESS: "acquiring",
    StepStatus.COMPLETED: "completed",
    StepStatus.DISCONTINUED: "discontinued",
}


def ensure_schema(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)


def stored(db: sqlite3.Connection, uid: str) -> tuple[StepStatus, bytes] | None:
    row = db.execute(
        "SELECT status, dataset FROM mpps WHERE sop_instance_uid = ?", (uid,)
    ).fetchone()
    return (StepStatus(row[0]), bytes(row[1])) if row else None


def save(
    db: sqlite3.Connection, step: ProcedureStep, dataset: bytes, operation: str,
    message: bytes, peers: Sequence[str],
) -> None:  # fmt: skip
    """Record the step's new state and queue ``message`` (the N-CREATE attribute list or
    N-SET modification list as received, re-encoded) for each peer; one transaction."""
    now = time.time()
    db.execute(
        """INSERT INTO mpps VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(sop_instance_uid) DO UPDATE SET
               status = excluded.status, accession_number = excluded.accession_number,
               discontinued_reason = excluded.discontinued_reason, dataset = excluded.dataset,
               updated_at = excluded.updated_at""",
        (step.sop_instance_uid, step.status, step.accession_number, step.calling_aet,
         step.discontinued_reason, dataset, now, now),
    )  # fmt: skip
    uid = step.sop_instance_uid
    db.execute("DELETE FROM mpps_studies WHERE mpps_uid = ?", (uid,))
    db.execute("DELETE FROM mpps_refs WHERE mpps_uid = ?", (uid,))
    db.executemany("INSERT OR IGNORE INTO mpps_studies VALUES (?, ?)",
                   [(uid, s) for s in step.study_uids])  # fmt: skip
    db.executemany(
        "INSERT OR IGNORE INTO mpps_refs VALUES (?, ?, ?)",
        [(uid, s.series_uid, i) for s in step.series for i in s.instances or ("",)],
    )
    db.executemany(
        "INSERT INTO mpps_outbox (peer, mpps_uid, operation, dataset, state, queued_at, "
        "updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
        [(p, uid, operation, message, now, now) for p in peers],
    )
    if operation == "create":  # once per exam is often enough
        prune(db, now)


KEEP_S = 30 * 86400  # finished steps and settled outbox rows are kept this long


def prune(db: sqlite3.Connection, now: float) -> None:
    """Forget finished steps and settled messages older than :data:`KEEP_S`."""
    cutoff = now - KEEP_S
    old = "SELECT sop_instance_uid FROM mpps WHERE status != ? AND updated_at < ?"
    args = (StepStatus.IN_PROGRESS, cutoff)
    db.execute(f"DELETE FROM mpps_refs WHERE mpps_uid IN ({old})", args)
    db.execute(f"DELETE FROM mpps_studies WHERE mpps_uid IN ({old})", args)
    db.execute("DELETE FROM mpps WHERE status != ? AND updated_at < ?", args)
    db.execute("DELETE FROM mpps_outbox WHERE state != 'queued' AND updated_at < ?", (cutoff,))


def completed_steps(db: sqlite3.Connection, series_uids: Sequence[str]) -> list[ProcedureStep]:
    """COMPLETED steps listing any of ``series_uids`` (recovery after a restart)."""
    if not series_uids:
        return []
    marks = ",".join("?" for _ in series_uids)
    rows = db.execute(
        f"""SELECT r.mpps_uid, r.series_uid, r.sop_instance_uid, m.updated_at FROM mpps_refs r
            JOIN mpps m ON m.sop_instance_uid = r.mpps_uid
            WHERE m.status = ? AND r.series_uid IN ({marks})""",
        (StepStatus.COMPLETED, *series_uids),
    ).fetchall()
    by_step: dict[str, dict[str, set[str]]] = {}
    at: dict[str, float] = {}
    for mpps_uid, series_uid, sop, updated in rows:
        by_step.setdefault(mpps_uid, {}).setdefault(series_uid, set()).add(sop)
        at[mpps_uid] = float(updated)
    return [
        ProcedureStep(uid, StepStatus.COMPLETED, at=at[uid], series=tuple(
            PerformedSeries(s, frozenset(i - {""})) for s, i in series.items()))
        for uid, series in by_step.items()
    ]  # fmt: skip


def procedure_state(db: sqlite3.Connection, series_uid: str, study_uid: str = "") -> str | None:
    """``acquiring`` while an IN PROGRESS step lists the series or its study, else
    ``completed`` or ``discontinued`` from the latest step that does; None without MPPS."""
    row = db.execute(
        """SELECT m.status FROM mpps m WHERE m.sop_instance_uid IN (
               SELECT mpps_uid FROM mpps_refs WHERE series_uid = ?
               UNION SELECT mpps_uid FROM mpps_studies WHERE study_uid = ? AND study_uid != '')
           ORDER BY m.status != ?, m.updated_at DESC LIMIT 1""",
        (series_uid, study_uid, StepStatus.IN_PROGRESS),
    ).fetchone()
    return SHOWN_AS[StepStatus(row[0])] if row else None


def acquiring_series(db: sqlite3.Connection) -> list[str]:
    """Series still being received that an IN PROGRESS step lists (or whose study it names)."""
    rows = db.execute(
        """SELECT s.series_uid FROM series s WHERE s.state = 'receiving' AND (
               s.series_uid IN (SELECT r.series_uid FROM mpps_refs r JOIN mpps m
                                ON m.sop_instance_uid = r.mpps_uid WHERE m.status = ?)
               OR s.study_uid IN (SELECT t.study_uid FROM mpps_studies t JOIN mpps m
                                  ON m.sop_instance_uid = t.mpps_uid WHERE m.status = ?))
           ORDER BY s.first_received_at""",
        (StepStatus.IN_PROGRESS, StepStatus.IN_PROGRESS),
    ).fetchall()
    return [str(r[0]) for r in rows]


def summary(db: sqlite3.Connection) -> dict[str, Any]:
    """For ``scanner-agent status``: steps by what they show as, acquiring series, outbox."""
    steps = {SHOWN_AS[StepStatus(s)]: int(n) for s, n in
             db.execute("SELECT status, COUNT(*) FROM mpps GROUP BY status")}  # fmt: skip
    outbox: dict[str, dict[str, Any]] = {}
    for peer, state, n, oldest in db.execute(
        "SELECT peer, state, COUNT(*), MIN(queued_at) FROM mpps_outbox GROUP BY peer, state"
    ):
        entry = outbox.setdefault(peer, {"queued": 0, "delivered": 0, "failed": 0,
                                         "oldest_queued_s": None})  # fmt: skip
        entry[state] = int(n)
        if state == "queued":
            entry["oldest_queued_s"] = round(time.time() - float(oldest), 3)
    return {"steps": steps, "acquiring_series": acquiring_series(db), "forward": outbox}


# -- the outbox ------------------------------------------------------------------------------


def next_queued(db: sqlite3.Connection, peer: str) -> tuple[int, str, str, bytes, float] | None:
    """The oldest queued message for ``peer``: (id, mpps uid, operation, data set, queued_at)."""
    row = db.execute(
        "SELECT id, mpps_uid, operation, dataset, queued_at FROM mpps_outbox "
        "WHERE peer = ? AND state = 'queued' ORDER BY id LIMIT 1",
        (peer,),
    ).fetchone()
    return (int(row[0]), str(row[1]), str(row[2]), bytes(row[3]), float(row[4])) if row else None


def settle(db: sqlite3.Connection, item_id: int, state: str, error: str | None) -> None:
    """``delivered`` or ``failed`` (refused by the peer), or still ``queued`` after an attempt."""
    db.execute(
        "UPDATE mpps_outbox SET state = ?, attempts = attempts + 1, last_error = ?, "
        "updated_at = ? WHERE id = ?",
        (state, error, time.time(), item_id),
    )
