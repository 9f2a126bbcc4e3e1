"""Senders: one per destination kind, each turning a batch into outcomes.

A sender is called from a worker thread and may block. It stops at the first item that
must wait (RetryLater) and reports what it finished before it, so order is kept: nothing
after a failed item overtakes it.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.config import SaltError
from agent.forward.deidentify import Deidentifier, DeidentifyError
from agent.forward.outcome import Kind, Outcome, RetryLater
from agent.journal.delivery_queue import DeliveryItem
from agent.receive.spool import fsync_path, safe_component

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    done: list[tuple[DeliveryItem, Outcome]] = field(default_factory=list)
    retry: RetryLater | None = None
    retry_item: DeliveryItem | None = None


Done = Callable[[list[tuple[DeliveryItem, Outcome]]], None]


def ignore(results: list[tuple[DeliveryItem, Outcome]]) -> None:
    return None


class Sender(Protocol):
    def send(self, batch: list[DeliveryItem], on_done: Done = ignore) -> BatchResult:
        """Send in order; ``on_done`` gets each outcome as soon as it is known (the journal
        records it there, before the next item goes: after a kill -9 only what was in flight
        goes again)."""
        ...

    def close(self) -> None: ...


def run_batch(batch: list[DeliveryItem], send_one: SendOne, on_done: Done = ignore) -> BatchResult:
    result = BatchResult()
    for item in batch:
        try:
            outcome = send_one(item)
            on_done([(item, outcome)])
            result.done.append((item, outcome))
        except RetryLater as exc:
            result.retry, result.retry_item = exc, item
            break
    return result


class SendOne(Protocol):
    def __call__(self, item: DeliveryItem) -> Outcome: ...


def missing_file(item: DeliveryItem) -> Outcome | None:
    if not os.path.exists(item.path):
        return Outcome(Kind.QUARANTINED, None, f"spool file is missing: {item.path}")
    return None


class FolderSender:
    """Copies each file, byte for byte, into ``<folder>/<study>/<series>/<sop>.dcm``; with
    ``deid``, its de-identified copy under the hashed UIDs."""

    def __init__(self, folder: Path, deid: Deidentifier | None = None) -> None:
        self.folder = folder
        self.deid = deid

    def send(self, batch: list[DeliveryItem], on_done: Done = ignore) -> BatchResult:
        return run_batch(batch, self._copy, on_done)

    def _copy(self, item: DeliveryItem) -> Outcome:
        if gone := missing_file(item):
            return gone
        try:
            target_dir, target = self._target(item)
        except SaltError as exc:  # no key, no copy: it waits like an unreachable PACS
            raise RetryLater(str(exc)) from exc
        temp = target_dir / f".{uuid.uuid4().hex}.part"
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            if self.deid is not None:
                self.deid.copy(Path(item.path), temp)
            else:
                shutil.copyfile(item.path, temp)
            fsync_path(temp)
            os.replace(temp, target)
            fsync_path(target_dir)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise RetryLater(f"cannot write {target}: {exc.strerror}") from exc
        except DeidentifyError as exc:
            temp.unlink(missing_ok=True)
            return Outcome(Kind.QUARANTINED, None, f"not de-identified: {exc}")
        return Outcome(Kind.DELIVERED, 0x0000)

    def _target(self, item: DeliveryItem) -> tuple[Path, Path]:
        """The folder and file name: the spool's, or the hashed UIDs when de-identifying."""
        if self.deid is not None:
            uid = self.deid.uid
            folder = self.folder / uid(item.study_uid) / uid(item.series_uid)
            return folder, folder / f"{uid(item.sop_instance_uid)}.dcm"
        source = Path(item.path)  # spool/<study>/<series>/<sop>.<sha>.<copy>.dcm
        folder = self.folder / source.parent.parent.name / source.parent.name
        return folder, folder / f"{safe_component(item.sop_instance_uid)}.dcm"

    def close(self) -> None:
        pass
