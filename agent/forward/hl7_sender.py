"""MLLP client for an HL7 destination: one ORU^R01 per verdict, each answered by an ACK.

    AA (or CA)                      delivered
    AE (or CE)                      quarantined: the receiver found an error in the message
    AR (or CR) with ERR-3 200-203   quarantined: it never takes this kind of message
    AR (or CR) otherwise            retried: rejected for reasons unrelated to the content
    no ACK, a wrong ACK, network    retried with backoff (raised as RetryLater)

One connection is kept open across messages and dropped after any failure. An ACK larger
than ``MAX_ACK`` or slower than ``timeout_s`` counts as no ACK.
"""

from __future__ import annotations

import socket

from agent.config import Hl7Destination
from agent.forward.hl7_message import UNSUPPORTED, Hl7Error, oru_r01, read_ack
from agent.forward.outcome import Kind, Outcome, RetryLater
from agent.forward.senders import BatchResult, Done, ignore, run_batch
from agent.journal.delivery_queue import DeliveryItem
from agent.journal.message_queue import MessageItem

START, END = b"\x0b", b"\x1c\x0d"  # MLLP block framing
MAX_ACK = 64 * 1024


class Hl7Sender:
    def __init__(self, dest: Hl7Destination) -> None:
        self.dest = dest
        self.sock: socket.socket | None = None

    def send(self, batch: list[DeliveryItem], on_done: Done = ignore) -> BatchResult:
        result = run_batch(batch, self._send_one, on_done)
        if result.retry is not None:
            self.close()
        return result

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _send_one(self, item: DeliveryItem) -> Outcome:
        if not isinstance(item, MessageItem):
            return Outcome(Kind.QUARANTINED, None, "an HL7 destination takes verdicts, not images")
        body = item.content
        try:
            text = oru_r01(self.dest, body)
        except Hl7Error as exc:
            return Outcome(Kind.QUARANTINED, None, str(exc))
        answer = self._exchange(text.encode("utf-8"))
        try:
            code, err, why = read_ack(answer.decode("utf-8", "replace"), str(body.get("id", "")))
        except Hl7Error as exc:
            raise RetryLater(f"{self.dest.name}: {exc}") from exc
        return _outcome(code, err, why)

    def _exchange(self, message: bytes) -> bytes:
        try:
            sock = self._connection()
            sock.sendall(START + message + END)
            return _read_frame(sock)
        except OSError as exc:
            raise RetryLater(
                f"{self.dest.name} at {self.dest.host}:{self.dest.port}: {exc}"
            ) from exc

    def _connection(self) -> socket.socket:
        if self.sock is None:
            sock = socket.create_connection((self.dest.host, self.dest.port), self.dest.timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.dest.timeout_s)
            self.sock = sock
        return self.sock


def _read_frame(sock: socket.socket) -> bytes:
    """One MLLP block; OSError when the peer closes, stalls or sends too much."""
    data = b""
    while END not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the receiver closed the connection without an ACK")
        data += chunk
        if len(data) > MAX_ACK:
            raise ConnectionError(f"the ACK exceeds {MAX_ACK} bytes")
    start = data.find(START)
    if start < 0:
        raise ConnectionError("the answer is not an MLLP block")
    return data[start + 1 : data.index(END, start)]


def _outcome(code: str, err: str, why: str) -> Outcome:
    said = f"ACK {code}" + (f": {why}" if why else "")
    if code in ("AA", "CA"):
        return Outcome(Kind.DELIVERED, None)
    if code in ("AE", "CE"):
        return Outcome(Kind.QUARANTINED, None, said)
    if code in ("AR", "CR"):
        if err in UNSUPPORTED:
            return Outcome(Kind.QUARANTINED, None, said)
        raise RetryLater(said)
    raise RetryLater(f"unknown acknowledgement code {code[:8]!r}")
