"""Spool files no journal row names: what a crash between rename and commit leaves.

Such a file was never acknowledged (the row comes before the answer, see flush.py), and
nothing reads it, since everything reads the spool through the journal. Left alone they
only take disk, one per crash. At start-up, before the port opens, they are moved to
``orphans/`` under the storage path, with one log line: moved, not deleted, because the
agent never destroys image data on its own inference (a journal restored from a backup
would otherwise turn acknowledged images into "orphans"; here they stay on disk for IT).

Files are matched by name, not by path: each copy's name is its own (SOP UID, hash prefix
and a random token; Spool.final_path), so a storage path reached through another mount
point or symlink still finds every journaled file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agent.domain.instances import InstanceState
from agent.journal.database import Journal
from agent.receive.spool import Spool, fsync_path, make_dirs

log = logging.getLogger(__name__)


def orphans_folder(spool: Spool) -> Path:
    return spool.root / "orphans"


def journaled_names(journal: Journal) -> set[str]:
    """Names of the files the journal's rows hold (a purged row's file is gone)."""
    sql = "SELECT path FROM instances WHERE state != ?"
    with journal.reading() as db:
        return {os.path.basename(path) for (path,) in db.execute(sql, (InstanceState.PURGED,))}


def set_aside_orphans(spool: Spool, journal: Journal) -> int:
    """Move spool files without a journal row to ``orphans/``; returns how many moved.
    Call it only while no receiver runs: a file being committed has no row yet."""
    known = journaled_names(journal)
    strays = [p for p in spool.files.rglob("*") if p.is_file() and p.name not in known]
    if not strays:
        return 0
    target = orphans_folder(spool)
    try:
        make_dirs(target)
        for stray in strays:
            os.replace(stray, _free_name(target / stray.name))
        fsync_path(target)
    except OSError as exc:  # a full or read-only disk must not keep the agent from starting
        log.error("could not move spool files no journal row names to %s: %s", target, exc)
        return 0
    log.warning(
        "moved %d spool file(s) that no journal row names (left by a crash before their "
        "commit; never acknowledged) to %s",
        len(strays), target,
    )  # fmt: skip
    return len(strays)


def _free_name(path: Path) -> Path:
    """``path``, or ``path`` with a counter, so an earlier orphan is never overwritten."""
    candidate, n = path, 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.stem}.{n}{path.suffix}"), n + 1
    return candidate
