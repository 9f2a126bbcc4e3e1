"""The journal: SQLite in WAL mode with synchronous=FULL, the agent's memory across crashes.

It records every instance and series and its state (received -> processed -> delivered per
destination -> purged). A row is committed before the C-STORE is answered, so whatever was
acknowledged survives kill -9. One connection is shared by the receiver's threads and the
pipeline, serialised by a lock; SQLite work here is short.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from agent.domain.instances import DeliveryState, Instance, InstanceState, SeriesInfo, SeriesState
from agent.errors import JournalError
from agent.journal import drift_log, mpps_log, verdict_log
from agent.journal.space import Space, db_file, full_error, is_full, space_for

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT NOT NULL DEFAULT '',
    series_description TEXT NOT NULL DEFAULT '',
    series_number INTEGER,
    body_part TEXT NOT NULL DEFAULT '',
    station_name TEXT NOT NULL DEFAULT '',
    accession_number TEXT NOT NULL DEFAULT '',
    calling_aet TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    priority TEXT NOT NULL DEFAULT 'routine',
    flagged INTEGER NOT NULL DEFAULT 0,
    expedited INTEGER NOT NULL DEFAULT 0,  -- stat: its deliveries go out while it is held
    derived_from TEXT,  -- a result object's source series: it is forwarded after that one
    held_at REAL,
    release_reason TEXT,
    first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL,
    completed_at REAL,
    completion_reason TEXT,
    completions INTEGER NOT NULL DEFAULT 0,
    amendments INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    study_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    version INTEGER NOT NULL,
    modality TEXT NOT NULL DEFAULT '',
    instance_number INTEGER,
    slice_position REAL,
    number_of_frames INTEGER NOT NULL DEFAULT 1,
    images_in_acquisition INTEGER,
    acquisition_number INTEGER,
    temporal_positions INTEGER,
    calling_aet TEXT NOT NULL DEFAULT '',
    association INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    state TEXT NOT NULL,
    UNIQUE (sop_instance_uid, sha256)
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_state ON instances(state);
CREATE TABLE IF NOT EXISTS deliveries (
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sends INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    warning TEXT,
    queued_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    delivered_at REAL,
    PRIMARY KEY (instance_id, destination)
);
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries(destination, state);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    series_uid TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
"""

_INSTANCE_FIELDS = [f.name for f in fields(Instance)]


