"""A real HTTP server standing in for a FHIR R4 endpoint: every POSTed body is validated
with fhir.resources (a transaction Bundle); a valid one is answered 200 with a
transaction-response Bundle, an invalid one 400 with an OperationOutcome. ``refuse`` makes it
answer that HTTP status with an OperationOutcome (422: a permanent refusal)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from tests.support.peers import free_port

MAX_BODY = 4 << 20


class FhirServer:
    def __init__(self, refuse: int | None = None) -> None:
        self.port = free_port()
        self.refuse = refuse
        self.bundles: list[Bundle] = []
        self.invalid: list[str] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self) -> FhirServer:
        fhir = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(min(size, MAX_BODY))
                status, doc = fhir.on_post(self.path, self.headers.get("Content-Type", ""), body)
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def on_post(self, path: str, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            if path.rstrip("/") != "/fhir" or not content_type.startswith("application/fhir+json"):
                raise ValueError(f"POST {path} as {content_type}: not a FHIR transaction")
            bundle = Bundle.model_validate_json(body)
            if bundle.type != "transaction":
                raise ValueError(f"Bundle.type is {bundle.type}, not transaction")
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            with self.lock:
                self.invalid.append(str(exc))
            return 400, outcome(str(exc)[:500])
        if self.refuse is not None:
            return self.refuse, outcome("refused by the test server")
        with self.lock:
            self.bundles.append(bundle)
        entries = [{"response": {"status": "201 Created"}} for _ in bundle.entry or []]
        return 200, {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}

    def received(self) -> list[Bundle]:
        with self.lock:
            return list(self.bundles)


def outcome(text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": text}]}  # fmt: skip
