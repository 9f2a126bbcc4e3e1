"""The MRD listener bounds its connections: a silent connection is closed after
``mrd.idle_timeout_s``, and beyond ``mrd.max_connections`` a new one is closed at once, while
a real stream still gets its image (issue 13)."""

from __future__ import annotations

import socket
import time

import numpy as np

from tests.support.mrd_streams import (
    cartesian_slice,
    full_lines,
    header,
    running_server,
    send_stream,
)
from tests.support.mri_phantoms import cartesian_multicoil


def _closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes ``sock`` (recv returns b"") within ``within_s``."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def _one_image(port: int) -> int:
    k = cartesian_multicoil(64, 4).astype(np.complex64)
    return len(send_stream(port, header(64, 4), cartesian_slice(k, full_lines(64))))


def test_a_silent_connection_is_closed_after_the_idle_timeout() -> None:
    with running_server(idle_timeout_s=0.5) as (srv, _got):
        with socket.create_connection(("127.0.0.1", srv.port)) as idle:
            t0 = time.monotonic()
            assert _closed_by_peer(idle, 30), "the idle connection was never closed"
            assert time.monotonic() - t0 >= 0.4, "closed before its timeout"
        assert _one_image(srv.port) == 1


def test_connections_beyond_the_limit_are_closed_at_once() -> None:
    with running_server(max_connections=1, idle_timeout_s=60) as (srv, _got):
        with socket.create_connection(("127.0.0.1", srv.port)) as first:
            time.sleep(0.3)  # accepted and counted
            with socket.create_connection(("127.0.0.1", srv.port)) as second:
                assert _closed_by_peer(second, 10), "the connection over the limit was served"
            assert not _closed_by_peer(first, 0.3), "the first connection stays open"
        time.sleep(0.3)  # the first one's slot is given back
        assert _one_image(srv.port) == 1


def test_no_connection_is_served_while_the_daemon_refuses_raw_data() -> None:
    """The daemon sets ``accepting`` to refuse MRD while its storage is full."""
    with running_server() as (srv, _got):
        srv.accepting = lambda: False
        with socket.create_connection(("127.0.0.1", srv.port)) as refused:
            assert _closed_by_peer(refused, 30), "a stream was served while refused"
        srv.accepting = lambda: True
        assert _one_image(srv.port) == 1
