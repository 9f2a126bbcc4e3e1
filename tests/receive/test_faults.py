"""Faults on purpose: kill -9 mid-series, a full spool, malformed data sets.

The rule checked each time: every instance answered "success" is in the journal and on
disk with the bytes that were sent, and the agent keeps serving.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid

from agent.receive.spool import dataset_offset
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import ct_slice, real_file, series_header, write_ct_series
from tests.support.disk import grow, tmpfs_or_fail
from tests.support.fault_cases import acknowledged_files, sop_uid
from tests.support.peers import dcmtk_env, require_tool, storescu
from tests.support.scu import send_files

pytestmark = pytest.mark.integration


def dataset_sha(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data[dataset_offset(data[:1024]) :]).hexdigest()


def assert_durable(agent: AgentProcess, acked: list[Path]) -> None:
    journaled = {r["sop_instance_uid"]: r for r in agent.query("SELECT * FROM instances")}
    for f in acked:
        row = journaled.get(sop_uid(f))
        assert row is not None, f"acknowledged {f.name} is not in the journal"
        assert dataset_sha(Path(row["path"])) == row["sha256"] == dataset_sha(f)


def test_kill9_mid_series_then_resume(agent_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = write_ct_series(tmp_path / "series", 300)
    agent = agent_factory().start()
    cmd = [require_tool("storescu"), "-v", "-aet", "SCANNER", "-aec", "EDGE", "127.0.0.1",
           str(agent.port), *map(str, files)]  # fmt: skip
    sender = subprocess.Popen(cmd, env=dcmtk_env(), stderr=subprocess.PIPE, text=True)
    agent.wait_for("SELECT COUNT(*) AS n FROM instances", lambda r: r[0]["n"] >= 80, 120)
    agent.kill9()
    _, log = sender.communicate(timeout=60)
    acked = acknowledged_files(log)
    # The journal commits before the response goes out, so the kill can land between the
    # two: a few journaled instances may never have been acknowledged.
    assert 0 < len(acked) < 300, "the kill must land mid-series"
    assert_durable(agent, acked)

    agent.start()  # same storage: recovers the half-received series
    assert not os.listdir(agent.storage / "incoming"), "partial data sets must be cleaned"
    storescu(agent.port, files)  # the scanner resends the whole series
    rows = agent.wait_for(
        "SELECT * FROM series",
        lambda r: len(r) == 1 and r[0]["state"] in ("released", "forwarded"),
        30,
    )
    assert rows[0]["completions"] == 1, "the series completes exactly once"
    assert rows[0]["amendments"] == 0
    assert_durable(agent, files)
    (count,) = agent.query("SELECT COUNT(*), MAX(version) FROM instances")
    assert tuple(count) == (300, 1), "resent identical bytes must not make second copies"
    spooled = list((agent.storage / "spool").rglob("*.dcm"))
    assert len(spooled) == 300


@pytest.mark.parametrize("processes", [1, 2], ids=["in-daemon", "2-receive-processes"])
def test_spool_watermark_refuses_with_a700(agent_factory, tmp_path: Path, processes: int) -> None:  # type: ignore[no-untyped-def]
    files = write_ct_series(tmp_path / "series", 12)
    agent = agent_factory(
        storage={"max_spool_bytes": "3MB"}, dicom={"receive_processes": processes}
    ).start()
    statuses = send_files(agent.port, files)
    first_refusal = statuses.index(0xA700)
    assert first_refusal >= 1
    assert statuses[:first_refusal] == [0x0000] * first_refusal
    assert set(statuses[first_refusal:]) == {0xA700}
    assert_durable(agent, files[:first_refusal])
    assert len(list((agent.storage / "spool").rglob("*.dcm"))) == first_refusal
    assert not os.listdir(agent.storage / "incoming")
    assert "0xA700" in agent.log()


def test_min_free_disk_refuses_everything(agent_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agent = agent_factory(storage={"min_free_bytes": "1000TB"}).start()
    files = write_ct_series(tmp_path / "series", 2)
    assert send_files(agent.port, files) == [0xA700, 0xA700]
    assert agent.query("SELECT * FROM instances") == []


def _part10(path: Path, ds: Dataset) -> Path:
    # A Part 10 file saved as is: the file meta (and so the request) keep what they say.
    ds.preamble = b"\0" * 128
    ds.save_as(path, enforce_file_format=False)
    return path


def _malformed(tmp_path: Path) -> dict[str, tuple[Path, int]]:
    """Each malformed file and the exact status README.md's refusal table promises for it."""
    good = write_ct_series(tmp_path / "good", 1)[0]
    data = good.read_bytes()
    offset = dataset_offset(data[:1024])
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: offset + (len(data) - offset) // 2])
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(data[:offset] + random.Random(0).randbytes(4096))  # reproducible
    no_uid = ct_slice(series_header(), 0)
    del no_uid.SOPInstanceUID
    wrong_class = ct_slice(series_header(), 0)
    wrong_class.SOPClassUID = MRImageStorage  # the file meta (and so the request) still say CT
    wrong_uid = ct_slice(series_header(), 0)
    wrong_uid.SOPInstanceUID = generate_uid()  # the meta keeps the UID the request will carry
    return {
        "truncated": (truncated, 0xC210),
        "garbage": (garbage, 0xC210),  # random bytes after the meta
        "no_uid": (_part10(tmp_path / "no_uid.dcm", no_uid), 0xC211),
        "wrong_class": (_part10(tmp_path / "wrong_class.dcm", wrong_class), 0xA900),
        "wrong_uid": (_part10(tmp_path / "wrong_uid.dcm", wrong_uid), 0xC212),
    }


