"""Passing MPPS on to the RIS or PACS (``mpps.forward_to``): durable, in order, retried.

The SCP commits each accepted N-CREATE and N-SET to the journal's ``mpps_outbox`` with one
row per peer before it answers the modality (agent/journal/mpps_log.py). One loop per peer
sends its rows in order: an N-SET never overtakes its N-CREATE. The peer's status decides:

- 0x0000 and warnings (0x0001, 0xBxxx): delivered. 0x0111 (duplicate SOP instance) on an
  N-CREATE is delivered too: the peer has it already (sent again after a crash).
- no association, a timeout, an abort: retried after ``retry_initial_s`` doubling up to
  ``retry_max_s``, without limit; the oldest message waiting longer than ``alert_after_s``
  raises one ``mpps.forward-stalled`` system alert until the peer answers again.
- any other failure: the message is marked ``failed`` with the status (a system alert
  ``mpps.forward-refused``) and the next one goes: a peer that refuses a message would
  refuse it again, and it must not stall the steps behind it.
After a restart the loops resume with what is still queued; only a message in flight when
the agent died can reach a peer twice.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from pynetdicom import AE
from pynetdicom.dsutils import decode
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from agent.config import MppsConfig, MppsPeer
from agent.journal import mpps_log
from agent.journal.database import Journal

log = logging.getLogger(__name__)

Alert = Callable[[str, str], Awaitable[None]]
IDLE_POLL_S = 1.0  # a queue found empty is looked at again after this


@dataclass(frozen=True)
class Sent:
    state: str  # delivered | failed | queued (retry)
    detail: str | None = None


class MppsForwarder:
    def __init__(self, cfg: MppsConfig, calling_aet: str, journal: Journal, alert: Alert) -> None:
        self.cfg = cfg
        self.calling_aet = calling_aet
        self.journal = journal
        self.alert = alert

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for peer in self.cfg.forward_to:
                tg.start_soon(self._drain, peer, name=f"mpps-forward:{peer.label}")

    async def _drain(self, peer: MppsPeer) -> None:
        wait = self.cfg.retry_initial_s
        stalled = False
        while True:
            item = await anyio.to_thread.run_sync(self._next, peer.label)
            if item is None:
                await anyio.sleep(IDLE_POLL_S)
                continue
            item_id, uid, operation, data, queued_at = item
            sent = await anyio.to_thread.run_sync(self.send, peer, uid, operation, data)
            await anyio.to_thread.run_sync(self._settle, item_id, sent)
            if sent.state != "queued":
                wait, stalled = self.cfg.retry_initial_s, False
                if sent.state == "failed":
                    await self.alert("mpps.forward-refused", f"MPPS {operation} of {uid} "
                                     f"refused by {peer.label}: {sent.detail}")  # fmt: skip
                continue
            log.warning("MPPS to %s: %s; retrying in %.0f s", peer.label, sent.detail, wait)
            if not stalled and time.time() - queued_at > self.cfg.alert_after_s:
                stalled = True
                await self.alert("mpps.forward-stalled", f"MPPS for {peer.label} waiting since "
                                 f"{time.time() - queued_at:.0f} s: {sent.detail}")  # fmt: skip
            await anyio.sleep(wait)
            wait = min(wait * 2, self.cfg.retry_max_s)

    def _next(self, peer: str) -> tuple[int, str, str, bytes, float] | None:
        with self.journal.reading() as db:
            return mpps_log.next_queued(db, peer)

    def _settle(self, item_id: int, sent: Sent) -> None:
        with self.journal.transaction() as db:
            mpps_log.settle(db, item_id, sent.state, sent.detail)

    def send(self, peer: MppsPeer, uid: str, operation: str, data: bytes) -> Sent:
        """One message over its own association (MPPS is a few messages per exam)."""
        ae = AE(ae_title=peer.calling_ae_title or self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout_s
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        if not assoc.is_established:
            return Sent("queued", f"no association with {peer.ae_title} at {peer.host}:{peer.port}")
        try:
            ds = decode(io.BytesIO(data), True, True)
            if operation == "create":
                status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
            else:
                status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
        finally:
            if assoc.is_established:
                assoc.release()
        if not status:  # no answer: timeout or abort
            return Sent("queued", "no N-" + operation.upper() + " response")
        code = int(status.Status)
        comment = str(status.get("ErrorComment", ""))[:64]
        if (
            code == 0
            or code == 0x0001
            or code >> 12 == 0xB
            or (operation == "create" and code == 0x0111)
        ):
            return Sent("delivered", f"0x{code:04X}" if code else None)
        return Sent("failed", f"0x{code:04X} {comment}".strip())
