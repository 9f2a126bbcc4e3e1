"""`scanner-agent status`: what the journal says, read-only."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from agent.domain.instances import DeliveryState
from agent.journal import mpps_log
from agent.journal.database import connect
from agent.journal.message_queue import has_messages
from agent.journal.series_actions import repeat_rate


def read_status(journal_path: Path, destinations: list[str]) -> dict[str, Any]:
    """The contract's status document; empty counts when no journal exists yet."""
    if not journal_path.exists():
        empty = _document({}, {}, {d: _empty_destination() for d in destinations})
        return {**empty, "repeats": {"series": 0, "repeated": 0, "rate": 0.0}}
    conn = connect(journal_path, readonly=True)
    try:
        instances = _by_state(conn, "instances")
        series = _by_state(conn, "series")
        dests = {d: _empty_destination() for d in destinations}
        dests.update(_destinations(conn))
        repeats = repeat_rate(conn)
        procedures = _procedures(conn)
        if has_messages(conn):  # HL7 and FHIR destinations count verdict messages
            dests.update(_destinations(conn, "messages"))
    finally:
        conn.close()
    return {**_document(instances, series, dests), "repeats": repeats, "procedures": procedures}


def _procedures(conn: sqlite3.Connection) -> dict[str, Any]:
    """MPPS: steps by how they show (``acquiring`` for IN PROGRESS), the series being
    acquired, and the forwarding outbox per peer; empty for a journal from before MPPS."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'mpps'").fetchone():
        return {"steps": {}, "acquiring_series": [], "forward": {}}
    return mpps_log.summary(conn)


def _document(
    instances: dict[str, int], series: dict[str, int], dests: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return {
        "instances": {"total": sum(instances.values()), "by_state": instances},
        "series": {"total": sum(series.values()), "by_state": series},
        "destinations": dests,
    }


def _by_state(conn: sqlite3.Connection, table: str) -> dict[str, int]:
    rows = conn.execute(f"SELECT state, COUNT(*) FROM {table} GROUP BY state").fetchall()
    return {str(state): int(n) for state, n in rows}


def _empty_destination() -> dict[str, Any]:
    return {
        "queued": 0, "delivered": 0, "quarantined": 0, "oldest_undelivered_s": None,
        "last_error": None,
    }  # fmt: skip


def _destinations(conn: sqlite3.Connection, table: str = "deliveries") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    rows = conn.execute(
        f"SELECT destination, state, COUNT(*), MIN(queued_at) FROM {table} "
        "GROUP BY destination, state"
    ).fetchall()
    now = time.time()
    for dest, state, count, oldest in rows:
        entry = out.setdefault(dest, _empty_destination())
        entry[str(state)] = int(count)
        if state == DeliveryState.QUEUED and oldest is not None:
            entry["oldest_undelivered_s"] = round(now - float(oldest), 3)
    errors = conn.execute(
        f"SELECT destination, last_error FROM {table} WHERE last_error IS NOT NULL "
        f"AND updated_at = (SELECT MAX(updated_at) FROM {table} d2 WHERE d2.last_error IS NOT NULL "
        f"AND d2.destination = {table}.destination)"
    ).fetchall()
    for dest, error in errors:
        out.setdefault(dest, _empty_destination())["last_error"] = error
    return out


def format_text(doc: dict[str, Any]) -> str:
    lines = [_counts("instances", doc["instances"]), _counts("series", doc["series"])]
    for name, d in doc["destinations"].items():
        age = d["oldest_undelivered_s"]
        oldest = f"{age:.0f} s" if age is not None else "-"
        lines.append(
            f"destination {name}: queued {d['queued']}, delivered {d['delivered']}, "
            f"quarantined {d['quarantined']}, oldest undelivered {oldest}"
            + (f", last error: {d['last_error']}" if d["last_error"] else "")
        )
    r = doc["repeats"]
    lines.append(f"repeats: {r['repeated']} of {r['series']} series (rate {r['rate']:.1%})")
    procs = doc.get("procedures") or {}
    if procs.get("steps"):
        steps = ", ".join(f"{k} {v}" for k, v in sorted(procs["steps"].items()))
        lines.append(f"procedure steps (MPPS): {steps}; series acquiring: "
                     f"{len(procs['acquiring_series'])}")  # fmt: skip
    for peer, d in (procs.get("forward") or {}).items():
        lines.append(f"MPPS forward {peer}: queued {d['queued']}, delivered {d['delivered']}, "
                     f"failed {d['failed']}")  # fmt: skip
    return "\n".join(lines)


def _counts(label: str, part: dict[str, Any]) -> str:
    states = ", ".join(f"{k} {v}" for k, v in sorted(part["by_state"].items())) or "none"
    return f"{label}: {part['total']} ({states})"
