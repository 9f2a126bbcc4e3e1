"""UIDs from the network name spool folders only when they are digits and dots.

A data set whose Study and Series Instance UIDs hold ``../`` and letters is stored (the
UIDs are present, so it is not refused) under hashed folder names inside the spool, and
the folder destination's copy stays inside its folder too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom import config as pydicom_config

from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import ct_slice, series_header
from tests.support.scu import send_files

pytestmark = pytest.mark.integration

# three levels up from <storage>/spool/ is the test's own tmp folder, never further
STUDY = "../../../escape"
SERIES = "1.2.840.ABC/../x"


def hashed(uid: str) -> str:
    return "x" + hashlib.sha256(uid.encode()).hexdigest()[:40]


def hostile_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pydicom_config.disable_value_validation():
        ds = ct_slice(series_header(), 0)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
        ds.save_as(path, enforce_file_format=True)
    return path


def inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def test_non_uid_strings_are_hashed_in_spool_and_folder_paths(
    agent: AgentProcess, tmp_path: Path
) -> None:
    sent = hostile_file(tmp_path / "sent" / "hostile.dcm")
    assert send_files(agent.port, [sent]) == [0x0000]
    rows = agent.query("SELECT study_uid, series_uid, path FROM instances")
    assert [(r["study_uid"], r["series_uid"]) for r in rows] == [(STUDY, SERIES)]
    stored = Path(rows[0]["path"])
    spool = agent.storage / "spool"
    assert stored.parent.parent.name == hashed(STUDY) and stored.parent.name == hashed(SERIES)
    assert stored.parent.parent.parent == spool and inside(stored, spool) and stored.exists()

    agent.wait_for("SELECT state FROM deliveries", lambda r: [x[0] for x in r] == ["delivered"])
    outbox = agent.storage / "outbox" / "local"
    copies = list(outbox.rglob("*.dcm"))
    assert len(copies) == 1 and inside(copies[0], outbox)
    assert copies[0].parent.name == hashed(SERIES)
    assert not list(tmp_path.rglob("escape*")), "a UID named a folder outside the spool"
