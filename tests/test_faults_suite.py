"""The fault harness in its bounded CI form (benchmarks/faults.py --ci): every attack
against one running agent with a real Orthanc and Mosquitto, storage on a tmpfs (root).
After each one the agent is alive and a normal series gets its verdict on the broker,
and not one acknowledged instance is lost across the whole run."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults import failed, run
from tests.support.fault_cases import CASES, CI, table

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_fault_harness(tmp_path: Path) -> None:
    try:
        rows, acked = run(tmp_path, CI, list(CASES))
    except RuntimeError as exc:  # the tmpfs needs root: fail saying so, never skip
        pytest.fail(str(exc))
    print(table(rows, acked))
    assert not failed(rows), table(rows, acked)
    assert acked > CI.series, "the harness acknowledged too little to prove anything"
    by_case = {r.case: r.answer for r in rows}
    assert "full in the journal: 0xA700 x3; 1 storage.full alert" in by_case["disk full"]
    assert by_case["deflate bomb"].startswith("0xA700")
    assert int(by_case["deflate bomb"].split("peak RSS ")[1].split()[0]) < 1024
    assert by_case["length lies"] == "0xC210 x2" and by_case["deep nesting"] == "0xC210"
    assert by_case["bad UIDs"] == "0xC211 x2; wildcards 0x0000"
    assert "scanner 0x0000 x2" in by_case["slowloris"]
