"""QC end to end: a failed series is held, alerted, released by the technologist and
forwarded with its QC report, against real Mosquitto and Orthanc."""

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

from tests.support.agent_proc import AgentProcess
from tests.support.broker import Mosquitto, subscriber, unique_prefix
from tests.support.orthanc import Orthanc
from tests.support.peers import storescu
from tests.support.qc_series import write_series

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def modalities(orthanc: Orthanc) -> list[str]:
    return sorted(
        orthanc.get(f"/instances/{i}/simplified-tags")["Modality"] for i in orthanc.instance_ids()
    )


async def test_failed_series_held_alerted_released_and_forwarded_with_sr(
    agent_factory: Any, mosquitto: Mosquitto, orthanc: Orthanc, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    agent: AgentProcess = agent_factory(
        qc={"enabled": True},
        mqtt={"url": mosquitto.url, "topic_prefix": prefix},
        forward={"destinations": [orthanc.destination()]},
    ).start()
    base = f"{prefix}/test-agent"
    bad = write_series(tmp_path / "bad", "ring", 3, n=4)
    async with subscriber(mosquitto.port, f"{base}/#") as sub:
        await anyio.to_thread.run_sync(storescu, agent.port, bad)
        msgs = await sub.wait_for(lambda m: any(x.topic == f"{base}/alerts" for x in m), 60)
        alert = next(x.json() for x in msgs if x.topic == f"{base}/alerts")
        assert (alert["kind"], alert["action"], alert["severity"]) == (
            "qc",
            "repeat",
            "critical",
        )
        assert any(r["code"] == "ring_hu" for r in alert["reasons"])
        series_uid = alert["series_uid"]
        verdicts = [x.json() for x in sub.on(f"series/{series_uid}")]
        assert verdicts[-1]["state"] == "held" and verdicts[-1]["qc"]["status"] == "fail"
        await anyio.sleep(2)
        assert orthanc.instance_ids() == [], "a held series is not forwarded"

        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            command = {"action": "release", "series_uid": series_uid, "by": "tech-1"}
            await client.publish(f"{base}/commands", json.dumps(command), qos=1)
        await anyio.to_thread.run_sync(orthanc.wait_for_count, 6, 60)
        await sub.wait_for(
            lambda m: any(
                x.json().get("state") == "released" for x in sub.on(f"series/{series_uid}")
            ),
            30,
        )
    assert modalities(orthanc) == ["CT"] * 4 + ["KO", "SR"], "the report and its key images"
    await anyio.to_thread.run_sync(
        agent.wait_for,
        "SELECT state FROM deliveries",
        lambda r: len(r) == 6 and {x[0] for x in r} == {"delivered"},
    )
    rows = agent.query(
        "SELECT s.modality, MIN(d.delivered_at), MAX(d.delivered_at) FROM deliveries d "
        "JOIN instances i ON i.id = d.instance_id JOIN series s ON s.series_uid = i.series_uid "
        "GROUP BY s.modality"
    )
    times = {r[0]: (r[1], r[2]) for r in rows}
    assert times["SR"][0] >= times["CT"][1], "the report goes after its source series"
    assert times["KO"][0] >= times["CT"][1], "so do the key images"
    audit = agent.query(
        "SELECT who, action, from_state, to_state FROM series_audit WHERE series_uid = ?",
        series_uid,
    )
    assert [tuple(a) for a in audit] == [
        ("tech-1 (unauthenticated)", "release", "held", "released")
    ]
    sr_id = next(
        i
        for i in orthanc.instance_ids()
        if orthanc.get(f"/instances/{i}/simplified-tags")["Modality"] == "SR"
    )
    sr = dcmread(DicomBytesIO(orthanc.file_bytes(sr_id)))
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert "ring_hu" in str(sr.ContentSequence)
    (ko_id,) = [i for i in orthanc.instance_ids()
                if orthanc.get(f"/instances/{i}/simplified-tags")["Modality"] == "KO"]  # fmt: skip
    ko = dcmread(DicomBytesIO(orthanc.file_bytes(ko_id)))
    assert ko.ConceptNameCodeSequence[0].CodeValue == "113000", "Of Interest: the key images"


async def test_clean_series_passes_straight_through(
    agent_factory: Any, orthanc: Orthanc, tmp_path: Path
) -> None:
    agent: AgentProcess = agent_factory(
        qc={"enabled": True},
        forward={"destinations": [orthanc.destination()]},
    ).start()
    clean = write_series(tmp_path / "clean", "clean", 0, n=4)
    series_uid = str(dcmread(clean[0], stop_before_pixels=True).SeriesInstanceUID)
    await anyio.to_thread.run_sync(storescu, agent.port, clean)
    # forwarding within the wait (far below the 600 s hold timeout) means it was not held
    await anyio.to_thread.run_sync(orthanc.wait_for_count, 5, 60)
    assert modalities(orthanc) == ["CT"] * 4 + ["SR"]
    feed = [json.loads(line) for line in (agent.storage / "feed.jsonl").read_text().splitlines()]
    verdicts = [d["payload"] for d in feed if d["topic"] == f"series/{series_uid}"]
    # one verdict, published at completion (a hold would publish it again on release)
    summary = [(v["state"], v["qc"]["status"], v["instances"]) for v in verdicts]
    assert summary == [("released", "pass", 4)], "without a broker it goes to the feed"
    assert not [d for d in feed if d["topic"] == "alerts"], "a clean series raises no alert"
