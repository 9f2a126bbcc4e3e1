"""Every real file in pydicom-data that carries its UIDs, sent to a running agent as a new user
would: each is stored or refused with a documented status, no stage logs an error, the agent
stays up, and every series it stored gets its verdict and its QC report."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.data.data_manager import external_data_sources

from tests.support.agent_proc import AgentProcess
from tests.support.scu import send_files

DOCUMENTED = {0x0000, 0xA700, 0xA900, 0xC210, 0xC211, 0xC212}  # README's refusal table
UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
STAGE_ERRORS = ("Traceback", " ERROR ", "CRITICAL")


def _corpus() -> list[Path]:
    """pydicom's own test files and pydicom-data's, without any download."""
    folders = [Path(pydicom.__file__).parent / "data" / "test_files"]
    folders += [Path(src.data_path) for src in external_data_sources().values()]
    found = []
    for path in sorted(p for folder in folders for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM, or not readable: not part of this corpus
            continue
        meta = getattr(ds, "file_meta", None)
        if all(k in ds for k in UIDS) and meta is not None and "TransferSyntaxUID" in meta:
            found.append(path)
    return found


def _send(port: int, path: Path) -> int | str:
    """The C-STORE status, or why no C-STORE could be sent (no accepted context)."""
    try:
        (status,) = send_files(port, [path])
    except (ValueError, RuntimeError) as exc:  # pynetdicom: no presentation context
        return f"not negotiated: {exc}"
    return -1 if status is None else status


def _verdicts(storage: Path) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    feed = storage / "feed.jsonl"
    for line in feed.read_text().splitlines() if feed.exists() else []:
        payload = json.loads(line).get("payload")
        if isinstance(payload, dict) and payload.get("schema") == "scanner-agent.verdict/1":
            out[str(payload["series_uid"])] = payload
    return out


@pytest.mark.integration
def test_real_corpus_through_the_daemon(agent_factory: type[AgentProcess]) -> None:
    corpus = _corpus()
    assert len(corpus) >= 100, f"pydicom-data looks incomplete: {len(corpus)} usable files"
    agent = agent_factory(
        qc={"enabled": True},
        series={"grace_s": 0.5, "idle_timeout_s": {"default": 5}},
        forward={"hold_timeout_s": 1},  # real files that fail QC go out flagged, soon
    ).start()
    answers = {path.name: _send(agent.port, path) for path in corpus}
    undocumented = {n: a for n, a in answers.items() if a not in DOCUMENTED}
    assert undocumented == {}, f"answers outside the README's table: {undocumented}"
    assert agent.proc is not None and agent.proc.poll() is None, agent.log()[-3000:]

    accepted = {p for p in corpus if answers[p.name] == 0x0000}
    sources = {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in accepted}
    assert len(accepted) >= len(corpus) // 2, f"most real files are storable: {answers}"
    journal = {r[0] for r in agent.query("SELECT series_uid FROM series WHERE derived_from IS NULL")}
    assert journal == sources, "the journal holds exactly the series that were acknowledged"
    agent.wait_for(
        "SELECT series_uid, state FROM series WHERE derived_from IS NULL",
        lambda rows: len(rows) == len(sources) and all(r[1] == "forwarded" for r in rows),
        180,
    )
    verdicts = _verdicts(agent.storage)
    missing = sorted(sources - verdicts.keys())
    assert missing == [], f"series without a verdict: {missing}"
    # the reports are built after the verdict is out, so they may trail the images a little
    try:
        agent.wait_for(
            "SELECT DISTINCT derived_from FROM series WHERE derived_from IS NOT NULL",
            lambda rows: sources <= {r[0] for r in rows}, 60,
        )  # fmt: skip
    except AssertionError:
        rows = agent.query("SELECT derived_from FROM series WHERE derived_from IS NOT NULL")
        unreported = sorted(sources - {r[0] for r in rows})
        raise AssertionError(f"series whose QC report was lost: {unreported}") from None
    errors = [
        line for line in agent.log().splitlines()
        if any(m in line for m in STAGE_ERRORS) and " ALERT " not in line  # alerts, logged
    ]  # fmt: skip
    assert errors == [], "stage errors in the log:\n" + "\n".join(errors[:20])
