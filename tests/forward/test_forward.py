"""Store-and-forward against real Orthanc (and dcmtk's storescp where a count of receptions is needed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import (
    dataset_sha256,
    jpeg2000_ct,
    series_header,
    video_like_object,
    write_ct_series,
)
from tests.support.orthanc import Orthanc
from tests.support.peers import (
    storescu,
)
from tests.support.scu import send_files

pytestmark = pytest.mark.integration
UNCOMPRESSED = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]


data_sha = dataset_sha256


def forwarding_agent(factory: Any, *servers: Orthanc, **forward: Any) -> AgentProcess:
    dests = [s.destination() for s in servers]
    cfg = {"destinations": dests, "retry": {"initial_s": 0.2, "max_s": 2}, **forward}
    return factory(forward=cfg).start()


def delivered(agent: AgentProcess, dest: str) -> int:
    rows = agent.query("SELECT COUNT(*) FROM deliveries WHERE destination = ? AND state = 'delivered'", dest)
    return int(rows[0][0])


def test_300_instances_arrive_unchanged(agent_factory, orthanc: Orthanc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = write_ct_series(tmp_path / "s", 300)
    agent = forwarding_agent(agent_factory, orthanc)
    storescu(agent.port, files)
    orthanc.wait_for_count(300, 120)
    agent.wait_series_state("forwarded", 60)
    stored = orthanc.sop_instance_uids()
    for f in files[::15]:
        uid = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        assert data_sha(orthanc.file_bytes(stored[uid])) == data_sha(f.read_bytes())
    assert len(stored) == 300


def test_pacs_outage_loses_nothing(agent_factory, orthanc: Orthanc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = write_ct_series(tmp_path / "s", 120)
    agent = forwarding_agent(agent_factory, orthanc)
    storescu(agent.port, files[:40])  # complete at release: forwarding starts
    orthanc.wait_for_count(1, 60)
    orthanc.kill9()
    storescu(agent.port, files[40:])  # the scanner goes on (the series is amended)
    time.sleep(2)
    assert delivered(agent, "pacs") < 120
    orthanc.start()  # same folder and ports
    orthanc.wait_for_count(120, 120)
    agent.wait_series_state("forwarded", 60)
    assert "retry" in agent.log()


@pytest.fixture
def counting_scp(storescp_factory):  # type: ignore[no-untyped-def]
    """dcmtk storescp writing every reception to its own file, so re-sends can be counted."""
    scp = storescp_factory("-uf")
    return scp.port, scp.out


def test_agent_killed_mid_send_resends_only_the_unconfirmed_tail(agent_factory, counting_scp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port, out = counting_scp
    files = write_ct_series(tmp_path / "s", 300, images_in_acquisition=300)
    batch = 16
    dest = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port}
    agent = agent_factory(forward={"destinations": [dest], "batch_size": batch}).start()
    storescu(agent.port, files)
    deadline = time.monotonic() + 120
    while sum(1 for _ in out.iterdir()) < 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    agent.kill9()
    agent.start()
    agent.wait_series_state("forwarded", 120)
    receptions = [dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in out.iterdir()]
    assert len(set(receptions)) == 300, "every instance delivered"
    assert len(receptions) - 300 <= batch, f"{len(receptions) - 300} re-sends, more than one batch"


def test_refused_transfer_syntax_is_quarantined_and_others_flow(agent_factory, orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    orthanc = orthanc_factory(AcceptedTransferSyntaxes=UNCOMPRESSED).start()
    agent = forwarding_agent(agent_factory, orthanc, alert_after_s=1)
    video = video_like_object(tmp_path / "video.dcm")
    ct = write_ct_series(tmp_path / "s", 3, images_in_acquisition=3)

    assert send_files(agent.port, [video]) == [0]
    storescu(agent.port, ct)
    orthanc.wait_for_count(3, 60)
    rows = agent.wait_for(
        "SELECT d.last_error FROM deliveries d WHERE d.state = 'quarantined'", lambda r: len(r) == 1, 60
    )
    assert "MPEG2" in rows[0][0] and "cannot" in rows[0][0]
    assert "system alert forward.quarantined" in agent.log(), "the quarantine raises a system alert"
    assert len(orthanc.instance_ids()) == 3
    assert "quarantined" in {r[0] for r in agent.query("SELECT state FROM series")}


def test_jpeg2000_transcoded_for_an_uncompressed_only_pacs(agent_factory, orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    orthanc = orthanc_factory(AcceptedTransferSyntaxes=UNCOMPRESSED).start()
    agent = forwarding_agent(agent_factory, orthanc)
    source = jpeg2000_ct(tmp_path / "j2k.dcm")

    assert send_files(agent.port, [source]) == [0]
    (oid,) = orthanc.wait_for_count(1, 60)
    arrived = dcmread(DicomBytesIO(orthanc.file_bytes(oid)))
    assert not arrived.file_meta.TransferSyntaxUID.is_compressed
    original = dcmread(source)
    assert np.array_equal(arrived.pixel_array, original.pixel_array)
    spooled = agent.query("SELECT path FROM instances")[0][0]
    assert dcmread(spooled, stop_before_pixels=True).file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


def test_routing_sends_head_ct_to_neuro(agent_factory, orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    main = orthanc_factory("main", aet="PACS").start()
    neuro = orthanc_factory("neuro", aet="NEURO").start()
    routes = [{"name": "neuro", "when": {"modality": ["CT"], "body_part": ["HEAD"]}, "to": ["neuro"]}]
    agent = forwarding_agent(agent_factory, main, neuro, routes=routes, default_to=["pacs"])
    head = write_ct_series(tmp_path / "head", 4, images_in_acquisition=4, header=series_header("HEAD", "HEAD"))
    chest = write_ct_series(tmp_path / "chest", 5, images_in_acquisition=5, header=series_header("CHEST", "CHEST"))
    storescu(agent.port, head + chest)
    neuro.wait_for_count(4, 60)
    main.wait_for_count(5, 60)
    time.sleep(1)
    assert len(neuro.instance_ids()) == 4 and len(main.instance_ids()) == 5


def test_stow_rs_destination(agent_factory, orthanc: Orthanc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stow = {"kind": "stow", "name": "web", "url": f"http://127.0.0.1:{orthanc.http_port}/dicom-web"}
    agent = agent_factory(forward={"destinations": [stow]}).start()
    files = write_ct_series(tmp_path / "s", 20, images_in_acquisition=20)
    storescu(agent.port, files)
    orthanc.wait_for_count(20, 60)
    agent.wait_series_state("forwarded", 60)
    stored = orthanc.sop_instance_uids()
    assert {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files} == set(stored)