@contextmanager
def locked_transaction(
    conn: sqlite3.Connection, lock: threading.Lock
) -> Iterator[sqlite3.Connection]:
    """A write transaction on ``conn`` (BEGIN IMMEDIATE), serialised by ``lock``; committed,
    and so fsynced, on leaving the block, rolled back on any exception (a failed COMMIT
    included). A write that fails for space pauses intake and raises JournalFull."""
    with lock:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):  # SQLite may have rolled back already
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if is_full(exc):
                raise full_error(conn, exc) from exc
            raise


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    try:
        conn = sqlite3.connect(
            uri, uri=True, timeout=30, check_same_thread=False, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # the WAL is fsynced at every commit
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Journal:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.spooled_bytes = self._scalar(
            "SELECT COALESCE(SUM(size), 0) FROM instances WHERE state != ?", InstanceState.PURGED
        )

    @property
    def space(self) -> Space:
        """The pause flag of this journal's storage directory (see agent.journal.space)."""
        with self._lock:
            return space_for(Path(db_file(self._conn)).parent)

    @classmethod
    def open(cls, path: Path) -> Journal:
        conn = connect(path)
        try:
            conn.executescript(_SCHEMA)
            drift_log.ensure_schema(conn)
            verdict_log.ensure_schema(conn)
            mpps_log.ensure_schema(conn)
            _add_columns(conn)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot initialise journal {path}: {exc}") from exc
        return cls(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed (and fsynced) on leaving the block."""
        with self._tx() as db:
            yield db

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads, under the journal's lock."""
        with self._lock:
            yield self._conn

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return locked_transaction(self._conn, self._lock)

    def _scalar(self, sql: str, *args: Any) -> int:
        with self._lock:
            row = self._conn.execute(sql, args).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # -- receiving -------------------------------------------------------------------------

    def find_duplicate(self, sop_uid: str, sha256: str) -> bool:
        return bool(
            self._scalar(
                "SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ? AND sha256 = ?",
                sop_uid,
                sha256,
            )
        )

    def record_instance(self, inst: Instance, info: SeriesInfo) -> Instance | None:
        """Commit a received instance; None when identical bytes were already recorded.
        The version is 1 + the number of earlier, different versions of the SOP instance."""
        return self.record_instances([(inst, info)])[0]

    def record_instances(
        self, items: Sequence[tuple[Instance, SeriesInfo]]
    ) -> list[Instance | None]:
        """:meth:`record_instance` for several, in one transaction (one fsync: group commit)."""
        now = time.time()
        with self._tx() as db:
            recorded = [self._record(db, inst, info, now) for inst, info in items]
        with self._lock:  # counted once committed; receiver threads race here
            self.spooled_bytes += sum(r.size for r in recorded if r is not None)
        return recorded

    def _record(
        self, db: sqlite3.Connection, inst: Instance, info: SeriesInfo, now: float
    ) -> Instance | None:
        if db.execute(
            "SELECT 1 FROM instances WHERE sop_instance_uid = ? AND sha256 = ?",
            (inst.sop_instance_uid, inst.sha256),
        ).fetchone():
            return None
        (earlier,) = db.execute(
            "SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?", (inst.sop_instance_uid,)
        ).fetchone()
        recorded = _replace_version(inst, earlier + 1)
        self._upsert_series(db, info, inst.received_at, now)
        cols = ",".join(_INSTANCE_FIELDS)
        marks = ",".join("?" for _ in _INSTANCE_FIELDS)
        db.execute(
            f"INSERT INTO instances ({cols}, state) VALUES ({marks}, ?)",
            (*(getattr(recorded, f) for f in _INSTANCE_FIELDS), InstanceState.RECEIVED),
        )
        if earlier:
            detail = f"{inst.sop_instance_uid} v{earlier + 1}"
            self._event(db, "new-version", inst.series_uid, detail)
        return recorded

    def _upsert_series(
        self, db: sqlite3.Connection, info: SeriesInfo, received_at: float, now: float
    ) -> None:
        db.execute(
            """INSERT INTO series (series_uid, study_uid, modality, series_description,
                   series_number, body_part, station_name, accession_number, calling_aet,
                   state, first_received_at, last_received_at, updated_at)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(series_uid) DO UPDATE SET
                   last_received_at = MAX(last_received_at, excluded.last_received_at),
                   updated_at = excluded.updated_at""",
            (
                info.series_uid, info.study_uid, info.modality, info.series_description,
                info.series_number, info.body_part, info.station_name, info.accession_number,
                info.calling_aet, SeriesState.RECEIVING, received_at, received_at, now,
            ),
        )  # fmt: skip

    # -- assembling ------------------------------------------------------------------------

    def series_state(self, series_uid: str) -> SeriesState | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT state FROM series WHERE series_uid = ?", (series_uid,)
            ).fetchone()
        return SeriesState(row[0]) if row else None

    def series_in_state(self, *states: SeriesState) -> list[str]:
        marks = ",".join("?" for _ in states)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT series_uid FROM series WHERE state IN ({marks}) "
                "ORDER BY first_received_at",
                states,
            ).fetchall()
        return [r[0] for r in rows]

    def instances_of(self, series_uid: str) -> list[Instance]:
        cols = ",".join(_INSTANCE_FIELDS)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {cols} FROM instances WHERE series_uid = ? AND state != ? ORDER BY id",
                (series_uid, InstanceState.PURGED),
            ).fetchall()
        return [Instance(**dict(row)) for row in rows]

    def reopen_series(self, series_uid: str) -> None:
        """A late image arrived for a series already emitted: it amends that series.

        A technologist's hold survives the amendment."""
        with self._tx() as db:
            db.execute(
                "UPDATE series SET state = CASE state WHEN 'held' THEN 'held' ELSE ? END, "
                "amendments = amendments + 1, updated_at = ? WHERE series_uid = ?",
                (SeriesState.RECEIVING, time.time(), series_uid),
            )
            self._event(db, "amended", series_uid, "late image re-opened the series")

    def mark_complete(self, series_uid: str, reason: str, completed_at: float) -> None:
        with self._tx() as db:
            db.execute(  # a series held while it arrived stays held
                "UPDATE series SET state = CASE state WHEN 'held' THEN 'held' ELSE ? END, "
                "completed_at = ?, completion_reason = ?, completions = completions + 1, "
                "updated_at = ? WHERE series_uid = ?",
                (SeriesState.COMPLETE, completed_at, reason, completed_at, series_uid),
            )
            self._event(db, "complete", series_uid, reason)

    def series_row(self, series_uid: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM series WHERE series_uid = ?", (series_uid,)
            ).fetchone()
        return dict(row) if row else None

    # -- releasing -------------------------------------------------------------------------

    def release_series(
        self, series_uid: str, destinations: Sequence[str], reason: str = "complete",
        *, flagged: bool = False,
    ) -> int:  # fmt: skip
        """Mark a series released and queue its instances for each destination.

        Idempotent: instances already queued for a destination are not queued twice.
        Returns the number of deliveries queued.
        """
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE series SET state = ?, release_reason = ?, flagged = MAX(flagged, ?), "
                "updated_at = ? WHERE series_uid = ?",
                (SeriesState.RELEASED, reason, int(flagged), now, series_uid),
            )
            queued = queue_instances(db, series_uid, destinations, now)
            settle_series(db, series_uid, now)  # an expedited series may be delivered already
            self._event(db, "released", series_uid, f"{reason}: {queued} deliveries queued")
        return queued

    def expedite_series(self, series_uid: str, destinations: Sequence[str], reason: str) -> int:
        """Queue a held series for its destinations, flagged, and leave it held: a stat finding
        must not wait for the technologist's QC decision. Idempotent; returns deliveries queued."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE series SET expedited = 1, flagged = 1, updated_at = ? WHERE series_uid = ?",
                (now, series_uid),
            )
            queued = queue_instances(db, series_uid, destinations, now)
            self._event(db, "expedited", series_uid, f"{reason}: {queued} deliveries queued")
        return queued

    def mark_derived(self, series_uid: str, source_series_uid: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE series SET derived_from = ? WHERE series_uid = ?",
                (source_series_uid, series_uid),
            )

    def hold_series(self, series_uid: str, reason: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE series SET state = ?, held_at = ?, updated_at = ? WHERE series_uid = ?",
                (SeriesState.HELD, time.time(), time.time(), series_uid),
            )
            self._event(db, "held", series_uid, reason)

    def held_before(self, cutoff: float) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT series_uid FROM series WHERE state = ? AND COALESCE(held_at, updated_at) <= ?",
                (SeriesState.HELD, cutoff),
            ).fetchall()
        return [r[0] for r in rows]

    # -- events ----------------------------------------------------------------------------

    @staticmethod
    def _event(db: sqlite3.Connection, kind: str, series_uid: str | None, detail: str) -> None:
        db.execute(
            "INSERT INTO events (at, kind, series_uid, detail) VALUES (?,?,?,?)",
            (time.time(), kind, series_uid, detail),
        )

    def record_event(self, kind: str, series_uid: str | None, detail: str = "") -> None:
        with self._tx() as db:
            self._event(db, kind, series_uid, detail)


def queue_instances(db: sqlite3.Connection, series_uid: str, destinations: Sequence[str], now: float) -> int:
    """Queue the series' stored instances for each destination (once each); mark them processed."""
    queued = 0
    for dest in destinations:
        cur = db.execute(
            """INSERT OR IGNORE INTO deliveries
                   (instance_id, destination, state, queued_at, updated_at)
               SELECT id, ?, ?, ?, ? FROM instances WHERE series_uid = ? AND state != ?""",
            (dest, DeliveryState.QUEUED, now, now, series_uid, InstanceState.PURGED),
        )
        queued += cur.rowcount
    db.execute(
        "UPDATE instances SET state = ? WHERE series_uid = ? AND state = ?",
        (InstanceState.PROCESSED, series_uid, InstanceState.RECEIVED),
    )
    return queued


