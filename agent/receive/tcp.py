"""TCP options for pynetdicom associations, ours (the listener) and the sender's."""

from __future__ import annotations

import socket
from typing import Any


def no_delay(assoc: Any) -> None:
    """Turn off Nagle's algorithm, which pynetdicom leaves on: with it every C-STORE waits for
    a delayed ACK (tens of ms) before its last segment leaves."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
