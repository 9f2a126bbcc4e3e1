"""Hostile data sets (issue 13): each is refused with the status README.md promises, none
reaches the spool, the agent's memory stays bounded, and a normal series is received
afterwards. The files come from :mod:`tests.receive.hostile_data`, sent byte for byte by
a pynetdicom SCU (chunked: the SCU never parses what it sends).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.receive.hostile_data import (
    deep_nesting,
    deflate_bomb,
    element,
    huge_un_in_the_middle,
    identity,
    lying_length,
    part10,
    with_uids,
)
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import write_ct_series
from tests.support.scu import send_files

pytestmark = pytest.mark.integration


def instances(agent: AgentProcess) -> int:
    return int(agent.query("SELECT COUNT(*) FROM instances")[0][0])


def assert_nothing_kept(agent: AgentProcess, before: int = 0) -> None:
    assert instances(agent) == before, "a refused data set reached the journal"
    assert len(list((agent.storage / "spool").rglob("*.dcm"))) == before, "or the spool"
    assert not os.listdir(agent.storage / "incoming"), "a partial data set was left behind"


def assert_still_serving(agent: AgentProcess, folder: Path) -> None:
    """A normal three-slice series is still answered 0x0000 and journaled."""
    before = instances(agent)
    files = write_ct_series(folder, 3)
    assert send_files(agent.port, files) == [0x0000] * 3
    assert instances(agent) == before + 3
    assert agent.proc is not None and agent.proc.poll() is None


def peak_rss(agent: AgentProcess) -> int:
    """The agent process's high-water resident set (VmHWM), in bytes."""
    assert agent.proc is not None
    status = Path(f"/proc/{agent.proc.pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


def test_deflate_bomb_is_refused_in_bounded_memory(agent: AgentProcess, tmp_path: Path) -> None:
    # 1 GiB of zeros, about 1 MiB deflated; the default max_inflated_bytes is 256 MiB
    bomb = deflate_bomb(tmp_path / "bomb.dcm", 1 << 30)
    assert bomb.stat().st_size < 4 << 20
    assert send_files(agent.port, [bomb]) == [0xA700]
    assert peak_rss(agent) < 1 << 30, "the agent inflated the bomb in memory"
    assert_nothing_kept(agent)
    assert "max_inflated_bytes" in agent.log()
    assert_still_serving(agent, tmp_path / "after")


def test_deflated_data_within_the_limit_is_stored(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(dicom={"max_inflated_bytes": "8MiB"}).start()
    small = deflate_bomb(tmp_path / "small.dcm", 4 << 20)  # inflates to 4 MiB: allowed
    large = deflate_bomb(tmp_path / "large.dcm", 16 << 20)  # 16 MiB: over the limit
    assert send_files(agent.port, [small, large]) == [0x0000, 0xA700]
    assert instances(agent) == 1


@pytest.mark.parametrize("attack", [lying_length, huge_un_in_the_middle])
def test_lies_about_length_are_refused_c210(
    agent: AgentProcess, tmp_path: Path, attack: object
) -> None:
    hostile = attack(tmp_path / "hostile.dcm")  # type: ignore[operator]
    assert send_files(agent.port, [hostile]) == [0xC210]
    assert_nothing_kept(agent)
    assert "refused with 0xC210" in agent.log()
    assert_still_serving(agent, tmp_path / "after")


def test_deep_nesting_is_refused_c210_and_shallow_is_stored(
    agent: AgentProcess, tmp_path: Path
) -> None:
    deep = deep_nesting(tmp_path / "deep.dcm", 500)
    shallow = deep_nesting(tmp_path / "shallow.dcm", 10)
    assert send_files(agent.port, [deep, shallow]) == [0xC210, 0x0000]
    assert "max_sequence_depth" in agent.log()
    assert "RecursionError" not in agent.log()
    assert_still_serving(agent, tmp_path / "after")


def test_dataset_larger_than_the_limit_is_discarded_while_it_arrives(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(dicom={"max_dataset_bytes": "1MiB"}).start()
    fit = write_ct_series(tmp_path / "fit", 3)  # 512 KiB slices
    uid = generate_uid()
    body = identity(uid) + element(0x0029, 0x1010, "OB", bytes(3 << 20))
    over = part10(tmp_path / "over.dcm", uid, body)
    assert send_files(agent.port, [*fit, over]) == [0x0000] * 3 + [0xA700]
    assert instances(agent) == 3
    assert not os.listdir(agent.storage / "incoming")
    assert "max_dataset_bytes" in agent.log()


# -- UIDs ---------------------------------------------------------------------------------------

HEX64 = "a3f0" * 16  # pydicom-data has a series UID of 64 hex digits
ACCEPTED = {
    "64 hex digits": ("1.2.826.0.1.3680043.8.498.1", HEX64),
    "letters": ("1.2.840.ABC.7", "1.3.12.2.1107.5.1.4.SERIES.1"),
    "wildcards": ("1.2.3.*?", "1.2.3.%[]"),
}
REFUSED = {
    "over 64": ("1.2.3", "1." + "2" * 64),
    "NUL inside": ("1.2.3\x004.5", "1.2.3"),
    "newline": ("1.2.3\nFAKE LOG LINE", "1.2.3"),
}


def test_non_conformant_uids_are_stored_under_safe_paths(
    agent: AgentProcess, tmp_path: Path
) -> None:
    files = [with_uids(tmp_path / f"{i}.dcm", *uids) for i, uids in enumerate(ACCEPTED.values())]
    assert send_files(agent.port, files) == [0x0000] * len(files)
    rows = agent.query("SELECT study_uid, series_uid, path FROM instances ORDER BY rowid")
    assert [(r["study_uid"], r["series_uid"]) for r in rows] == list(ACCEPTED.values())
    spool = (agent.storage / "spool").resolve()
    for row in rows:
        path = Path(row["path"]).resolve()
        assert path.is_relative_to(spool) and path.exists()
        study_dir, series_dir = path.parent.parent.name, path.parent.name
        assert re.fullmatch(r"[0-9.]+|x[0-9a-f]{40}", study_dir), study_dir
        assert re.fullmatch(r"[0-9.]+|x[0-9a-f]{40}", series_dir), series_dir


def test_unstorable_uids_are_refused_c211_naming_the_peer(
    agent: AgentProcess, tmp_path: Path
) -> None:
    files = [with_uids(tmp_path / f"{i}.dcm", *uids) for i, uids in enumerate(REFUSED.values())]
    assert send_files(agent.port, files, calling="CT_ROOM_2") == [0xC211] * len(files)
    assert_nothing_kept(agent)
    log = agent.log()
    assert log.count("'CT_ROOM_2' at 127.0.0.1") >= len(files)
    assert "\nFAKE LOG LINE" not in log, "a UID wrote its own log line"
    assert_still_serving(agent, tmp_path / "after")
