"""Concurrent instances share their flushes (agent/receive/flush.py).

A real receiver in this process (pynetdicom, real sockets, a real SQLite journal on disk)
and real pynetdicom senders, one association each. The journal's first transaction is held
until every other association's instance has been renamed into the spool and waits for
the group commit, so the second batch holds all of them, whatever the machine's speed. The
fsyncs are counted twice: by the receiver's own counter and by a wrapper around
``os.fsync`` (the calls that reach the kernel; SQLite's WAL fsyncs are its transactions).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import _config, dimse_messages

from agent.config import DicomConfig
from agent.domain.instances import Instance, SeriesInfo
from agent.journal.database import Journal
from agent.receive.receiver import Receiver
from agent.receive.spool import Spool, dataset_offset
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import free_port
from tests.support.scu import send_files

pytestmark = pytest.mark.integration

N = 6  # associations, one instance each
GUARD_S = 120  # a guard against a hang, never a measured time


class HeldJournal(Journal):
    """A real journal whose next transaction, once ``hold_for`` is set, waits until that
    many instances queue behind it in the receiver's group commit."""

    receiver: Receiver
    hold_for = 0
    fail_from = -1  # when >= 0: this transaction (counted from 0) and every later one fail
    calls = 0

    def record_instances(
        self, items: Sequence[tuple[Instance, SeriesInfo]]
    ) -> list[Instance | None]:
        self.calls += 1
        if 0 <= self.fail_from < self.calls:
            raise OSError(errno.EIO, "injected: the journal's transaction failed")
        others, self.hold_for = self.hold_for, 0
        guard = time.monotonic() + GUARD_S
        while len(self.receiver.commits._waiting) < others and time.monotonic() < guard:
            time.sleep(0.01)
        return super().record_instances(items)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every os.fsync call, by what it flushed: 'file' or 'folder'."""
    counts: Counter[str] = Counter()
    real = os.fsync

    def counted(fd: int) -> None:
        counts["folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"] += 1
        real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    return counts


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver on a :class:`HeldJournal` (``receiver.journal``)."""
    spool = Spool(tmp_path / "state", min_free_bytes=0)
    base = Journal.open(spool.journal_path)
    journal = HeldJournal(base._conn)
    announced: list[Any] = []
    rec = Receiver(DicomConfig(bind="127.0.0.1", port=free_port()), journal, spool,
                   announced.append)  # fmt: skip
    journal.receiver = rec
    before = _config.STORE_RECV_CHUNKED_DATASET, dimse_messages.NamedTemporaryFile  # type: ignore[attr-defined]
    rec.start()
    try:
        yield rec
    finally:
        rec.stop()
        base.close()
        _config.STORE_RECV_CHUNKED_DATASET, dimse_messages.NamedTemporaryFile = before  # type: ignore[attr-defined]


def send_each(port: int, files: list[Path]) -> list[int | None]:
    """Each file over its own association, all at once; the status of each."""
    with ThreadPoolExecutor(len(files)) as pool:
        return [s for got in pool.map(lambda f: send_files(port, [f]), files) for s in got]


def dataset_sha(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data[dataset_offset(data[:1024]) :]).hexdigest()


def stored(rec: Receiver) -> dict[str, tuple[str, str]]:
    with rec.journal.reading() as db:
        rows = db.execute("SELECT sop_instance_uid, path, sha256 FROM instances").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_a_batch_fsyncs_each_folder_once_and_every_ack_is_durable(
    receiver: Receiver, tmp_path: Path, fsyncs: Counter[str]
) -> None:
    assert isinstance(receiver.journal, HeldJournal)
    receiver.journal.hold_for = N - 1
    files = write_ct_series(tmp_path / "series", N)
    statuses = send_each(receiver.port, files)
    assert statuses == [0x0000] * N
    # the held first instance alone, then the N - 1 that queued behind it, together
    assert receiver.commits.batches == 2 and receiver.commits.largest == N - 1
    counts = receiver.flushes.counts
    assert (counts.batches, counts.instances, counts.data) == (2, N, N)
    # first batch: the series folder, and the parents of the new series and study folders
    # and of spool/ (none known yet); second batch: the series folder only, once for N - 1
    assert counts.folders == 4 + 1
    assert fsyncs == {"file": N, "folder": 5}  # what reached the kernel, one data fsync each
    rows = stored(receiver)
    assert len(rows) == N
    for f in files:
        path, sha = rows[_sop_uid(f)]
        final = Path(path)
        assert final.parent.parent.parent == receiver.spool.files
        assert final.name.startswith(f"{_sop_uid(f)}.{sha[:16]}.") and final.suffix == ".dcm"
        assert dataset_sha(final) == sha == dataset_sha(f)
    assert not list(receiver.spool.incoming.iterdir())


def test_a_failed_folder_fsync_fails_the_whole_batch_and_keeps_nothing(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fsync
    failing = [True]

    def folder_fails(fd: int) -> None:
        if failing[0] and stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "injected: folder fsync failed")
        real(fd)

    monkeypatch.setattr(os, "fsync", folder_fails)
    files = write_ct_series(tmp_path / "series", N)
    statuses = send_each(receiver.port, files)
    assert statuses == [0xC001] * N  # not one acknowledged
    assert receiver.commits.batches == 0 and not stored(receiver)
    assert not list(receiver.spool.files.rglob("*.dcm")), "an unjournaled file stayed"
    failing[0] = False  # the disk is back: the resend is stored
    assert send_files(receiver.port, files[:1]) == [0x0000]
    assert list(stored(receiver)) == [_sop_uid(files[0])]


def test_a_copy_whose_commit_fails_leaves_the_acknowledged_copy_in_place(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The same data set over two associations at once: both pass the duplicate check
    before either is journaled. The first commit succeeds (acknowledged), the second
    fails; removing the failed copy's file must not remove the acknowledged one."""
    assert isinstance(receiver.journal, HeldJournal)
    receiver.journal.hold_for = 1  # the first commit waits until the second copy queues
    receiver.journal.fail_from = 1
    (f,) = write_ct_series(tmp_path / "series", 1)
    statuses = send_each(receiver.port, [f, f])
    assert sorted(s != 0x0000 for s in statuses) == [False, True], statuses
    ((path, sha),) = stored(receiver).values()
    assert Path(path).is_file(), "the acknowledged copy's file was removed"
    assert dataset_sha(Path(path)) == sha == dataset_sha(f)
    assert list(receiver.spool.files.rglob("*.dcm")) == [Path(path)]


def _sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
