"""Series completion: from the data, then from the association's release, never split."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.peers import storescu

pytestmark = pytest.mark.integration

SERIES_SQL = "SELECT * FROM series"


def one_released(rows: list) -> bool:  # type: ignore[type-arg]
    return len(rows) == 1 and rows[0]["state"] in ("released", "forwarded")


def test_one_association_completes_on_release_not_idle(agent: AgentProcess, tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "s", 20)
    storescu(agent.port, files)
    (row,) = agent.wait_for(SERIES_SQL, one_released, 20)
    assert row["completion_reason"] == "released"
    # The idle timeout is 30 s; completing sooner proves it came from the release + grace.
    assert row["completed_at"] - row["last_received_at"] < 10
    assert row["completions"] == 1


def test_expected_count_completes_without_waiting(agent_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agent = agent_factory(series={"grace_s": 10}).start()
    files = write_ct_series(tmp_path / "s", 20, images_in_acquisition=20)
    storescu(agent.port, files)
    (row,) = agent.wait_for(SERIES_SQL, one_released, 20)
    assert row["completion_reason"] == "count"
    assert row["completed_at"] - row["last_received_at"] < 5  # well inside the 10 s grace


def test_gap_waits_for_idle_timeout(agent_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agent = agent_factory(series={"idle_timeout_s": {"default": 3}}).start()
    files = write_ct_series(tmp_path / "s", 10)
    storescu(agent.port, files[:4] + files[6:])  # slices 5 and 6 missing
    time.sleep(1.5)
    (row,) = agent.query(SERIES_SQL)
    assert row["state"] == "receiving", "a series with a gap is not complete at release"
    (row,) = agent.wait_for(SERIES_SQL, one_released, 20)
    assert row["completion_reason"] == "idle"


def test_split_over_two_associations_is_one_series(agent: AgentProcess, tmp_path: Path) -> None:
    """With the count in the data, a 6 s pause between associations changes nothing."""
    files = write_ct_series(tmp_path / "s", 40, images_in_acquisition=40)
    storescu(agent.port, files[:20])
    time.sleep(6)
    (row,) = agent.query(SERIES_SQL)
    assert row["state"] == "receiving"
    storescu(agent.port, files[20:])
    (row,) = agent.wait_for(SERIES_SQL, one_released, 20)
    assert (row["completions"], row["amendments"], row["completion_reason"]) == (1, 0, "count")
    assert len(agent.query("SELECT * FROM instances")) == 40


def test_late_images_amend_the_same_series(agent: AgentProcess, tmp_path: Path) -> None:
    """Without a count, the first half looks whole at release; the rest amends that series."""
    files = write_ct_series(tmp_path / "s", 40, header=series_header())
    storescu(agent.port, files[:20])
    agent.wait_for(SERIES_SQL, one_released, 20)
    time.sleep(6)
    storescu(agent.port, files[20:])
    (row,) = agent.wait_for(SERIES_SQL, lambda r: one_released(r) and r[0]["completions"] == 2, 20)
    assert row["amendments"] == 1
    assert len(agent.query("SELECT DISTINCT series_uid FROM instances")) == 1
    assert len(agent.query("SELECT * FROM instances")) == 40
    queued = agent.query("SELECT COUNT(*) AS n FROM deliveries WHERE destination = 'local'")
    assert queued[0]["n"] == 40, "amended images are queued for delivery too"
