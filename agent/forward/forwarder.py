"""The forwarder: one worker per destination, each draining its queue in order.

A failing destination never blocks another. A retryable failure holds the head of the
queue and backs off exponentially with jitter, capped; nothing behind it overtakes it.
Retries go on without limit; a system alert goes out once the oldest undelivered item is
older than ``forward.alert_after_s``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from agent.config import (
    AgentConfig,
    DimseDestination,
    FhirDestination,
    FolderDestination,
    Hl7Destination,
    RetryConfig,
)
from agent.forward.deidentify import make_deidentifier
from agent.forward.dimse_sender import DimseSender
from agent.forward.fhir_sender import FhirSender
from agent.forward.hl7_sender import Hl7Sender
from agent.forward.lanes import LanedSender
from agent.forward.outcome import Kind
from agent.forward.senders import FolderSender, Sender
from agent.forward.stow_sender import StowSender
from agent.journal.database import Journal
from agent.journal.delivery_queue import DeliveryQueue
from agent.journal.message_queue import MessageQueue

log = logging.getLogger(__name__)

T = TypeVar("T")
SystemAlert = Callable[[str, str], Awaitable[None]]  # (code, message)
IDLE_POLL_S = 1.0  # also how soon operator actions (retry, resend) are noticed
IDLE_RELEASE_S = 5.0  # an idle association is released, not left for the PACS to time out


def backoff_s(failures: int, cfg: RetryConfig, rng: random.Random) -> float:
    """``initial_s`` doubled per failure up to ``max_s``, times a jitter in ``1 ± jitter``."""
    doublings = min(max(0, failures - 1), 1000)  # 2**1024 overflows; max_s is reached long before
    base = min(cfg.max_s, cfg.initial_s * 2.0**doublings)
    return float(base * (1 + cfg.jitter * (2 * rng.random() - 1)))


def make_sender(cfg: AgentConfig, name: str) -> Sender:
    dest = next(d for d in cfg.forward.destinations if d.name == name)
    scratch = cfg.storage_path / "scratch" / name
    if isinstance(dest, DimseDestination):
        if dest.max_associations == 1:
            return DimseSender(dest, cfg.dicom.ae_title, scratch)
        return LanedSender(lambda: DimseSender(dest, cfg.dicom.ae_title, scratch),
                           dest.max_associations, name)  # fmt: skip
    if isinstance(dest, FolderDestination):
        folder = dest.path or cfg.storage_path / "outbox" / name
        return FolderSender(folder, make_deidentifier(dest.deidentify))
    if isinstance(dest, Hl7Destination):
        return Hl7Sender(dest)
    if isinstance(dest, FhirDestination):
        return FhirSender(dest)
    return StowSender(dest)


def queue_for(cfg: AgentConfig, name: str, journal: Journal) -> DeliveryQueue | MessageQueue:
    """HL7 and FHIR destinations drain the verdict messages; the others the images."""
    dest = next(d for d in cfg.forward.destinations if d.name == name)
    if isinstance(dest, (Hl7Destination, FhirDestination)):
        return MessageQueue(journal)
    return DeliveryQueue(journal)


class DestinationWorker:
    def __init__(
        self, name: str, sender: Sender, queue: DeliveryQueue | MessageQueue, cfg: AgentConfig,
        alert: SystemAlert,
    ) -> None:  # fmt: skip
        self.name = name
        self.sender = sender
        self.queue = queue
        self.cfg = cfg.forward
        self.alert = alert
        self.wake = anyio.Event()
        self.failures = 0
        self.idle_s = 0.0
        self.alerted = False
        self.limiter = anyio.CapacityLimiter(1)
        self.rng = random.Random()
        self._token: anyio.lowlevel.EventLoopToken | None = None

    def nudge(self) -> None:
        """Wake the worker now; safe from any thread."""
        if self._token is None:
            return
        try:
            anyio.from_thread.run_sync(self.wake.set, token=self._token)
        except RuntimeError:  # called on the event loop itself
            self.wake.set()

    async def run(self) -> None:
        self._token = anyio.lowlevel.current_token()
        try:
            while True:
                await self._step()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.sender.close, limiter=self.limiter)

    async def _step(self) -> None:
        batch = await self._thread(self.queue.next_batch, self.name, self.cfg.batch_size)
        await self._check_age()
        if not batch:
            with anyio.move_on_after(IDLE_POLL_S):
                await self.wake.wait()
            self.wake = anyio.Event()
            self.idle_s += IDLE_POLL_S
            if self.idle_s >= IDLE_RELEASE_S:
                await self._thread(self.sender.close)
                self.idle_s = -math.inf  # closed; nothing to do until work arrives
            return
        self.idle_s = 0.0
        # each outcome is committed as it comes: a confirmed instance is never sent again
        result = await self._thread(self.sender.send, batch, self.queue.record)
        for item, outcome in result.done:
            if outcome.kind == Kind.QUARANTINED:
                await self.alert(
                    "forward.quarantined",
                    f"destination {self.name}: {item.sop_instance_uid} of series "
                    f"{item.series_uid} quarantined: {outcome.message}",
                )
        if result.retry is None or result.retry_item is None:
            self.failures = 0
            return
        self.failures += 1
        await self._thread(
            self.queue.record_retry, result.retry_item, result.retry.reason, result.retry.status
        )
        delay = backoff_s(self.failures, self.cfg.retry, self.rng)
        log.warning(
            "destination %s: %s; retry %d in %.1f s",
            self.name,
            result.retry.reason,
            self.failures,
            delay,
        )
        await anyio.sleep(delay)

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def _check_age(self) -> None:
        age = await anyio.to_thread.run_sync(self.queue.oldest_undelivered_age, self.name)
        if age is not None and age > self.cfg.alert_after_s and not self.alerted:
            self.alerted = True
            await self.alert(
                "forward.backlog",
                f"destination {self.name}: oldest undelivered image is {age:.0f} s old",
            )
        elif age is None or age < self.cfg.alert_after_s / 2:
            self.alerted = False
