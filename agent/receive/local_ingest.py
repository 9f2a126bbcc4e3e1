"""Objects the agent makes itself (reconstructed images, QC and triage reports) enter the
spool and the journal exactly as received ones do: written, fsynced, renamed, recorded."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from pydicom.dataset import Dataset

from agent.domain.instances import Instance
from agent.journal.database import Journal
from agent.journal.space import JournalFull, is_full, space_for
from agent.receive.received import describe, read_checked
from agent.receive.spool import Spool, hash_dataset

LOCAL_AET = "SCANNER-AGENT"  # the calling AE recorded for objects made here


def store_dataset(ds: Dataset, spool: Spool, journal: Journal) -> Instance | None:
    """Store ``ds`` (with file meta) durably; None when identical bytes were already stored.
    A full disk raises JournalFull, so the stage that made ``ds`` waits and tries again."""
    space = space_for(spool.root)
    if space.paused:
        raise JournalFull(space, f"storage is full: {space.reason}")
    try:
        return _store(ds, spool, journal)
    except OSError as exc:
        if not is_full(exc):
            raise
        space.pause(f"storing {ds.SOPInstanceUID}: {exc.strerror}")
        raise JournalFull(space, f"storage is full: {exc.strerror}") from exc


def _store(ds: Dataset, spool: Spool, journal: Journal) -> Instance | None:
    fd, name = tempfile.mkstemp(dir=spool.incoming, suffix=".dcm")
    os.close(fd)
    temp = Path(name)
    try:
        ds.save_as(temp, enforce_file_format=True)
        checked = read_checked(temp, str(ds.SOPClassUID), str(ds.SOPInstanceUID))
        sha256, size = hash_dataset(temp)
        if journal.find_duplicate(str(ds.SOPInstanceUID), sha256):
            return None
        final = spool.final_path(
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), sha256
        )
        spool.commit(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    inst, info = describe(
        checked, path=str(final), size=size, sha256=sha256, version=1,
        calling_aet=LOCAL_AET, association=0, received_at=time.time(),
    )  # fmt: skip
    try:
        recorded = journal.record_instance(inst, info)
    except BaseException:
        final.unlink(missing_ok=True)  # never journaled: the stage's retry stores a new copy
        raise
    if recorded is None:  # identical bytes were journaled meanwhile: drop this copy's file
        final.unlink(missing_ok=True)
    return recorded
