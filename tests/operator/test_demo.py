"""`scanner-agent demo` runs the whole loop on one machine and exits 0 only when everything
reached the PACS stand-in."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from agent.domain.verdicts import QC, Triage
from agent.operator.demo import Sent, missing_objects, summary
from agent.qc.sr import qc_sr
from agent.triage.sr import triage_sr
from tests.support.dicom_factory import ct_slice, series_header

VERDICT = re.compile(r"^VERDICT (.{20}) state=(\S+)\s+qc=(\S+)", re.M)


def _verdicts(out: str, description: str) -> list[tuple[str, str]]:
    """(state, qc) of each VERDICT line the demo printed for one series, in order."""
    return [(m[2], m[3]) for m in VERDICT.finditer(out) if m[1].strip() == description]


@pytest.mark.integration
def test_demo_shows_verdicts_alerts_holds_and_deliveries() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "60"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert _verdicts(out, "CHEST ROUTINE") == [("released", "pass")]
    assert "action=repeat CHEST RINGS" in out, "the ring study fails QC and asks for a repeat"
    # held at completion, then released still failing QC: only the hold timeout does that
    assert _verdicts(out, "CHEST RINGS") == [("held", "fail"), ("released", "fail")]
    lines = out.splitlines()
    assert any(x.startswith("demo: CHEST RINGS: forwarded, flagged (hold-timeout), ") for x in lines)
    assert any(x.startswith("demo: CHEST ROUTINE: forwarded (complete), delivered ") for x in lines)
    assert "ALERT   CRITICAL triage" in out, "the bleed raises a stat triage alert"
    (bleed,) = [line for line in out.splitlines() if line.startswith("demo: HEAD BLEED:")]
    # released at completion (QC passed) or sent while QC held it: never after the hold timeout
    assert "(complete)" in bleed or "stat: sent while held" in bleed, bleed
    assert "MISSING" not in out


def _write(ds: Dataset, outbox: Path) -> None:
    folder = outbox / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID)
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)


def _delivered_series(outbox: Path) -> tuple[Sent, list[Path]]:
    """Two images of one series and both its reports, as the folder destination lays them out."""
    images = [ct_slice(series_header("CHEST ROUTINE"), 0)]
    images.append(ct_slice(images[0], 1))
    pairs = [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in images]
    for ds in [*images, qc_sr(QC("pass"), images[0], pairs), triage_sr(Triage("routine"), images[0], pairs)]:
        _write(ds, outbox)
    first = images[0]
    sent = Sent(str(first.StudyInstanceUID), str(first.SeriesInstanceUID), "CHEST ROUTINE",
                [u for _, u in pairs])  # fmt: skip
    return sent, sorted(outbox.rglob("*.dcm"))


def test_summary_is_zero_only_when_every_image_and_report_arrived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = tmp_path / "outbox" / "local"
    sent, _ = _delivered_series(outbox)
    assert summary(tmp_path, [sent], ("QC", "triage")) == 0
    assert "MISSING" not in capsys.readouterr().out
    (outbox / sent.study / sent.series / f"{sent.sops[1]}.dcm").unlink()
    assert summary(tmp_path, [sent], ("QC", "triage")) == 1
    assert "demo: MISSING CHEST ROUTINE: 1 of 2 images" in capsys.readouterr().out


def test_missing_reports_and_nothing_sent_are_reported(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox" / "local"
    sent, files = _delivered_series(outbox)
    assert missing_objects(outbox, [sent], ("QC", "triage")) == []
    for path in files:
        if path.parent.name != sent.series:  # the two reports' own series
            path.unlink()
    assert missing_objects(outbox, [sent], ("QC", "triage")) == [
        "CHEST ROUTINE: its QC report", "CHEST ROUTINE: its triage report",
    ]  # fmt: skip
    assert missing_objects(outbox, [], ("QC",)) == ["the scanner sent nothing"]
