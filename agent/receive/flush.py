"""The receiver's flushes, shared by the instances that are committed together.

Nothing is answered 0x0000 before three things are durable: the file's data, its directory
entry under its final name in the spool, and its journal row. The order per instance:

1. The handler fsyncs the data of the file in ``incoming/`` (:meth:`Flushes.data_soon`, in a
   thread while the data set is checked) and waits for it.
2. It renames the file to its final name (:meth:`Flushes.place`): not yet durable.
3. It joins the group commit (agent/journal/group_commit.py). The leader, for the whole
   batch, fsyncs each distinct series folder once (:meth:`Flushes.sync_folders`), and the
   parent of every folder on the way up whose own entry is not yet known to be durable;
   every instance in the batch was renamed before it joined, so one fsync of a folder
   covers all of the batch's renames into it.
4. The leader then commits the batch's rows in one transaction (one WAL fsync), and only
   after that does any handler of the batch answer.

Why this is safe after a crash at any point: a directory fsync makes the entries it holds
durable (POSIX leaves fsync of a directory to the system; Linux file systems make its
entries durable, which is what the spool relied on before), and the data was durable
before the rename, so the final name never reaches the disk without its bytes. The row is
written only after the folder fsyncs returned, so a durable row always has its file.
Before step 4 completes nothing was answered: a file left in ``incoming/`` is removed at
start-up, a renamed file without a row is an unacknowledged copy that a resend (same name:
same UID and hash) replaces, and the scanner resends what it got no answer for. A flush
that fails fails the whole batch and is not retried: after a failed fsync Linux may report
the next one as a success though the data is lost.

A folder's own entry in its parent is durable once the parent was fsynced after the
folder existed; those are remembered (by path and inode, so a folder removed and made
again is synced again), which is why a batch of a known series costs one folder fsync.
Each process remembers for itself: a folder another receive process created is synced
here too, the first time this process stores into it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from agent.domain.instances import Instance
from agent.receive.spool import fsync_path, fsync_soon, make_dirs

KNOWN_LIMIT = 4096  # folders remembered; past it the memory is cleared (extra fsyncs, no harm)
_Key = tuple[str, int, int]  # a folder: path, device, inode


@dataclass
class FlushCounts:
    """fsync calls made, for tests, profiles and /metrics."""

    data: int = 0  # files in incoming/, one per stored instance
    folders: int = 0  # folder fsyncs, shared by a batch
    batches: int = 0  # folder-sync rounds (one per group-commit batch)
    instances: int = 0  # instances those rounds covered


class Flushes:
    def __init__(self, files: Path) -> None:
        self.files = files  # the spool's root of stored files (spool/): never above it
        self.counts = FlushCounts()
        self._known: set[_Key] = set()  # folders whose entry is durable
        self._lock = threading.Lock()

    def data_soon(self, temp: Path) -> Future[None]:
        """Step 1: fsync ``temp``'s data in the background."""
        with self._lock:
            self.counts.data += 1
        return fsync_soon(temp)

    def place(self, temp: Path, final: Path, synced: Future[None]) -> None:
        """Step 2: once ``temp``'s data is durable, rename it to ``final`` (no folder fsync:
        the group commit's leader does that for the batch)."""
        synced.result()  # an fsync that failed raises here
        make_dirs(final.parent)
        os.replace(temp, final)

    def sync_folders(self, instances: Sequence[Instance]) -> None:
        """Step 3, for one batch: make the entries of every instance's file durable, and of
        every folder on its way up to the spool's root."""
        leaves = {Path(inst.path).parent for inst in instances}
        targets, learned = set(leaves), []
        for leaf in leaves:
            for folder, key in self._unknown_above(leaf):
                targets.add(folder.parent)
                learned.append(key)  # stat'ed before its parent's fsync below
        for folder in sorted(targets, key=lambda p: len(p.parts), reverse=True):
            fsync_path(folder)
        with self._lock:
            self.counts.folders += len(targets)
            self.counts.batches += 1
            self.counts.instances += len(instances)
            if len(self._known) + len(learned) > KNOWN_LIMIT:
                self._known.clear()
            self._known.update(learned)

    def _unknown_above(self, leaf: Path) -> list[tuple[Path, _Key]]:
        """``leaf`` and the folders above it up to the spool's ``files`` whose entries in
        their parents are not known to be durable."""
        if self.files not in leaf.parents:
            raise ValueError(f"{leaf} is not in the spool {self.files}")
        chain = [leaf, *(p for p in leaf.parents if self.files in p.parents), self.files]
        keyed = [(p, _key(p)) for p in chain]
        with self._lock:
            return [(p, k) for p, k in keyed if k not in self._known]


def _key(folder: Path) -> _Key:
    st = os.stat(folder)
    return str(folder), st.st_dev, st.st_ino
