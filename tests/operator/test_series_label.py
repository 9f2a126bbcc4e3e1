"""Rows are named by description, else protocol, body part and time: never by a UID tail."""

from __future__ import annotations

import json
import time

from agent.operator.series_label import series_label
from tests.support.alert_samples import series_uid, verdict


def test_description_wins() -> None:
    doc = json.loads(verdict(series_uid(1), series_description="Head 5mm axial").to_json())
    assert series_label(doc) == "Head 5mm axial"


def test_without_description_rows_differ_and_show_no_uid() -> None:
    uid_a, uid_b = series_uid(11), series_uid(12)
    a = json.loads(verdict(uid_a, series_description="").to_json())
    b = {
        **a,
        "series_uid": uid_b,
        "modality": "MR",
        "last_image_at": "2024-05-01T09:30:00.000Z",
        "triage": None,
    }
    a["triage"]["body_part"] = {"header": "HEAD", "predicted": "HEAD"}
    la, lb = series_label(a), series_label(b)
    assert la != lb
    assert la.startswith("CT HEAD · ") and lb.startswith("MR · ")
    expected = time.strftime("%H:%M:%S", time.localtime(1714555800.0))
    assert lb.endswith(expected)
    for label in (la, lb):
        assert uid_a[-6:] not in label and uid_b[-6:] not in label


def test_journal_row_protocol_body_part_and_epoch_time() -> None:
    row = {"series_uid": series_uid(3), "series_description": "  ", "protocol_name": "Brain Routine",
           "modality": "CT", "series_number": 4, "body_part": "HEAD",
           "last_received_at": 1714555800.0}  # fmt: skip
    when = time.strftime("%H:%M:%S", time.localtime(1714555800.0))
    assert series_label(row) == f"Brain Routine CT #4 HEAD · {when}"


def test_hostile_values_are_plain_text_and_bounded() -> None:
    doc = {"series_description": "Head\x1b[2J\nbone" + "x" * 500, "series_uid": "1.2"}
    label = series_label(doc)
    assert "\x1b" not in label and "\n" not in label and len(label) <= 64
    assert label.startswith("Head [2J bone") and label.endswith("…")
    assert series_label({"modality": ["CT"], "series_uid": "1.2.3"}) == "unnamed series"
    assert series_label({"modality": "CT", "created": "not a time"}) == "unnamed CT"
