"""A readable name for a series row, shared by the terminal and the web console.

Rows named by a UID tail all look alike, so a series without a SeriesDescription is named
by what the technologist chose and when: protocol, body part and the time of its images
(``CT HEAD · 14:02:31``). A UID never names a row.

:func:`series_label` takes the series as the journal or the feed gives it: a Verdict dict
(``P/A/series/<uid>``, ``GET /api/series``), an Alert dict, or a journal ``series`` row as a
mapping. Every value in it came from DICOM, so the result is plain text with control
characters removed; whoever draws it still escapes it (HTML, terminal markup).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

MAX_LABEL = 64  # a row, not a paragraph: longer descriptions are cut with an ellipsis

_TIME_KEYS = ("last_image_at", "last_received_at", "first_received_at", "created")


def series_label(series: Mapping[str, Any], *, max_len: int = MAX_LABEL) -> str:
    """The series' description, else ``[protocol] [modality] [#number] [body part] · time``.

    Keys read (all optional): ``series_description``, ``protocol_name``, ``modality``,
    ``series_number``, ``body_part`` (a journal row) or ``triage.body_part`` (a Verdict:
    the header's value, else the classifier's), and the first time among ``last_image_at``,
    ``last_received_at``, ``first_received_at``, ``created`` (ISO 8601 or epoch seconds),
    shown in local time.
    """
    description = _clean(series.get("series_description"))
    if description:
        return _cut(description, max_len)
    words = [
        _clean(series.get("protocol_name")),
        _clean(series.get("modality")),
        _number(series.get("series_number")),
        _body_part(series),
    ]
    head = " ".join(w for w in words if w) or "series"
    when = _when(series)
    return _cut(f"{head} · {when}" if when else f"unnamed {head}", max_len)


def _clean(value: Any) -> str:
    """Printable text, whitespace collapsed; '' for anything but a str or a number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return " ".join(text.split())


def _number(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"#{value}"
    return ""


def _body_part(series: Mapping[str, Any]) -> str:
    part = _clean(series.get("body_part"))
    if part:
        return part
    triage = series.get("triage")
    call = triage.get("body_part") if isinstance(triage, Mapping) else None
    if isinstance(call, Mapping):
        return _clean(call.get("header")) or _clean(call.get("predicted"))
    return ""


def _when(series: Mapping[str, Any]) -> str:
    for key in _TIME_KEYS:
        epoch = _epoch(series.get(key))
        if epoch is not None:
            return time.strftime("%H:%M:%S", time.localtime(epoch))
    return ""


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    if isinstance(value, str) and value:
        try:  # the wire form: 2024-05-01T12:00:00.123Z
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _cut(text: str, max_len: int) -> str:
    return text if len(text) <= max_len else text[: max(max_len - 1, 0)] + "…"