def test_malformed_input_gets_failure_status_and_agent_keeps_serving(
    agent: AgentProcess, tmp_path: Path
) -> None:
    cases = _malformed(tmp_path)
    got = {name: send_files(agent.port, [path])[0] for name, (path, _) in cases.items()}
    assert got == {name: status for name, (_, status) in cases.items()}
    assert agent.query("SELECT * FROM instances") == []
    assert not list((agent.storage / "spool").rglob("*.dcm")), "no half-written file is kept"
    assert not os.listdir(agent.storage / "incoming")
    log = agent.log()
    assert log.count("'SCANNER' at 127.0.0.1") >= len(cases), "each refusal names the peer"
    good = real_file("CT_small.dcm")
    storescu(agent.port, [good])
    assert len(agent.query("SELECT * FROM instances")) == 1


def test_duplicate_sop_instance_with_different_bytes_keeps_both(
    agent: AgentProcess, tmp_path: Path
) -> None:
    hdr = series_header()
    first = ct_slice(hdr, 0)
    changed = ct_slice(hdr, 0)
    changed.SOPInstanceUID = first.SOPInstanceUID
    changed.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    changed.WindowCenter, changed.WindowWidth = 40, 400
    paths = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
    first.save_as(paths[0], enforce_file_format=True)
    changed.save_as(paths[1], enforce_file_format=True)
    assert send_files(agent.port, [paths[0], paths[0], paths[1]]) == [0, 0, 0]
    rows = agent.query("SELECT version, sha256, path FROM instances ORDER BY version")
    assert [r["version"] for r in rows] == [1, 2]
    assert [r["sha256"] for r in rows] == [dataset_sha(p) for p in paths]
    assert len({r["path"] for r in rows}) == 2
    events = agent.query("SELECT kind FROM events WHERE kind = 'new-version'")
    assert len(events) == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs: a disk that really fills, where ``min_free_bytes`` cannot warn first."""
    with tmpfs_or_fail(tmp_path / "disk", "12m") as mount:
        yield mount


@pytest.mark.parametrize("processes", [1, 2], ids=["in-daemon", "2-receive-processes"])
def test_disk_really_full_answers_a700_and_keeps_serving(  # type: ignore[no-untyped-def]
    small_disk: Path, agent_factory, tmp_path: Path, processes: int
) -> None:
    # Requested before agent_factory, small_disk is unmounted after the agent has stopped.
    outbox = tmp_path / "outbox"  # deliveries go elsewhere: only the receive path fills up
    agent = agent_factory(
        dicom={"receive_processes": processes},  # workers pause with the daemon, and resume
        storage={"path": str(small_disk / "state"), "min_free_bytes": 0},
        forward={"destinations": [{"kind": "folder", "name": "local", "path": str(outbox)}]},
    )
    agent.storage = small_disk / "state"
    agent.start()
    files = write_ct_series(tmp_path / "series", 40)  # 40 x 512 KiB: more than the disk holds
    statuses = send_files(agent.port, files)
    assert None not in statuses, "a C-STORE went unanswered on a full disk"
    assert set(statuses) <= {0x0000, 0xA700}, statuses
    assert 0xA700 in statuses
    assert agent.proc is not None and agent.proc.poll() is None, "the agent died"
    acked = [f for f, status in zip(files, statuses, strict=True) if status == 0x0000]
    assert_durable(agent, acked)
    journaled = {r[0] for r in agent.query("SELECT sop_instance_uid FROM instances")}
    assert journaled == {sop_uid(f) for f in acked}, "a refused instance was journaled"
    assert len(list((agent.storage / "spool").rglob("*.dcm"))) == len(acked)

    grow(small_disk, "256m")
    agent.wait_for_log("system alert storage.resumed")  # it polls the free space, then resumes
    after = write_ct_series(tmp_path / "after", 3)
    assert send_files(agent.port, after) == [0x0000] * 3
    assert_durable(agent, after)
