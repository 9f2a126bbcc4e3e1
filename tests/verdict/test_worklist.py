"""The worklist check against dcmtk's wlmscpfs as the RIS: a series whose accession number
and patient ID the worklist confirms is released; a mismatch or a missing entry is held with
a ``worklist`` alert; an unreachable RIS holds, then fails open at the hold timeout."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from agent.config import WorklistConfig
from agent.verdict.worklist import WorklistCheck
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.peers import (
    dcmtk_env,
    free_port,
    require_dcmtk,
    stop_process,
    storescu,
    wait_for_port,
)

pytestmark = pytest.mark.integration

ENTRY = """\
(0008,0050) SH [{accession}]
(0008,0005) CS [ISO_IR 100]
(0010,0010) PN [Synthetic^Patient]
(0010,0020) LO [{patient}]
(0010,0030) DA [19700101]
(0010,0040) CS [O]
(0010,2000) LO
(0010,2110) LO
(0020,000d) UI [1.2.276.0.7230010.3.2.{n}]
(0032,1032) PN [SMITH]
(0032,1060) LO [CT CHEST]
(0040,0100) SQ
(fffe,e000) -
(0008,0060) CS [CT]
(0032,1070) LO
(0040,0001) AE [EDGE]
(0040,0002) DA [20261201]
(0040,0003) TM [120000]
(0040,0006) PN [JOHNSON]
(0040,0007) LO [CT CHEST]
(0040,0009) SH [SPS{n}]
(0040,0010) SH [STN1]
(0040,0011) SH [CT1]
(0040,0012) LO
(0040,0400) LT
(fffe,e00d) -
(fffe,e0dd) -
(0040,1001) SH [RP{n}]
(0040,1003) SH [LOW]
"""  # wlmscpfs ignores a file without every attribute its worklist files must have


class Wlmscpfs:
    """dcmtk's worklist SCP over a folder of worklist files built with dump2dcm."""

    def __init__(self, folder: Path, entries: list[tuple[str, str]]) -> None:
        self.port = free_port()
        self.root = folder
        aet = folder / "RIS"  # wlmscpfs serves the folder named after the called AE title
        aet.mkdir(parents=True)
        (aet / "lockfile").touch()
        for n, (accession, patient) in enumerate(entries, 1):
            dump = aet / f"entry{n}.dump"
            dump.write_text(ENTRY.format(accession=accession, patient=patient, n=n))
            subprocess.run([require_dcmtk("dump2dcm"), str(dump), str(aet / f"entry{n}.wl")],
                           check=True, capture_output=True, env=dcmtk_env())  # fmt: skip
        self.proc = subprocess.Popen(
            [require_dcmtk("wlmscpfs"), "-dfp", str(folder), str(self.port)],
            env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, 30, self.proc)

    def config(self) -> dict[str, Any]:
        return {"ae_title": "RIS", "host": "127.0.0.1", "port": self.port}

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def ris(tmp_path: Path) -> Iterator[Wlmscpfs]:
    server = Wlmscpfs(tmp_path / "worklist", [("ACC0001", "SYNTH-0001"), ("ACC0002", "PAT-2")])
    yield server
    server.stop()


def send_series(agent: AgentProcess, folder: Path, accession: str, patient: str) -> str:
    hdr = series_header()
    hdr.AccessionNumber, hdr.PatientID = accession, patient
    files = write_ct_series(folder, 5, header=hdr, images_in_acquisition=5)
    storescu(agent.port, files)
    return str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def state_of(agent: AgentProcess, uid: str, want: set[str]) -> Any:
    rows = agent.wait_for("SELECT * FROM series WHERE series_uid = ?",
                          lambda r: len(r) == 1 and r[0]["state"] in want, 60, uid)  # fmt: skip
    return rows[0]


def worklist_alerts(agent: AgentProcess, uid: str, count: int = 1) -> list[dict[str, Any]]:
    path = agent.storage / "feed.jsonl"
    deadline = time.monotonic() + 60
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        found = [x["payload"] for x in lines if x["topic"] == "alerts"
                 and x["payload"]["kind"] == "worklist" and x["payload"]["series_uid"] == uid]  # fmt: skip
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no worklist alert for {uid}\n{agent.log()[-3000:]}")


def test_match_releases_and_mismatch_or_no_entry_holds(
    agent_factory: Any, ris: Wlmscpfs, tmp_path: Path
) -> None:
    agent: AgentProcess = agent_factory(worklist=ris.config()).start()
    good = send_series(agent, tmp_path / "good", "ACC0001", "SYNTH-0001")
    wrong = send_series(agent, tmp_path / "wrong", "ACC0002", "SYNTH-0001")
    unknown = send_series(agent, tmp_path / "unknown", "ACC9999", "SYNTH-0001")
    assert state_of(agent, good, {"released", "forwarded"})["flagged"] == 0
    state_of(agent, wrong, {"held"})
    state_of(agent, unknown, {"held"})
    (mismatch,) = worklist_alerts(agent, wrong)
    assert mismatch["action"] == "review"
    assert mismatch["reasons"][0]["code"] == "worklist.mismatch"
    text = json.dumps(mismatch["reasons"])
    assert "PAT-2" not in text and "SYNTH-0001" not in text, "no patient ID in an alert"
    (missing,) = worklist_alerts(agent, unknown)
    assert missing["reasons"][0]["code"] == "worklist.no-entry"
    assert not [line for line in agent.log().splitlines() if "worklist" in line and good in line
                and "held" in line]  # fmt: skip


def test_unreachable_ris_holds_then_fails_open(agent_factory: Any, tmp_path: Path) -> None:
    nobody = {"ae_title": "RIS", "host": "127.0.0.1", "port": free_port(), "timeout_s": 2}
    agent: AgentProcess = agent_factory(worklist=nobody, forward={"hold_timeout_s": 3}).start()
    uid = send_series(agent, tmp_path / "s", "ACC0001", "SYNTH-0001")
    (alert,) = worklist_alerts(agent, uid)
    assert alert["reasons"][0]["code"] == "worklist.unreachable"
    row = state_of(agent, uid, {"released", "forwarded"})
    assert (row["release_reason"], row["flagged"]) == ("hold-timeout", 1)


def test_check_answers_from_the_worklist(ris: Wlmscpfs) -> None:
    check = WorklistCheck(WorklistConfig(**ris.config()), "EDGE")
    assert check.check("ACC0001", "SYNTH-0001").code == "worklist.match"
    assert check.check("ACC0002", "SYNTH-0001").code == "worklist.mismatch"
    assert check.check("ACC0404", "SYNTH-0001").code == "worklist.no-entry"
    assert check.check("", "SYNTH-0001").code == "worklist.no-entry"
    assert check.check("*", "SYNTH-0001").code == "worklist.no-entry", "no wildcard match"
    ris.stop()
    assert check.check("ACC0001", "SYNTH-0001").code == "worklist.match", "a cached answer"
    assert check.check("ACC0003", "X").code == "worklist.unreachable"
