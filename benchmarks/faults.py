"""The fault harness (issue 13): every attack of tests/support/fault_cases.py against one
running agent (real Orthanc PACS, real Mosquitto, storage on a small tmpfs), then a table of
case, answer, alive, lost and whether a normal series got its verdict afterwards.

    sudo env PYTHONPATH=. python benchmarks/faults.py [--ci] [--case NAME ...]

Needs root for the tmpfs. Exits 1 when any case left the agent dead, lost an acknowledged
instance, or was followed by a normal series without a verdict. ``--ci`` is the bounded
form that tests/test_faults_suite.py runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.support.disk import tmpfs
from tests.support.fault_cases import CASES, CI, Rig, Row, Sizes, table

DISK = "96m"  # the agent's storage; delivered files are purged as they go


def run(work: Path, sizes: Sizes, names: list[str]) -> tuple[list[Row], int]:
    """Run ``names`` in order on one rig; returns the rows and the instances acknowledged."""
    with tmpfs(work / "disk", DISK) as disk:
        rig = Rig(work, disk, sizes)
        try:
            rows = [rig.run(name, CASES[name]) for name in names]
            return rows, len(rig.acked)
        finally:
            rig.close()


def failed(rows: list[Row]) -> list[Row]:
    return [r for r in rows if not r.alive or r.lost or not r.verdict]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ci", action="store_true", help="the bounded sizes CI runs")
    parser.add_argument("--case", action="append", choices=list(CASES), help="only these")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="faults-") as work:
        rows, acked = run(Path(work), CI if args.ci else Sizes(), args.case or list(CASES))
    print(table(rows, acked))
    return 1 if failed(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
