"""The outcome follows the destination's status; operators act on the quarantine.

The destination here is a real pynetdicom Storage SCP whose answer each test chooses, since
neither Orthanc nor dcmtk can be told to answer 0xB000, 0xC123 or a passing 0xA700.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt

from agent.config import ForwardConfig
from agent.domain.instances import SeriesInfo, SeriesState
from agent.journal.database import Journal
from agent.verdict.gate import ReleaseGate
from tests.support.agent_proc import AgentProcess
from tests.support.cli import scanner_agent
from tests.support.dicom_factory import write_ct_series
from tests.support.instances import BASE, slices
from tests.support.peers import free_port, storescu


class ScriptedSCP:
    """Answers C-STORE with ``answer(n)`` for the n-th request (0-based); counts receptions."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.received: list[str] = []
        self.lock = threading.Lock()
        self.port = free_port()
        ae = AE(ae_title="PACS")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: Any) -> int:
        with self.lock:
            n = len(self.received)
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return int(self.answer(n))

    def stop(self) -> None:
        self.server.shutdown()


def agent_to(factory: Any, scp: ScriptedSCP, **forward: Any) -> AgentProcess:
    dest = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}
    return factory(forward={"destinations": [dest], "retry": {"initial_s": 0.2, "max_s": 1}, **forward}).start()


def states(agent: AgentProcess) -> list[tuple[str, int | None]]:
    return [(r[0], r[1]) for r in agent.query("SELECT state, last_status FROM deliveries ORDER BY instance_id")]


@pytest.mark.integration
def test_warnings_deliver_and_failures_quarantine(agent_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    answers = [0x0000, 0xB000, 0x0111, 0xC123, 0xA900, 0x0000]
    scp = ScriptedSCP(lambda n: answers[n])
    try:
        agent = agent_to(agent_factory, scp)
        storescu(agent.port, write_ct_series(tmp_path / "s", 6, images_in_acquisition=6))
        agent.wait_for("SELECT state FROM series", lambda r: r and r[0][0] == "quarantined", 30)
        assert states(agent) == [
            ("delivered", 0x0000), ("delivered", 0xB000), ("delivered", 0x0111),
            ("quarantined", 0xC123), ("quarantined", 0xA900), ("delivered", 0x0000),
        ]  # fmt: skip
        warnings = [r[0] for r in agent.query("SELECT warning FROM deliveries WHERE warning IS NOT NULL")]
        assert any("0xB000" in w for w in warnings) and any("duplicate" in w for w in warnings)
        errors = [r[0] for r in agent.query("SELECT last_error FROM deliveries WHERE state = 'quarantined'")]
        assert errors == ["0xC123: cannot understand", "0xA900: data set does not match SOP class"]
        assert len(scp.received) == 6, "quarantine is final: nothing is resent by itself"
    finally:
        scp.stop()


@pytest.mark.integration
def test_out_of_resources_is_retried_in_order(agent_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scp = ScriptedSCP(lambda n: 0xA700 if n in (2, 3, 4) else 0x0000)
    try:
        agent = agent_to(agent_factory, scp)
        files = write_ct_series(tmp_path / "s", 5, images_in_acquisition=5)
        storescu(agent.port, files)
        agent.wait_series_state("forwarded", 30)
        distinct = scp.received[:2] + scp.received[-3:]
        assert len(set(distinct)) == 5
        assert scp.received[2] == scp.received[3] == scp.received[4], "the head item is retried first"
        (attempts,) = agent.query("SELECT MAX(attempts) FROM deliveries")[0]
        assert attempts == 3
    finally:
        scp.stop()


def cli(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return scanner_agent(*args, config=agent.config_path, timeout=60)


@pytest.mark.integration
def test_quarantine_retry_drop_and_resend(agent_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    refuse = {"on": True}
    scp = ScriptedSCP(lambda n: 0xC000 if refuse["on"] else 0x0000)
    try:
        agent = agent_to(agent_factory, scp)
        storescu(agent.port, write_ct_series(tmp_path / "s", 3, images_in_acquisition=3))
        agent.wait_for("SELECT state FROM series", lambda r: r and r[0][0] == "quarantined", 30)
        listed = json.loads(cli(agent, "quarantine", "list", "--json").stdout)
        assert len(listed) == 3 and all("0xC000" in r["last_error"] for r in listed)
        status = json.loads(cli(agent, "status", "--json").stdout)
        assert status["destinations"]["pacs"]["quarantined"] == 3
        assert "0xC000" in status["destinations"]["pacs"]["last_error"]
        refuse["on"] = False
        assert "retry: 3" in cli(agent, "quarantine", "retry").stdout
        agent.wait_series_state("forwarded", 30)
        series_uid = agent.query("SELECT series_uid FROM series")[0][0]
        before = len(scp.received)
        out = cli(agent, "resend", "--series", series_uid, "--to", "pacs")
        assert "3 instances queued" in out.stdout, out.stderr
        deadline = time.monotonic() + 30
        while len(scp.received) < before + 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(scp.received) == before + 3
        bad = cli(agent, "resend", "--series", series_uid, "--to", "nowhere")
        assert bad.returncode == 1 and "unknown destination" in bad.stderr
        empty = cli(agent, "quarantine", "drop")
        assert "drop: 0" in empty.stdout
    finally:
        scp.stop()


@pytest.mark.anyio
async def test_hold_timeout_releases_flagged(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite")
    info = SeriesInfo(series_uid=BASE.series_uid, study_uid=BASE.study_uid, modality="CT")
    for inst in slices(3):
        journal.record_instance(inst, info)
    journal.hold_series(BASE.series_uid, "qc fail")
    cfg = ForwardConfig.model_validate({"destinations": [{"kind": "folder", "name": "local"}], "hold_timeout_s": 0.3})
    gate = ReleaseGate(journal, cfg)
    gate.on_complete(BASE.series_uid)
    assert journal.series_state(BASE.series_uid) == SeriesState.HELD, "complete but held stays held"
    with anyio.move_on_after(1.0):
        await gate.expire_holds(interval_s=0.05)
    row = journal.series_row(BASE.series_uid)
    assert row is not None and row["state"] == SeriesState.RELEASED
    assert (row["flagged"], row["release_reason"]) == (1, "hold-timeout")
    with journal.reading() as db:
        assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 3

