"""Spool files without a journal row (a crash between rename and commit) are set aside at
start-up, and every journaled file stays where its row says."""

from __future__ import annotations

from pathlib import Path

from agent.journal.database import Journal
from agent.receive.local_ingest import store_dataset
from agent.receive.orphans import orphans_folder, set_aside_orphans
from agent.receive.spool import Spool
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import ct_slice, series_header, write_ct_series
from tests.support.peers import storescu


def plant_orphan(spool_files: Path, name: str = "1.2.3.4.0123456789abcdef.deadbeef.dcm") -> Path:
    """A renamed file whose commit never happened: in a series folder, named as copies are."""
    folder = spool_files / "1.2.3" / "1.2.3.4"
    folder.mkdir(parents=True, exist_ok=True)
    orphan = folder / name
    orphan.write_bytes(b"\0" * 128 + b"DICM never journaled")
    return orphan


def test_files_no_row_names_are_moved_aside_and_journaled_ones_stay(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state", min_free_bytes=0)
    journal = Journal.open(spool.journal_path)
    kept = [store_dataset(ct_slice(series_header(), i), spool, journal) for i in range(3)]
    orphan = plant_orphan(spool.files)

    assert set_aside_orphans(spool, journal) == 1
    assert not orphan.exists()
    assert (orphans_folder(spool) / orphan.name).read_bytes().endswith(b"never journaled")
    assert all(i is not None and Path(i.path).is_file() for i in kept)
    assert set_aside_orphans(spool, journal) == 0  # nothing left to move

    again = plant_orphan(spool.files)  # a later crash, same name: the first one is kept
    assert set_aside_orphans(spool, journal) == 1 and not again.exists()
    assert len(list(orphans_folder(spool).iterdir())) == 2


def test_a_failed_move_is_logged_and_start_up_goes_on(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state", min_free_bytes=0)
    journal = Journal.open(spool.journal_path)
    orphans_folder(spool).write_bytes(b"")  # a file where the folder should be
    orphan = plant_orphan(spool.files)
    assert set_aside_orphans(spool, journal) == 0
    assert orphan.is_file()  # left where it was, for the next start


def test_rows_are_matched_by_file_name_so_another_path_to_the_storage_keeps_them(
    tmp_path: Path,
) -> None:
    real = tmp_path / "state"
    spool = Spool(real, min_free_bytes=0)
    journal = Journal.open(spool.journal_path)
    inst = store_dataset(ct_slice(series_header(), 0), spool, journal)
    journal.close()
    (tmp_path / "link").symlink_to(real)  # the same storage through another path
    other = Spool(tmp_path / "link", min_free_bytes=0)
    reopened = Journal.open(other.journal_path)
    assert set_aside_orphans(other, reopened) == 0
    assert inst is not None and Path(inst.path).is_file()


def test_the_agent_sets_orphans_aside_when_it_starts(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent").start()
    try:
        storescu(agent.port, write_ct_series(tmp_path / "series", 5))
        agent.wait_for("SELECT COUNT(*) AS n FROM instances", lambda r: r[0]["n"] == 5, 30)
    finally:
        agent.stop()
    orphan = plant_orphan(agent.storage / "spool")
    agent.start()
    try:
        assert not orphan.exists()
        assert (agent.storage / "orphans" / orphan.name).is_file()
        paths = {Path(r[0]) for r in agent.query("SELECT path FROM instances")}
        assert len(paths) == 5 and all(p.is_file() for p in paths)
        assert "moved 1 spool file(s) that no journal row names" in agent.log_path.read_text()
    finally:
        agent.stop()
