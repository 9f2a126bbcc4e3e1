"""POST each verdict's transaction Bundle to a FHIR server, with the image queue's semantics.

HTTP 2xx is delivered; 5xx, 408, 429 and connection errors wait and retry; any other 4xx
(the server refused the content: 400, 404, 409, 412, 422 ...) quarantines, with the first
OperationOutcome issue as the reason.
"""

from __future__ import annotations

import os

import requests

from agent.config import FhirDestination
from agent.forward.fhir_message import FhirError, transaction
from agent.forward.outcome import Kind, Outcome, RetryLater
from agent.forward.senders import BatchResult, Done, ignore, run_batch
from agent.journal.delivery_queue import DeliveryItem
from agent.journal.message_queue import MessageItem

_RETRY_HTTP = {408, 429}
FHIR_JSON = "application/fhir+json"


class FhirSender:
    def __init__(self, dest: FhirDestination) -> None:
        self.dest = dest
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
        if dest.username:
            self.session.auth = (dest.username, os.environ.get(dest.password_env or "", ""))
        if dest.token_env:
            self.session.headers["Authorization"] = f"Bearer {os.environ.get(dest.token_env, '')}"

    def send(self, batch: list[DeliveryItem], on_done: Done = ignore) -> BatchResult:
        return run_batch(batch, self._post, on_done)

    def close(self) -> None:
        self.session.close()

    def _post(self, item: DeliveryItem) -> Outcome:
        if not isinstance(item, MessageItem):
            return Outcome(Kind.QUARANTINED, None, "a FHIR destination takes verdicts, not images")
        try:
            bundle = transaction(item.content)
        except FhirError as exc:
            return Outcome(Kind.QUARANTINED, None, str(exc))
        try:
            rsp = self.session.post(self.dest.url, json=bundle, timeout=self.dest.timeout_s)
        except requests.RequestException as exc:
            raise RetryLater(f"{self.dest.name} is unreachable: {exc}") from exc
        if rsp.ok:
            return Outcome(Kind.DELIVERED, None)
        if rsp.status_code >= 500 or rsp.status_code in _RETRY_HTTP:
            raise RetryLater(f"{self.dest.name} answered HTTP {rsp.status_code}")
        return Outcome(Kind.QUARANTINED, None, f"HTTP {rsp.status_code}: {_issue(rsp)}")


def _issue(rsp: requests.Response) -> str:
    """The first OperationOutcome issue's text, else the reason phrase; printable, capped."""
    try:
        issue = rsp.json().get("issue", [{}])[0]
        text = str(issue.get("diagnostics") or issue.get("details", {}).get("text") or rsp.reason)
    except (ValueError, AttributeError, IndexError, TypeError):
        text = str(rsp.reason)
    return "".join(ch for ch in text if ch.isprintable())[:200]