def settle_series(db: sqlite3.Connection, series_uid: str, now: float) -> None:
    """A released series becomes forwarded (or quarantined, if any item was) once it has
    deliveries and none is queued. Receiving and held series keep their state: a held
    series may be expedited (stat) but still awaits the technologist."""
    counts = dict(
        db.execute(
            """SELECT d.state, COUNT(*) FROM deliveries d JOIN instances i ON i.id = d.instance_id
               WHERE i.series_uid = ? GROUP BY d.state""",
            (series_uid,),
        ).fetchall()
    )
    if not counts or counts.get(DeliveryState.QUEUED):
        return
    state = (
        SeriesState.QUARANTINED if counts.get(DeliveryState.QUARANTINED) else SeriesState.FORWARDED
    )
    db.execute(
        "UPDATE series SET state = ?, updated_at = ? WHERE series_uid = ? AND state NOT IN (?, ?)",
        (state, now, series_uid, SeriesState.RECEIVING, SeriesState.HELD),
    )


def _add_columns(conn: sqlite3.Connection) -> None:
    """Columns added since a journal was created: older journals get them on open."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(series)")}
    if "expedited" not in have:
        conn.execute("ALTER TABLE series ADD COLUMN expedited INTEGER NOT NULL DEFAULT 0")


def _replace_version(inst: Instance, version: int) -> Instance:
    return replace(inst, version=version)
