"""A real MLLP listener standing in for a RIS: it parses every message with hl7apy (strict
v2.5 validation) and answers an ACK, so tests see what a RIS interface engine would.

``answer`` picks the acknowledgement: ``AA`` (the default), ``AE``, or ``AR`` with an ERR-3
code. A message that does not parse or validate is answered AE and kept in ``invalid``.
The listener can be stopped and started again on the same port (a RIS outage).
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass, field
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

from tests.support.peers import free_port

START, END = b"\x0b", b"\x1c\x0d"


@dataclass
class Received:
    messages: list[Any] = field(default_factory=list)  # parsed hl7apy Messages
    raw: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


class MllpListener:
    def __init__(self, answer: str = "AA", error_code: str = "") -> None:
        self.port = free_port()
        self.answer = answer
        self.error_code = error_code
        self.received = Received()
        self.lock = threading.Lock()
        self.server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> MllpListener:
        listener = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                buffer = b""
                while chunk := self.request.recv(65536):
                    buffer += chunk
                    while END in buffer:
                        frame, buffer = buffer.split(END, 1)
                        self.request.sendall(START + listener.on_message(frame) + END)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def on_message(self, frame: bytes) -> bytes:
        text = frame.lstrip(START).decode("utf-8")
        try:
            msg = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
            valid = bool(msg.validate())
        except Exception as exc:  # anything hl7apy refuses is an invalid message
            with self.lock:
                self.received.invalid.append(f"{exc}: {text!r}")
            fields = text.split("\r", 1)[0].split("|")
            return ack(text, "AE", fields[9] if len(fields) > 9 else "", "207").encode()
        with self.lock:
            self.received.raw.append(text)
            (self.received.messages if valid else self.received.invalid).append(
                msg if valid else text
            )
        return ack(
            text, self.answer if valid else "AE", msg.msh.msh_10.value, self.error_code
        ).encode()

    def messages(self) -> list[Any]:
        with self.lock:
            return list(self.received.messages)


def ack(text: str, code: str, control_id: str, error_code: str) -> str:
    """An ACK built and validated with hl7apy."""
    msg = Message("ACK", version="2.5", validation_level=VALIDATION_LEVEL.STRICT)
    msg.msh.msh_3 = "TEST-RIS"
    msg.msh.msh_9 = "ACK^R01^ACK"
    msg.msh.msh_10 = "ACK" + control_id[:17]
    msg.msh.msh_11 = "P"
    msg.msh.msh_12 = "2.5"
    msg.msa.msa_1 = code
    msg.msa.msa_2 = control_id
    if error_code:
        err = msg.add_segment("ERR")
        err.err_3 = f"{error_code}^Rejected by the test RIS^HL70357"
        err.err_4 = "E"
    assert msg.validate()
    return str(msg.to_er7())
