"""Peers that connect and stall: half-sent A-ASSOCIATE-RQs and bare sockets (slowloris),
and how many sockets the agent holds for them."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

from tests.support.agent_proc import AgentProcess

CLOSE_GUARD_S = 120  # a guard against a hang, never a measured time


@contextlib.contextmanager
def connections(port: int, count: int, send: bytes = b"") -> Iterator[list[socket.socket]]:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=CLOSE_GUARD_S)
             for _ in range(count)]  # fmt: skip
    try:
        for sock in socks:
            if send:
                sock.sendall(send)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def half_associate_rq() -> bytes:
    """The first 64 bytes of an A-ASSOCIATE-RQ that announces 400: the rest never comes."""
    return struct.pack(">BBI", 0x01, 0x00, 400) + struct.pack(">HH", 1, 0) + b"EDGE".ljust(16) \
        + b"SCANNER".ljust(16) + b"\0" * 22  # fmt: skip


def socket_fds(agent: AgentProcess) -> int:
    assert agent.proc is not None
    fds = Path(f"/proc/{agent.proc.pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(fd).startswith("socket:")
    return count
