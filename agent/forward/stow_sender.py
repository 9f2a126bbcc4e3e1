"""STOW-RS destinations through dicomweb-client, with the same queue semantics as DIMSE.

HTTP 5xx, 408, 429 and connection errors wait and retry; other 4xx answers quarantine. A
batch the server refuses as a whole is retried one object at a time, so only the bad one
is quarantined.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import requests
from dicomweb_client import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset

from agent.config import SaltError, StowDestination
from agent.forward.deidentify import DeidentifyError, make_deidentifier
from agent.forward.outcome import Kind, Outcome, RetryLater, meaning
from agent.forward.senders import BatchResult, Done, ignore, missing_file
from agent.journal.delivery_queue import DeliveryItem

_RETRY_HTTP = {408, 429}


class StowSender:
    def __init__(self, dest: StowDestination, batch_limit: int = 16) -> None:
        self.dest = dest
        self.batch_limit = batch_limit
        self.deid = make_deidentifier(dest.deidentify)
        session = requests.Session()
        if dest.username:
            session.auth = (dest.username, os.environ.get(dest.password_env or "", ""))
        self.client = DICOMwebClient(url=dest.url, session=session, timeout=dest.timeout_s)

    def send(self, batch: list[DeliveryItem], on_done: Done = ignore) -> BatchResult:
        result = BatchResult()
        for start in range(0, len(batch), self.batch_limit):
            chunk = batch[start : start + self.batch_limit]
            try:
                stored = self._store(chunk)
                on_done(stored)  # one STOW request's outcomes, recorded before the next
                result.done += stored
            except RetryLater as exc:
                result.retry, result.retry_item = exc, chunk[0]
                break
        return result

    def close(self) -> None:
        pass

    def _store(self, chunk: list[DeliveryItem]) -> list[tuple[DeliveryItem, Outcome]]:
        done = [(item, gone) for item in chunk if (gone := missing_file(item))]
        present = [item for item in chunk if not missing_file(item)]
        datasets = {}
        for item in present:
            try:
                datasets[item.instance_id] = self._dataset(item)
            except DeidentifyError as exc:
                done.append((item, Outcome(Kind.QUARANTINED, None, f"not de-identified: {exc}")))
        present = [item for item in present if item.instance_id in datasets]
        if not present:
            return done
        try:
            response = self.client.store_instances([datasets[i.instance_id] for i in present])
        except requests.HTTPError as exc:
            return done + self._refused(present, exc)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RetryLater(f"{self.dest.name} is unreachable: {exc}") from exc
        return done + _per_instance(present, response, self._sent_uid)

    def _sent_uid(self, item: DeliveryItem) -> str:
        """The SOP Instance UID the server saw (hashed when de-identified)."""
        return self.deid.uid(item.sop_instance_uid) if self.deid else item.sop_instance_uid

    def _dataset(self, item: DeliveryItem) -> Dataset:
        ds = dcmread(item.path)
        if self.deid is not None:
            try:
                self.deid.apply(ds)
            except SaltError as exc:
                raise RetryLater(str(exc)) from exc
        return ds

    def _refused(
        self, items: list[DeliveryItem], exc: requests.HTTPError
    ) -> list[tuple[DeliveryItem, Outcome]]:
        code = exc.response.status_code if exc.response is not None else 0
        if code >= 500 or code in _RETRY_HTTP:
            raise RetryLater(f"{self.dest.name} answered HTTP {code}") from exc
        if len(items) > 1:
            return [pair for item in items for pair in self._store([item])]
        return [(items[0], Outcome(Kind.QUARANTINED, None, f"HTTP {code}: {exc}"))]


def _per_instance(
    items: list[DeliveryItem], response: Any, sent_uid: Callable[[DeliveryItem], str]
) -> list[tuple[DeliveryItem, Outcome]]:
    failed = {
        str(f.ReferencedSOPInstanceUID): int(f.get("FailureReason", 0xC000))
        for f in response.get("FailedSOPSequence", [])
    }
    out = []
    for item in items:
        reason = failed.get(sent_uid(item))
        if reason is None:
            out.append((item, Outcome(Kind.DELIVERED, 0x0000)))
        elif reason & 0xFF00 == 0xA700:
            raise RetryLater(f"0x{reason:04X}: out of resources", reason)
        else:
            out.append(
                (item, Outcome(Kind.QUARANTINED, reason, f"0x{reason:04X}: {meaning(reason)}"))
            )
    return out
