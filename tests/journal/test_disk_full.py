"""A full disk under the journal (issue 13): every write path fails as JournalFull, never
as a stray sqlite3 error; the connection stays usable; the Space pauses once and, when
space returns, the watcher makes the reserve again, proves a write and resumes, with one
storage.full and one storage.resumed alert. Runs on a real 8 MiB tmpfs (needs root)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from pydicom import dcmread

from agent.domain.instances import Instance, SeriesInfo
from agent.journal.database import Journal
from agent.journal.delivery_queue import DeliveryQueue
from agent.journal.space import JournalFull, retrying, space_for, surviving, watch_space
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import write_ct_series
from tests.support.disk import fill, tmpfs_or_fail
from tests.support.scu import associate

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs_or_fail(tmp_path / "disk", "8m") as mount:
        yield mount


def instance(n: int, series: str = "1.2.3") -> tuple[Instance, SeriesInfo]:
    inst = Instance(
        sop_instance_uid=f"1.2.3.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series_uid=series, study_uid="1.2", transfer_syntax="1.2.840.10008.1.2.1",
        path=f"/x/{n}.dcm", size=100, sha256=f"{n:064x}", version=1, received_at=float(n),
    )  # fmt: skip
    return inst, SeriesInfo(series_uid=series, study_uid="1.2")


def fill_journal_disk(root: Path) -> Path:
    filler = root / "filler"
    fill(filler)
    return filler


def test_every_write_path_raises_journal_full_and_the_journal_survives(disk: Path) -> None:
    journal = Journal.open(disk / "journal.sqlite")
    space = space_for(disk)
    assert journal.space is space, "the journal and the receiver share one pause"
    kept = journal.record_instance(*instance(0))
    assert kept is not None
    journal.release_series("1.2.3", ["pacs"])
    filler = fill_journal_disk(disk)
    writes = [
        lambda: journal.record_instance(*instance(1, "9.9")),
        lambda: journal.mark_complete("1.2.3", "released", 1.0),
        lambda: journal.hold_series("1.2.3", "qc"),
        lambda: journal.record_event("x", None, "y" * 20000),
    ]
    failed = 0
    for write in writes * 50:  # the WAL has slack for a few pages, then it must grow
        try:
            write()
        except JournalFull as exc:
            failed += 1
            assert exc.space is space
    assert failed > 0, "the disk was full yet every journal write succeeded"
    assert space.paused and "database or disk is full" in space.reason
    assert [i.sop_instance_uid for i in journal.instances_of("1.2.3")] == ["1.2.3.0"]
    assert journal.series_state("9.9") is None, "a failed write is rolled back whole"
    filler.unlink()
    journal.record_event("after", None)  # no transaction was left open by a failed COMMIT
    DeliveryQueue(journal).next_batch("pacs", 10)
    journal.close()
    space._paused.clear()


async def test_watcher_alerts_once_and_resumes_when_space_returns(disk: Path) -> None:
    journal = Journal.open(disk / "journal.sqlite")
    space = journal.space
    alerts: list[str] = []

    async def alert(code: str, message: str) -> None:
        journal.record_event("alert", None, message)  # like the outbox: a journal write
        alerts.append(code)

    done: list[str] = []

    async def stage() -> None:  # a stage whose write must not be dropped
        await retrying(journal.record_event, "stage-work", None, "z" * 50000)
        done.append("stage")

    async def crashy() -> None:  # a long-lived task that stops on the full journal
        await anyio.to_thread.run_sync(journal.record_event, "task-work", None, "z" * 50000)
        done.append("task")

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_space, journal, alert, 0)
        while not space.reserve.exists():
            await anyio.sleep(0.05)
        filler = fill_journal_disk(disk)
        tg.start_soon(stage)
        tg.start_soon(surviving, "task", crashy)
        while not alerts:
            await anyio.sleep(0.05)
        assert alerts == ["storage.full"] and space.paused and not done
        assert not space.reserve.exists(), "the reserve was given up for the alert"
        os.truncate(filler, os.path.getsize(filler) // 2)  # space returns
        while "storage.resumed" not in alerts or len(done) < 2:
            await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert alerts == ["storage.full", "storage.resumed"]
    assert sorted(done) == ["stage", "task"], "the paused work was done once space returned"
    assert space.reserve.stat().st_size == 2 << 20 and not space.paused
    journal.close()


@pytest.mark.integration
def test_agent_stops_cleanly_while_a_stage_waits_for_space(
    disk: Path, agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    """SIGTERM on a full disk: the series completion waiting for space is given up (exit
    0, no hang), and after the restart with space it completes and is forwarded."""
    agent = agent_factory(storage={"path": str(disk / "state"), "min_free_bytes": 0})
    agent.storage = disk / "state"
    agent.start()
    files = write_ct_series(tmp_path / "series", 2)
    assoc = associate(agent.port)
    assert [int(assoc.send_c_store(dcmread(f)).Status) for f in files] == [0, 0]
    with sqlite3.connect(agent.storage / "journal.sqlite", timeout=30) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next commit must grow the WAL
    filler = fill_journal_disk(disk)
    assoc.release()  # completion: a journal write on the full disk
    agent.wait_for_log("mark_complete waits for disk space")
    assert agent.stop() == 0
    assert "waiting stages resume at the next start" in agent.log()
    filler.unlink()
    agent.start()
    agent.wait_series_state("forwarded")
    assert len(agent.query("SELECT * FROM instances")) == 2
