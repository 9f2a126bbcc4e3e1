"""Routing end to end: a route on the calling AE title sends a scanner's series to its own
folder destination only; a series from another scanner takes ``forward.default_to``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.peers import storescu

pytestmark = pytest.mark.integration


def received(folder: Path) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.rglob("*.dcm")}


def sop_uids(files: list[Path]) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}


def test_route_on_calling_aet_lands_only_in_the_routed_folder(
    agent_factory: Any, tmp_path: Path
) -> None:
    routed, other = tmp_path / "routed", tmp_path / "other"
    forward = {
        "destinations": [
            {"kind": "folder", "name": "routed", "path": str(routed)},
            {"kind": "folder", "name": "other", "path": str(other)},
        ],
        "routes": [{"name": "scanner-a", "when": {"calling_aet": ["CT_A"]}, "to": ["routed"]}],
        "default_to": ["other"],
    }
    agent = agent_factory(forward=forward).start()
    from_a = write_ct_series(tmp_path / "a", 3, images_in_acquisition=3, header=series_header("A"))
    from_b = write_ct_series(tmp_path / "b", 2, images_in_acquisition=2, header=series_header("B"))
    storescu(agent.port, from_a, calling="CT_A")
    storescu(agent.port, from_b, calling="CT_B")
    agent.wait_for(
        "SELECT state FROM series", lambda r: len(r) == 2 and {x[0] for x in r} == {"forwarded"}, 60
    )
    assert received(routed) == sop_uids(from_a), "CT_A's series went to the routed folder"
    assert received(other) == sop_uids(from_b), "and only there; CT_B's took the default"
    rows = agent.query(
        "SELECT s.calling_aet, d.destination, COUNT(*) FROM deliveries d "
        "JOIN instances i ON i.id = d.instance_id JOIN series s ON s.series_uid = i.series_uid "
        "GROUP BY s.calling_aet, d.destination ORDER BY s.calling_aet"
    )
    assert [tuple(r) for r in rows] == [("CT_A", "routed", 3), ("CT_B", "other", 2)]
