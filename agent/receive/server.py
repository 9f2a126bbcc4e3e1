"""pynetdicom's listener, hardened against peers that connect and then stall.

pynetdicom (3.0) does the TLS handshake inside its accept loop with no timeout, so one
silent socket stalls every TLS client. Its DUL reads a PDU with blocking ``recv``, so a
half-sent A-ASSOCIATE-RQ pins the association thread until the peer closes, and its
association limit counts those threads, so a handful of such sockets lock everyone out.

Here the handshake runs in the connection's own thread; every accepted socket has a
timeout; a connection that has not delivered a whole A-ASSOCIATE-RQ within
``acse_timeout`` (handshake included) is shut down; and only associations that sent one
count toward ``maximum_associations``. Those pending connections are bounded in total
(``max_pending``): past it the oldest pending socket of the host holding the most is shut,
so thousands of slowloris sockets cost at most that many threads and descriptors, and a
modality, whose A-ASSOCIATE-RQ follows its connect at once, still gets through.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)


class GuardedAE(AE):
    max_pending = 64  # connections owing an A-ASSOCIATE-RQ, in total
    listener: socket.socket | None = None  # a socket already listening (a receive worker's)

    @property
    def active_associations(self) -> list[Association]:
        """Associations that asked for one (pynetdicom's limit counts these), and requestors.
        A connection still owing its A-ASSOCIATE-RQ is held to the ACSE deadline instead."""
        return [
            a for a in super().active_associations
            if not a.is_acceptor or a.requestor.primitive is not None
        ]  # fmt: skip

    def make_server(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["server_class"] = GuardedServer
        return super().make_server(*args, **kwargs)


class GuardedServer(ThreadedAssociationServer):
    daemon_threads = True  # a handshake thread never delays shutdown past its deadline

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # sockets still owing an A-ASSOCIATE-RQ: (deadline, peer); one janitor, not a
        # timer thread per connection (a scanner may open one association per image)
        self._pending: dict[socket.socket, tuple[float, Any]] = {}
        self._pending_lock = threading.Lock()
        self._evictions = 0
        self._closing = threading.Event()
        threading.Thread(target=self._janitor, name="ACSEDeadline", daemon=True).start()

    def server_bind(self) -> None:
        listener = getattr(self.ae, "listener", None)
        if listener is None:
            super().server_bind()
            return
        assert self.socket is not None
        self.socket.close()  # the one socketserver made: this process accepts on the daemon's
        self.socket = listener
        self.server_address = listener.getsockname()

    def server_activate(self) -> None:
        if getattr(self.ae, "listener", None) is None:  # the daemon's socket listens already
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        sock, address = self.socket.accept()
        # Every read and write gives up after the network timeout: a peer that stops
        # mid-PDU breaks its own association, not the thread serving it.
        sock.settimeout(self.ae.network_timeout)
        if self.ssl_context:
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        with self._pending_lock:
            evicted = self._evict() if len(self._pending) >= self._cap else None
            self._pending[sock] = (time.monotonic() + self._deadline_s, address)
        if evicted is not None:
            self._evictions += 1
            if self._evictions % 100 == 1:  # a flood is one log line per hundred, not each
                log.warning(
                    "%d connections owe an A-ASSOCIATE-RQ (dicom.max_pending_connections): "
                    "closed the oldest, from %s:%s (%d closed so far)",
                    self._cap, *evicted[1][:2], self._evictions,
                )  # fmt: skip
            with contextlib.suppress(OSError):
                socket.socket.shutdown(evicted[0], socket.SHUT_RDWR)
        return sock, address

    def _evict(self) -> tuple[socket.socket, Any]:
        """Under the pending lock: drop the oldest pending socket of the busiest host."""
        per_host = Counter(peer[0] for _, peer in self._pending.values())
        busiest = per_host.most_common(1)[0][0]
        sock = min(
            (s for s, (_, peer) in self._pending.items() if peer[0] == busiest),
            key=lambda s: self._pending[s][0],
        )
        return sock, self._pending.pop(sock)[1]

    @property
    def _cap(self) -> int:
        return int(getattr(self.ae, "max_pending", GuardedAE.max_pending))

    @property
    def _deadline_s(self) -> float:
        return float(self.ae.acse_timeout or 30.0)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Runs in a thread of its own per connection: the accept loop never waits here."""
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (OSError, ValueError) as exc:  # ssl.SSLError and TimeoutError are OSErrors
                log.warning("TLS handshake with %s:%s failed: %s", *client_address[:2], _safe(exc))
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()

    def _janitor(self) -> None:
        while not self._closing.wait(min(1.0, self._deadline_s / 4)):
            requested = {
                _socket_of(t) for t in threading.enumerate()
                if isinstance(t, Association) and t.requestor.primitive is not None
            }  # fmt: skip
            now = time.monotonic()
            with self._pending_lock:
                # a closed socket's fd is -1, so a reused descriptor is never shut by mistake
                done = [s for s in self._pending if s.fileno() == -1 or s in requested]
                late = [s for s, (due, _) in self._pending.items() if due <= now and s not in done]
                peers = {s: self._pending[s][1] for s in late}
                for sock in done + late:
                    del self._pending[sock]
            for sock in late:
                _expire(sock, peers[sock], self._deadline_s)


def _expire(sock: socket.socket, address: Any, deadline: float) -> None:
    log.warning(
        "closing connection from %s:%s: no A-ASSOCIATE-RQ within %.0f s",
        *address[:2], deadline,
    )  # fmt: skip
    # socket.socket's own shutdown: SSLSocket's would drop its SSL state under a
    # handshake still running in another thread. The blocked recv then returns.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _socket_of(assoc: Association) -> Any:
    return getattr(getattr(assoc.dul, "socket", None), "socket", None)


def _safe(exc: BaseException) -> str:
    return repr(str(exc))[1:-1][:200]
