"""Verdicts to the RIS and the EHR: one HL7 ORU^R01 over MLLP and one FHIR transaction per
verdict, through the agent's own queue. The peers are a real MLLP listener (hl7apy parses and
validates every message) and a real HTTP server (fhir.resources validates every Bundle)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.support.agent_proc import AgentProcess
from tests.support.cli import scanner_agent
from tests.support.dicom_factory import write_ct_series
from tests.support.fhir_server import FhirServer
from tests.support.mllp import MllpListener
from tests.support.peers import storescu

pytestmark = pytest.mark.integration


@pytest.fixture
def peers() -> Iterator[Callable[[Any], Any]]:
    """Register an MLLP listener or FHIR server to be stopped at teardown."""
    made: list[Any] = []

    def keep(peer: Any) -> Any:
        made.append(peer)
        return peer

    yield keep
    for peer in made:
        peer.stop()


def agent_with(factory: Any, ris: MllpListener, ehr: FhirServer) -> AgentProcess:
    dests = [
        {"kind": "folder", "name": "local"},
        {"kind": "hl7", "name": "ris", "host": "127.0.0.1", "port": ris.port,
         "receiving_application": "RIS", "timeout_s": 5},
        {"kind": "fhir", "name": "ehr", "url": ehr.url, "timeout_s": 5},
    ]  # fmt: skip
    return factory(forward={"destinations": dests, "retry": {"initial_s": 0.2, "max_s": 1}}).start()


def messages(agent: AgentProcess, state: str, count: int = 2, attempts: int = 0) -> list[Any]:
    return agent.wait_for(
        "SELECT destination, state, attempts, last_error FROM messages ORDER BY destination",
        lambda rows: (
            len(rows) == count
            and all(r["state"] == state and r["attempts"] >= attempts for r in rows)
        ),
        60,
    )


def test_a_verdict_reaches_the_ris_and_the_ehr(agent_factory, peers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ris, ehr = peers(MllpListener().start()), peers(FhirServer().start())
    files = write_ct_series(tmp_path / "s", 4)
    source = dcmread(files[0], stop_before_pixels=True)
    agent = agent_with(agent_factory, ris, ehr)
    storescu(agent.port, files)
    messages(agent, "delivered")
    agent.wait_series_state("forwarded")
    # the images went to the folder only: HL7 and FHIR destinations get verdicts
    images = agent.query("SELECT destination, COUNT(*) FROM deliveries GROUP BY destination")
    assert [tuple(r) for r in images] == [("local", 4)]
    status = json.loads(scanner_agent("status", "--json", config=agent.config_path).stdout)
    assert status["destinations"]["ris"]["delivered"] == 1
    assert status["destinations"]["ehr"]["delivered"] == 1

    (oru,) = ris.messages()
    assert not ris.received.invalid
    pid = oru.oru_r01_patient_result.oru_r01_patient.pid
    assert pid.pid_3.cx_1.value == "SYNTH-0001"
    assert pid.pid_5.xpn_1.to_er7() == "Synthetic"
    order = oru.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_18.to_er7() == "ACC0001"
    assert order.obr.obr_3.to_er7() == str(source.SeriesInstanceUID)
    assert order.obr.obr_25.to_er7() == "F"
    obx = {o.obx.obx_3.ce_1.value: o.obx for o in order.oru_r01_observation}
    assert obx["QC-STATUS"].obx_5.to_er7().startswith("pass^")
    assert obx["110180"].obx_5.to_er7() == str(source.StudyInstanceUID)
    assert oru.msh.msh_5.to_er7() == "RIS"

    (bundle,) = ehr.received()
    assert not ehr.invalid
    by_url = {e.fullUrl: e.resource for e in bundle.entry}
    (report,) = [r for r in by_url.values() if r.__resource_type__ == "DiagnosticReport"]
    study = by_url[report.imagingStudy[0].reference]
    assert study.identifier[0].value == f"urn:oid:{source.StudyInstanceUID}"
    assert study.series[0].uid == str(source.SeriesInstanceUID)
    assert report.subject.identifier.value == "SYNTH-0001"
    results = [by_url[r.reference] for r in report.result]
    assert results[0].code.coding[0].code == "qc-status"
    assert results[0].valueCodeableConcept.coding[0].code == "qc-pass"


def test_a_ris_that_is_down_gets_the_message_when_it_is_back(
    agent_factory, peers, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    ris, ehr = peers(MllpListener()), peers(FhirServer())  # neither listening yet
    agent = agent_with(agent_factory, ris, ehr)
    storescu(agent.port, write_ct_series(tmp_path / "s", 3))
    messages(agent, "queued", attempts=2)  # retried with backoff, never dropped
    ris.start()
    ehr.start()
    delivered = messages(agent, "delivered")
    assert len(ris.messages()) == 1 and len(ehr.received()) == 1
    assert "retry" in agent.log()
    assert all(r["attempts"] >= 2 for r in delivered)


def test_a_permanent_reject_quarantines_the_message(agent_factory, peers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ris, ehr = peers(MllpListener(answer="AE").start()), peers(FhirServer(refuse=422).start())
    agent = agent_with(agent_factory, ris, ehr)
    storescu(agent.port, write_ct_series(tmp_path / "s", 3))
    rows = messages(agent, "quarantined")
    errors = {r["destination"]: r["last_error"] for r in rows}
    assert errors["ris"].startswith("ACK AE"), errors
    assert errors["ehr"].startswith("HTTP 422: refused by the test server"), errors
    assert len(ris.messages()) == 1  # sent once, not retried
    agent.wait_for_log("forward.quarantined", count=2)
    listed = scanner_agent("quarantine", "list", "--json", config=agent.config_path, check=True)
    assert {r["destination"] for r in json.loads(listed.stdout)} == {"ris", "ehr"}
    ris.answer, ehr.refuse = "AA", None  # the RIS and the EHR are fixed: the operator retries
    scanner_agent("quarantine", "retry", config=agent.config_path, check=True)
    messages(agent, "delivered")
    assert len(ris.messages()) == 2 and len(ehr.received()) == 1
    series = str(agent.query("SELECT series_uid FROM messages LIMIT 1")[0][0])
    scanner_agent("resend", "--series", series, "--to", "ris", config=agent.config_path, check=True)
    agent.wait_for("SELECT sends FROM messages WHERE destination = 'ris'",
                   lambda rows: rows[0][0] == 3, 60)  # fmt: skip
    assert len(ris.messages()) == 3
