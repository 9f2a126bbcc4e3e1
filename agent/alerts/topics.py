"""MQTT topic names, built so that nothing from the network can break them.

A SeriesInstanceUID arrives in a C-STORE and is hostile like everything else: ``+`` or ``#``
make paho refuse the publish, ``/`` adds topic levels, NUL or other control characters make
Mosquitto drop the connection as malformed. So a series' topic level is :func:`series_key`:

- the UID itself when it is 1 to 64 ASCII letters, digits, ``.`` or ``_`` (every conformant
  UID, and the letters and hex some scanners send), so ``P/A/series/<uid>`` stays
  byte-identical for them;
- otherwise ``x-`` and the first 32 hex digits of the SHA-256 of its UTF-8 bytes. ``-`` is
  not in the kept set, so an escaped key never equals a kept UID.

The raw UID is still in the verdict's JSON (``series_uid``), escaped by the JSON encoder.
``topic_prefix`` and ``agent_id`` come from the config and are checked when it is loaded.
"""

from __future__ import annotations

import hashlib
import re

SAFE_UID = re.compile(r"[A-Za-z0-9._]{1,64}")
ESCAPED_PREFIX = "x-"
HASH_HEX_DIGITS = 32  # 128 bits: no accidental collision between two series
MAX_TOPIC_BYTES = 65535  # the MQTT length field
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Mosquitto refuses these in UTF-8 strings


def series_key(series_uid: str) -> str:
    """The topic level that names a series: the UID, or its escape when unsafe."""
    if SAFE_UID.fullmatch(series_uid):
        return series_uid
    raw = series_uid.encode("utf-8", "surrogatepass")  # a lone surrogate must not raise
    return ESCAPED_PREFIX + hashlib.sha256(raw).hexdigest()[:HASH_HEX_DIGITS]


def series_topic(series_uid: str) -> str:
    """Below ``P/A``: where the series' verdict is retained."""
    return f"series/{series_key(series_uid)}"


def topic_problem(topic: str) -> str | None:
    """Why a client or Mosquitto would refuse ``topic`` for a PUBLISH, or None. Checked before
    sending, so a bad row (say, one queued by an older version) is quarantined, not sent."""
    if not topic:
        return "empty topic"
    if "+" in topic or "#" in topic:
        return "topic contains an MQTT wildcard (+ or #)"
    if _CONTROL.search(topic):
        return "topic contains NUL or another control character"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "topic is not valid UTF-8"
    if size > MAX_TOPIC_BYTES:
        return f"topic is {size} bytes, over the MQTT limit of {MAX_TOPIC_BYTES}"
    return None
