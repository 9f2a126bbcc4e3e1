"""The spool: where received files live, and the watermarks that protect the disk.

Layout under ``storage.path``::

    journal.sqlite            the journal (see agent.journal.database)
    receive-commit.lock       receive workers take turns on it to write the journal
    incoming/                 data sets being received; never acknowledged
    spool/<study>/<series>/   <SOPInstanceUID>.<sha256[:16]>.<copy>.dcm, fsynced before the ACK
    orphans/                  spool files no journal row named at start-up (agent/receive/orphans.py)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from agent.errors import OutOfResources

log = logging.getLogger(__name__)

_SAFE_UID = re.compile(r"^[0-9.]{1,64}$")


def safe_component(uid: str) -> str:
    """A UID usable as a path component: itself when well formed, else a hash.

    UIDs come from the network, so anything but digits and dots is never used in a path.
    """
    if _SAFE_UID.match(uid) and uid not in {".", ".."}:
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:40]


# fsync waits for the disk with the GIL released: the receiver's data fsyncs run here while
# the group commit's leader fsyncs their folders (agent/receive/flush.py); one thread per
# default association slot, so no association's fsync queues behind another
_SYNCING = ThreadPoolExecutor(max_workers=16, thread_name_prefix="spool-fsync")


def fsync_fd_soon(fd: int) -> Future[None]:
    """fsync and close ``fd`` in the background: the file may be renamed meanwhile."""
    return _SYNCING.submit(_fsync_and_close, fd)


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dataset_offset(head: bytes) -> int:
    """Where the data set starts in a Part 10 file whose meta starts with its group length."""
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part 10 file with a File Meta group length")
    (group_length,) = struct.unpack("<I", head[140:144])
    return 144 + int(group_length)


def hash_dataset(path: Path) -> tuple[str, int]:
    """sha256 of the data set bytes (after the file meta), and the file's size."""
    with path.open("rb") as fh:
        fh.seek(dataset_offset(fh.read(1024)))
        digest = hashlib.file_digest(fh, "sha256")
        size = fh.seek(0, os.SEEK_END)
    return digest.hexdigest(), size


class Spool:
    def __init__(
        self, root: Path, *, min_free_bytes: int, max_spool_bytes: int | None = None
    ) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.files = root / "spool"
        self.min_free_bytes = min_free_bytes
        self.max_spool_bytes = max_spool_bytes
        for folder in (root, self.incoming, self.files):
            folder.mkdir(parents=True, exist_ok=True, mode=0o750)

    @property
    def journal_path(self) -> Path:
        return self.root / "journal.sqlite"

    def final_path(self, study_uid: str, series_uid: str, sop_uid: str, sha256: str) -> Path:
        """A name of this copy's own: two copies of one data set in flight at once (two
        associations, two receive processes) never share a file, so the one whose commit
        fails cannot take the other's acknowledged file with it when it removes its own."""
        folder = self.files / safe_component(study_uid) / safe_component(series_uid)
        return folder / f"{safe_component(sop_uid)}.{sha256[:16]}.{secrets.token_hex(4)}.dcm"

    def check_room(self, spooled_bytes: int) -> None:
        """Raise OutOfResources before the disk is actually full."""
        stat = os.statvfs(self.root)
        free = stat.f_bavail * stat.f_frsize
        if free < self.min_free_bytes:
            raise OutOfResources(
                f"free disk {free} B is below storage.min_free_bytes {self.min_free_bytes} B"
            )
        if self.max_spool_bytes is not None and spooled_bytes >= self.max_spool_bytes:
            raise OutOfResources(
                f"spool holds {spooled_bytes} B, "
                f"at storage.max_spool_bytes {self.max_spool_bytes} B"
            )

    def commit(self, temp: Path, final: Path) -> None:
        """Make ``temp`` durable at ``final`` on its own (the receiver shares its flushes,
        agent/receive/flush.py): fsync the data, rename, fsync the folders."""
        fsync_path(temp)
        created = make_dirs(final.parent)
        os.replace(temp, final)
        fsync_path(final.parent)
        for folder in created:
            fsync_path(folder.parent)

    def clean_incoming(self) -> int:
        """Remove partial data sets left by a crash: none of them was acknowledged."""
        removed = 0
        for leftover in self.incoming.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.warning(
                "removed %d unacknowledged partial data sets from %s", removed, self.incoming
            )
        return removed


def make_dirs(folder: Path) -> list[Path]:
    """mkdir -p that returns the folders it created, outermost first."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        path.mkdir(mode=0o750, exist_ok=True)
    return list(reversed(missing))
