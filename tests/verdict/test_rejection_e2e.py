"""A technologist's "repeat" sends the series' IOCM rejection KOS ("Rejected for Quality
Reasons") to the PACS after the series, once, and counts in the repeat rate; against real
Mosquitto, Orthanc and dicom3tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import anyio.to_thread
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from agent.operator.status import read_status
from tests.support.agent_proc import AgentProcess
from tests.support.broker import Mosquitto, unique_prefix
from tests.support.dicom3tools import assert_valid
from tests.support.orthanc import Orthanc
from tests.support.peers import storescu
from tests.support.qc_series import write_series

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _instances(orthanc: Orthanc, modality: str) -> list[bytes]:
    return [
        orthanc.file_bytes(i)
        for i in orthanc.instance_ids()
        if orthanc.get(f"/instances/{i}/simplified-tags")["Modality"] == modality
    ]


async def test_repeat_sends_a_rejection_kos_after_the_series(
    agent_factory: Any, mosquitto: Mosquitto, orthanc: Orthanc, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    agent: AgentProcess = agent_factory(
        qc={"enabled": True},
        mqtt={"url": mosquitto.url, "topic_prefix": prefix},
        forward={"destinations": [orthanc.destination()]},
    ).start()
    files = write_series(tmp_path / "clean", "clean", 0, n=4)
    series_uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    await anyio.to_thread.run_sync(storescu, agent.port, files)
    await anyio.to_thread.run_sync(orthanc.wait_for_count, 5, 60)  # 4 CT and the QC report
    command = {"action": "repeat", "series_uid": series_uid, "by": "tech-anna"}
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.publish(f"{prefix}/test-agent/commands", json.dumps(command), qos=1)
        await anyio.to_thread.run_sync(orthanc.wait_for_count, 6, 60)
        await client.publish(f"{prefix}/test-agent/commands", json.dumps(command), qos=1)
        await anyio.to_thread.run_sync(agent.wait_for_log, "command repeat of series", 2)

    (note,) = _instances(orthanc, "KO")
    kos = dcmread(DicomBytesIO(note))
    title = kos.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113001", "DCM")
    assert kos.StudyInstanceUID == dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    rejected = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                for i in kos.ContentSequence if i.ValueType == "IMAGE"}  # fmt: skip
    assert rejected == {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    out = tmp_path / "rejection.dcm"
    out.write_bytes(note)
    assert_valid(out, files)

    events = agent.query("SELECT detail FROM events WHERE kind = 'rejected'")
    assert len(events) == 1, "a second repeat files no second rejection note"
    assert str(kos.SOPInstanceUID) in events[0]["detail"]
    await anyio.to_thread.run_sync(
        agent.wait_for, "SELECT state FROM deliveries",
        lambda r: len(r) == 6 and {x[0] for x in r} == {"delivered"},
    )  # fmt: skip
    rows = agent.query(
        "SELECT MIN(d.delivered_at) FROM deliveries d JOIN instances i ON i.id = d.instance_id "
        "JOIN series s ON s.series_uid = i.series_uid WHERE s.modality = ? GROUP BY s.modality",
        "KO",
    )
    last_ct = agent.query(
        "SELECT MAX(d.delivered_at) FROM deliveries d JOIN instances i ON i.id = d.instance_id "
        "WHERE i.series_uid = ?",
        series_uid,
    )
    assert rows[0][0] >= last_ct[0][0], "the rejection goes after the series it rejects"
    repeats = read_status(agent.storage / "journal.sqlite", ["pacs"])["repeats"]
    assert repeats == {"series": 1, "repeated": 1, "rate": 1.0}
