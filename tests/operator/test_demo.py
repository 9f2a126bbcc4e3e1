"""`scanner-agent demo` runs the whole loop on one machine and exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.integration
def test_demo_shows_verdicts_alerts_holds_and_deliveries() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "60"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, run.stderr[-3000:]
    assert "VERDICT CHEST ROUTINE" in out and "qc=pass" in out
    assert "action=repeat CHEST RINGS" in out, "the ring study fails QC and asks for a repeat"
    assert "state=held" in out and "state=released" in out, (
        "held, then released at the hold timeout"
    )
    assert "ALERT   CRITICAL triage" in out, "the bleed raises a stat triage alert"
    count = int(out.rsplit("demo: ", 1)[1].split()[0])
    assert count >= 18, "the images and their reports reached the PACS stand-in"
