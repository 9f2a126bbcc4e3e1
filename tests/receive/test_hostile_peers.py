"""Peers that connect and stall (issue 13): an idle socket before the TLS handshake,
half-sent A-ASSOCIATE-RQs, bare TCP connections. None of them may keep a real scanner
(dcmtk storescu, echoscu) out while they are still open (a long ``acse_timeout_s``, and
the stalled sockets checked open afterwards), and with a short one the agent closes
each of them itself. Agents start without a port probe (a probe is a bare connection,
the very thing under test).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess
from tests.support.broker import TlsFiles, make_tls
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import dcmtk_env, require_tool, storescu
from tests.support.scu import associate
from tests.support.stalling import CLOSE_GUARD_S, connections, half_associate_rq, socket_fds

pytestmark = pytest.mark.integration

LONG_ACSE_S = 300  # stalled sockets stay open for the whole test


def closed_by_peer(sock: socket.socket) -> bool:
    """Block until the agent closes ``sock``; False if it never does (the guard expires)."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(CLOSE_GUARD_S)


def echo(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("echoscu"), "-aec", "EDGE", "127.0.0.1", str(port)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=CLOSE_GUARD_S, check=False,
    )  # fmt: skip


def stored(agent: AgentProcess) -> int:
    return int(agent.query("SELECT COUNT(*) FROM instances")[0][0])


def test_half_open_associations_lock_no_one_out(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(dicom={"acse_timeout_s": LONG_ACSE_S}).start(probe_port=False)
    files = write_ct_series(tmp_path / "ct", 2)
    with connections(agent.port, 20, half_associate_rq()) as stalled:  # max_associations: 16
        storescu(agent.port, files, timeout=CLOSE_GUARD_S)
        assert echo(agent.port).returncode == 0
        assert stored(agent) == 2
        assert all(still_open(s) for s in stalled), "the check needs them still half-open"


def test_stalled_connections_are_closed_after_the_acse_timeout(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(dicom={"acse_timeout_s": 2}).start(probe_port=False)
    with (
        connections(agent.port, 20, half_associate_rq()) as half_open,
        connections(agent.port, 5) as bare,
    ):
        assert all(closed_by_peer(s) for s in half_open + bare), "a stalled socket was kept"
    assert "no A-ASSOCIATE-RQ within" in agent.log()
    storescu(agent.port, write_ct_series(tmp_path / "after", 2), timeout=CLOSE_GUARD_S)
    assert stored(agent) == 2


def test_bare_connections_hold_no_association_slot(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(dicom={"max_associations": 2, "acse_timeout_s": LONG_ACSE_S}).start(
        probe_port=False
    )
    with connections(agent.port, 2) as bare:
        held = [associate(agent.port), associate(agent.port)]
        try:
            assert all(a.is_established for a in held), "bare connections took the slots"
            assert all(a.send_c_echo().Status == 0x0000 for a in held)
        finally:
            for a in held:
                a.release()
        assert all(still_open(s) for s in bare), "the check needs them still open"


def test_per_peer_cap(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    agent = agent_factory(dicom={"max_associations_per_peer": 1}).start(probe_port=False)
    first = associate(agent.port)
    try:
        assert first.is_established
        second = associate(agent.port)
        assert second.is_rejected, "a second association from the same host was accepted"
        assert first.send_c_echo().Status == 0x0000
    finally:
        first.release()
    assert "max_associations_per_peer" in agent.log()
    storescu(agent.port, write_ct_series(tmp_path / "after", 1), timeout=CLOSE_GUARD_S)
    assert stored(agent) == 1


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "certs")


def test_idle_socket_does_not_block_tls_associations(
    agent_factory: type[AgentProcess], tls: TlsFiles, tmp_path: Path
) -> None:
    agent = agent_factory(dicom={
        "acse_timeout_s": LONG_ACSE_S,
        "tls": {"cert_file": str(tls.server_cert), "key_file": str(tls.server_key),
                "ca_file": str(tls.ca), "require_client_cert": True},
    }).start(probe_port=False)  # fmt: skip
    files = write_ct_series(tmp_path / "ct", 2)
    client = ["+tls", str(tls.client_key), str(tls.client_cert), "+cf", str(tls.ca)]
    with connections(agent.port, 3) as idle:  # never send a ClientHello
        storescu(agent.port, files, extra=client, timeout=CLOSE_GUARD_S)
        assert stored(agent) == 2
        assert all(still_open(s) for s in idle), "the check needs them still idle"


def test_idle_tls_sockets_are_closed_after_the_acse_timeout(
    agent_factory: type[AgentProcess], tls: TlsFiles, tmp_path: Path
) -> None:
    agent = agent_factory(dicom={
        "acse_timeout_s": 2,
        "tls": {"cert_file": str(tls.server_cert), "key_file": str(tls.server_key),
                "ca_file": str(tls.ca), "require_client_cert": True},
    }).start(probe_port=False)  # fmt: skip
    with connections(agent.port, 3) as idle:
        assert all(closed_by_peer(s) for s in idle), "an idle TLS socket was kept open"
    # the handshake thread logs after the janitor has shut its socket: wait for the line
    agent.wait_for_log("TLS handshake with 127.0.0.1")
    client = ["+tls", str(tls.client_key), str(tls.client_cert), "+cf", str(tls.ca)]
    storescu(agent.port, write_ct_series(tmp_path / "after", 1), extra=client,
             timeout=CLOSE_GUARD_S)  # fmt: skip
    assert stored(agent) == 1


def until(predicate: Callable[[], bool]) -> bool:
    """Poll ``predicate`` until it holds or the hang guard expires; a guard, never a timing."""
    deadline = time.monotonic() + CLOSE_GUARD_S
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_pending_connections_are_bounded_in_total(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    """60 slowloris sockets (one host, so no per-peer cap helps) cost the agent at most
    ``max_pending_connections`` sockets (and threads); a scanner still gets through. The
    slack of 4 is for shut sockets whose threads have not closed them yet."""
    cap = 8
    agent = agent_factory(
        dicom={"acse_timeout_s": LONG_ACSE_S, "max_pending_connections": cap}
    ).start(probe_port=False)
    before = socket_fds(agent)
    files = write_ct_series(tmp_path / "ct", 2)
    with connections(agent.port, 60, half_associate_rq()) as flood:
        assert until(lambda: sum(still_open(s) for s in flood) <= cap), "the flood was kept"
        assert until(lambda: socket_fds(agent) <= before + cap + 4), socket_fds(agent)
        storescu(agent.port, files, timeout=CLOSE_GUARD_S)
        assert stored(agent) == 2
        assert echo(agent.port).returncode == 0
    assert "dicom.max_pending_connections" in agent.log()
