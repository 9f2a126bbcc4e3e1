"""The receiver's flushes, shared by the instances that are committed together.

Nothing is answered 0x0000 before three things are durable: the file's data, its directory
entry under its final name in the spool, and its journal row. The order per instance:

1. The handler starts the fsync of the file's data in ``incoming/`` in a thread
   (:meth:`Flushes.data_soon`) and checks the data set meanwhile; once it is checked, it
   renames the file to its final name (:meth:`Flushes.place`), the fsync still running.
2. It joins the group commit (agent/journal/group_commit.py). The leader, for the whole
   batch (:meth:`Flushes.sync_folders`), fsyncs each distinct series folder once, and the
   parent of every folder on the way up whose own entry is not yet known to be durable;
   then it waits for every data fsync of the batch. Every instance in the batch was
   renamed before it joined, so one fsync of a folder covers all of the batch's renames
   into it.
3. Only then does the leader commit the batch's rows in one transaction (one WAL fsync),
   and only after that does any handler of the batch answer.

The data fsync overlaps both the checks and the folder fsync: one image waits for the
longer of them, not their sum (on this VM's disk, a 526 KB file's data fsync and its
folder's fsync took 3.5 ms in flight together against 7.6 ms one after the other; each is
still its own device flush).

Why this is safe after a crash at any point: a directory fsync makes the entries it holds
durable (POSIX leaves fsync of a directory to the system; Linux file systems make its
entries durable, which is what the spool relied on before), and a file's fsync its data.
The row is written only after both returned, so a durable row always has its file and its
bytes. Before step 3 completes nothing was answered, and what a crash leaves is never
acknowledged: a file in ``incoming/`` is removed at start-up; a renamed file without a row
(its bytes possibly incomplete, if its name reached the disk before its data) is read by
nobody, since everything reads the spool through the journal's rows (each copy has a name
of its own, so a resend does not replace it: a crash at that point leaves one orphan file,
never a lost image, which the next start moves to ``orphans/``); the scanner resends what
it got no answer for. A
flush that fails fails the whole batch and is not retried: after a failed fsync Linux may
report the next one as a success though the data is lost.

A folder's own entry in its parent is durable once the parent was fsynced after the
folder existed; those are remembered (by path and inode: the agent never removes a spool
folder, and one removed by hand and made again has, but for inode reuse, a new inode and is
synced again), which is why a batch of a known series costs one folder fsync.
Each process remembers for itself: a folder another receive process created is synced
here too, the first time this process stores into it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from agent.domain.instances import Instance
from agent.receive.spool import fsync_fd_soon, fsync_path, make_dirs

KNOWN_LIMIT = 4096  # folders remembered; past it the memory is cleared (extra fsyncs, no harm)
_Key = tuple[str, int, int]  # a folder: path, device, inode


@dataclass
class FlushCounts:
    """fsync calls made, for tests and profiles (not yet in /metrics)."""

    data: int = 0  # data fsyncs started: one per data set that got past the room check
    folders: int = 0  # folder fsyncs, shared by a batch
    batches: int = 0  # folder-sync rounds (one per group-commit batch)
    instances: int = 0  # instances those rounds covered


class Flushes:
    def __init__(self, files: Path) -> None:
        self.files = files  # the spool's root of stored files (spool/): never above it
        self.counts = FlushCounts()
        self._known: set[_Key] = set()  # folders whose entry is durable
        self._syncing: dict[str, Future[None]] = {}  # data fsyncs running, by path (one per copy)
        self._lock = threading.Lock()

    def data_soon(self, temp: Path) -> Future[None]:
        """Step 1: start the fsync of ``temp``'s data; its descriptor is opened here, so
        the rename (:meth:`place`) may come while the fsync runs."""
        fd = os.open(temp, os.O_RDONLY)
        with self._lock:
            self.counts.data += 1
        return fsync_fd_soon(fd)

    def place(self, temp: Path, final: Path, synced: Future[None]) -> None:
        """Rename ``temp`` to ``final``; the group commit's leader waits for ``synced``,
        its data fsync (:meth:`sync_folders`)."""
        make_dirs(final.parent)
        os.replace(temp, final)
        with self._lock:
            self._syncing[str(final)] = synced

    def sync_folders(self, instances: Sequence[Instance]) -> None:
        """Step 2, for one batch: make the entries of every instance's file durable, and of
        every folder on its way up to the spool's root; then wait for their data."""
        leaves = {Path(inst.path).parent for inst in instances}
        targets, learned = set(leaves), []
        for leaf in leaves:
            for folder, key in self._unknown_above(leaf):
                targets.add(folder.parent)
                learned.append(key)  # stat'ed before its parent's fsync below
        with self._lock:
            syncing = [self._syncing.pop(inst.path, None) for inst in instances]
        try:
            for folder in sorted(targets, key=lambda p: len(p.parts), reverse=True):
                fsync_path(folder)
        finally:  # a data fsync is never left running unwaited: the next batch may need it
            failed = _wait_all(f for f in syncing if f is not None)
        for inst, synced in zip(instances, syncing, strict=True):
            if synced is None:  # not placed here: fsync it now rather than trust it
                fsync_path(Path(inst.path))
        if failed is not None:
            raise failed
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


def _wait_all(futures: Iterable[Future[None]]) -> BaseException | None:
    """Wait for every future; the first error, if any."""
    failed: BaseException | None = None
    for f in futures:
        try:
            f.result()
        except BaseException as exc:
            failed = failed or exc
    return failed


def _key(folder: Path) -> _Key:
    st = os.stat(folder)
    return str(folder), st.st_dev, st.st_ino
