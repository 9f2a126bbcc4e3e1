"""A real scanner's client (dcmtk storescu) sends real and synthetic files to the agent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import (
    COMPRESSED_FILES,
    REAL_FILES,
    dataset_sha256,
    real_file,
    write_ct_series,
)
from tests.support.peers import (
    dcmtk_env,
    require_tool,
    storescu,
    storescu_as_is,
)
from tests.support.scu import send_files

pytestmark = pytest.mark.integration


def dataset_sha(path: Path) -> str:
    return dataset_sha256(path.read_bytes())


def stored(agent: AgentProcess) -> dict[str, dict[str, object]]:
    rows = agent.query("SELECT sop_instance_uid, path, sha256, transfer_syntax FROM instances")
    return {r["sop_instance_uid"]: dict(r) for r in rows}


@pytest.fixture
def reference_scp(storescp_factory):  # type: ignore[no-untyped-def]
    """dcmtk storescp in bit-preserving mode: what a receiver gets, byte for byte."""
    scp = storescp_factory("--bit-preserving", "+xa", aet="EDGE")
    return scp.port, scp.out


def reference_hashes(folder: Path) -> dict[str, str]:
    return {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_sha(p)
        for p in folder.iterdir()
    }


def test_real_and_compressed_files_stored_byte_for_byte(agent: AgentProcess, reference_scp) -> None:  # type: ignore[no-untyped-def]
    files = [real_file(n) for n in REAL_FILES.values()] + [real_file(n) for n in COMPRESSED_FILES]
    ref_port, ref_dir = reference_scp
    for f in files:
        storescu_as_is(agent.port, f)
        storescu_as_is(ref_port, f)
    sent = reference_hashes(ref_dir)
    got = stored(agent)
    assert set(got) == set(sent), "every file sent must be journaled"
    for uid, row in got.items():
        on_disk = Path(str(row["path"]))
        assert dataset_sha(on_disk) == row["sha256"] == sent[uid], f"bytes differ for {uid}"
    syntaxes = {row["transfer_syntax"] for row in got.values()}
    # dcmtk 3.6 decodes JPEG-LS and JPEG 2000 lossless itself; those two are sent below
    for ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.91",
               "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99"):  # fmt: skip
        assert ts in syntaxes, f"transfer syntax {ts} was not kept as received"


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_jpeg_ls_and_jpeg2000_kept_compressed(agent: AgentProcess, name: str) -> None:
    source = real_file(name)
    assert send_files(agent.port, [source]) == [0x0000]
    (row,) = stored(agent).values()
    assert row["transfer_syntax"] == str(
        dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID
    )
    assert dataset_sha(Path(str(row["path"]))) == dataset_sha(source) == row["sha256"]


def test_real_files_match_their_source_bytes(agent: AgentProcess) -> None:
    """Sent without re-encoding (storescu re-encodes), the spool holds each file's own bytes."""
    files = [real_file(n) for n in REAL_FILES.values()]
    assert send_files(agent.port, files) == [0x0000] * len(files)
    got = stored(agent)
    for f in files:
        uid = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        assert got[uid]["sha256"] == dataset_sha(f)


def test_300_slice_series(agent: AgentProcess, tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "series", 300)
    storescu(agent.port, files)
    got = stored(agent)
    assert len(got) == 300
    for f in files:
        uid = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_sha(Path(str(got[uid]["path"]))) == dataset_sha(f) == got[uid]["sha256"]
    rows = agent.wait_for(
        "SELECT state, completions, completion_reason FROM series",
        lambda r: len(r) == 1 and r[0]["state"] in ("released", "forwarded"),
    )
    assert rows[0]["completions"] == 1
    assert rows[0]["completion_reason"] == "released"


def test_echo_and_called_ae_check(agent: AgentProcess) -> None:
    echo = subprocess.run(
        [require_tool("echoscu"), "-aec", "EDGE", "127.0.0.1", str(agent.port)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert echo.returncode == 0, echo.stderr
    wrong = storescu(agent.port, [real_file("CT_small.dcm")], called="NOTME", check=False)
    assert wrong.returncode != 0
    assert "rejected" in (wrong.stderr + wrong.stdout).lower()
    assert stored(agent) == {}


@pytest.mark.parametrize("processes", [1, 2], ids=["in-daemon", "2-receive-processes"])
def test_calling_ae_allow_list(agent_factory, processes: int) -> None:  # type: ignore[no-untyped-def]
    agent = agent_factory(
        dicom={"allowed_calling_aets": ["CT1"], "receive_processes": processes}
    ).start()
    refused = storescu(agent.port, [real_file("CT_small.dcm")], calling="INTRUDER", check=False)
    assert refused.returncode != 0
    assert stored(agent) == {}
    storescu(agent.port, [real_file("CT_small.dcm")], calling="CT1")
    assert len(stored(agent)) == 1
    assert "INTRUDER" in agent.log()
