"""Group commit on a real SQLite journal: instances that wait while a commit runs go in the
next transaction together, none returns before its own row is committed, announcements
come in commit order, and a batch that fails does not fail the instances that could go in."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from agent.domain.instances import Instance, SeriesInfo
from agent.journal.database import Journal
from agent.journal.group_commit import GroupCommit, _Pending


def instance(n: int) -> tuple[Instance, SeriesInfo]:
    inst = Instance(
        sop_instance_uid=f"1.2.3.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series_uid="1.2.3", study_uid="1.2", transfer_syntax="1.2.840.10008.1.2.1",
        path=f"/spool/{n}.dcm", size=100, sha256=f"{n:064x}", version=1, association=7,
    )  # fmt: skip
    return inst, SeriesInfo(series_uid="1.2.3", study_uid="1.2", modality="CT")


class HeldJournal(Journal):
    """A real journal whose first transaction waits until ``release`` is set."""

    release = threading.Event()
    entered = threading.Event()
    first = True

    def record_instances(
        self, items: Sequence[tuple[Instance, SeriesInfo]]
    ) -> list[Instance | None]:
        if self.first:
            self.first = False
            self.entered.set()
            self.release.wait(30)
        return super().record_instances(items)


def committed(path: Path) -> set[str]:
    """What another connection sees: only committed rows."""
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT sop_instance_uid FROM instances")}
    finally:
        conn.close()


def test_waiting_instances_share_the_next_transaction(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite"
    base = Journal.open(db)
    journal = HeldJournal(base._conn)
    announced: list[str] = []
    group = GroupCommit(journal, announce=lambda i: announced.append(i.sop_instance_uid))
    seen: dict[str, set[str]] = {}

    def store(n: int) -> None:
        inst, info = instance(n)
        assert group.record(inst, info) is not None
        seen[inst.sop_instance_uid] = committed(db)  # visible to others once returned

    leader = threading.Thread(target=store, args=(0,))
    leader.start()
    assert journal.entered.wait(30)  # the first commit is running and held
    followers = [threading.Thread(target=store, args=(n,)) for n in range(1, 5)]
    for t in followers:
        t.start()
    while len(group._waiting) < 4:  # all four queue behind the running commit
        threading.Event().wait(0.01)
    assert not seen  # nobody has returned: nothing is committed yet
    journal.release.set()
    for t in [leader, *followers]:
        t.join(30)
    assert group.batches == 2 and group.largest == 4
    for uid, visible in seen.items():
        assert uid in visible
    assert announced[0] == "1.2.3.0" and sorted(announced[1:]) == [
        f"1.2.3.{n}" for n in (1, 2, 3, 4)
    ]
    ids = [r[0] for r in base._conn.execute("SELECT sop_instance_uid FROM instances ORDER BY id")]
    assert ids == announced  # announced in the order the rows were written
    assert journal.spooled_bytes == 500


def test_a_failing_row_does_not_fail_the_others(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite")
    group = GroupCommit(journal)
    good, info = instance(1)
    bad = replace(good, sop_instance_uid="1.2.3.2", sha256=f"{2:064x}", path=None)  # type: ignore[arg-type]
    batch = [_Pending(good, info), _Pending(bad, info)]  # as a leader finds them waiting
    group._commit(batch)
    results = {p.inst.sop_instance_uid: (p.result, p.error) for p in batch}
    assert results["1.2.3.1"][0] is not None and results["1.2.3.1"][1] is None
    assert isinstance(results["1.2.3.2"][1], sqlite3.IntegrityError)
    assert [r[0] for r in journal._conn.execute("SELECT sop_instance_uid FROM instances")] == [
        "1.2.3.1"
    ]


def test_before_commit_sees_the_whole_batch_before_its_rows_are_written(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite"
    journal = Journal.open(db)
    calls: list[tuple[list[str], set[str]]] = []
    group = GroupCommit(
        journal,
        before_commit=lambda insts: calls.append(
            ([i.sop_instance_uid for i in insts], committed(db))
        ),
    )
    batch = [_Pending(*instance(n)) for n in (1, 2, 3)]
    group._commit(batch)
    assert calls == [(["1.2.3.1", "1.2.3.2", "1.2.3.3"], set())]  # once, before any row
    assert all(p.done and p.error is None for p in batch)
    assert committed(db) == {"1.2.3.1", "1.2.3.2", "1.2.3.3"}


def test_a_failing_before_commit_fails_the_batch_without_a_retry(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite"
    journal = Journal.open(db)
    calls = []

    def flush_fails(insts: Sequence[Instance]) -> None:
        calls.append(len(insts))
        raise OSError(5, "fsync failed")

    group = GroupCommit(journal, before_commit=flush_fails)
    batch = [_Pending(*instance(n)) for n in (1, 2)]
    group._commit(batch)
    assert calls == [2]  # never asked again one by one
    assert all(isinstance(p.error, OSError) for p in batch)
    assert committed(db) == set() and group.batches == 0


class ProbingJournal(Journal):
    """Tries the lock file from a descriptor of its own inside every transaction."""

    lock_file: Path
    held: list[bool]

    def record_instances(
        self, items: Sequence[tuple[Instance, SeriesInfo]]
    ) -> list[Instance | None]:
        fd = os.open(self.lock_file, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held.append(False)
        except BlockingIOError:
            self.held.append(True)  # another descriptor has it: the group commit's
        finally:
            os.close(fd)
        return super().record_instances(items)


def test_the_lock_file_is_held_around_each_transaction_and_only_then(tmp_path: Path) -> None:
    base = Journal.open(tmp_path / "journal.sqlite")
    journal = ProbingJournal(base._conn)
    journal.lock_file, journal.held = tmp_path / "receive-commit.lock", []
    group = GroupCommit(journal, lock_file=journal.lock_file)
    for n in (1, 2):
        assert group.record(*instance(n)) is not None
    assert journal.held == [True, True]
    fd = os.open(journal.lock_file, os.O_RDWR)  # free between transactions
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
