"""The series assembler: a stateful stage that decides when a series is complete.

A series is complete when the data says so, with the clock only as a fallback:

1. ``frames``: every instance is a multi-frame object, which carries its whole acquisition.
2. ``count``: ImagesInAcquisition instances of a single acquisition have arrived.
3. ``released``: every association that delivered to the series was released normally,
   no declared count is still short, instance numbers and slice positions have no gaps
   (with the temporal count per position when one is given), and ``series.grace_s``
   passed without another image.
4. ``mpps``: an MPPS COMPLETED listed the series' instances and all of them are in, without
   a grace period and while the association may still be open (see mpps_completion.py).
5. ``idle``: nothing arrived for ``series.idle_timeout_s[modality]``; the last resort.

A late image re-opens its series (journal: amendments + 1) and the series is emitted again,
marked amended; it never becomes a second series.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from agent.config import SeriesConfig
from agent.domain.instances import AssociationEnded, Instance, SeriesComplete, SeriesState
from agent.domain.procedures import ProcedureStep, StepStatus
from agent.journal import mpps_log
from agent.journal.database import Journal
from agent.journal.space import retrying
from agent.series.mpps_completion import Expectations, discontinued_message, missing_message

log = logging.getLogger(__name__)

Arrival = Instance | AssociationEnded | ProcedureStep
Alert = Callable[[str, str], Awaitable[None]]  # (code, message): a system alert


async def _log_only(code: str, message: str) -> None:
    log.warning("%s: %s", code, message)


@dataclass
class Assembly:
    """What the assembler knows about one series still being received."""

    series_uid: str
    study_uid: str
    modality: str
    instances: dict[str, Instance] = field(default_factory=dict)  # by SOP Instance UID
    open_associations: set[int] = field(default_factory=set)
    amended: bool = False
    last_image_at: float = 0.0  # wall clock, for the Verdict and latency
    idle_deadline: float = math.inf  # monotonic
    grace_deadline: float = math.inf  # monotonic
    # running summaries, so each arrival costs O(1) rather than a pass over the series
    all_multiframe: bool = True
    acquisitions: set[int | None] = field(default_factory=set)
    expected_counts: set[int] = field(default_factory=set)

    def add(self, inst: Instance, idle_s: float) -> None:
        self.instances[inst.sop_instance_uid] = inst
        self.all_multiframe &= inst.number_of_frames > 1
        self.acquisitions.add(inst.acquisition_number)
        if inst.images_in_acquisition is not None:
            self.expected_counts.add(inst.images_in_acquisition)
        if inst.association:
            self.open_associations.add(inst.association)
        self.last_image_at = max(self.last_image_at, inst.received_at)
        self.idle_deadline = time.monotonic() + idle_s
        self.grace_deadline = math.inf  # another image: the sender is not finished

    @property
    def deadline(self) -> float:
        return min(self.idle_deadline, self.grace_deadline)


def complete_by_data(assembly: Assembly) -> str | None:
    """``frames`` or ``count`` when the instances themselves say the series is whole."""
    if not assembly.instances:
        return None
    if assembly.all_multiframe:
        return "frames"
    if len(assembly.acquisitions) == 1 and len(assembly.expected_counts) == 1:
        (want,) = assembly.expected_counts
        if want > 0 and len(assembly.instances) >= want:
            return "count"
    return None


def short_of_count(assembly: Assembly) -> bool:
    """True when the data declares more images than have arrived."""
    return len(assembly.expected_counts) == 1 and len(assembly.instances) < max(
        assembly.expected_counts
    )


def has_gaps(instances: Iterable[Instance]) -> bool:
    """True when instance numbers or slice positions show something is still missing."""
    insts = list(instances)
    numbers = sorted({i.instance_number for i in insts if i.instance_number is not None})
    if numbers and numbers[-1] - numbers[0] + 1 != len(numbers):
        return True
    positions = [i.slice_position for i in insts]
    if None in positions or len(insts) < 3:
        return False
    return _position_gaps([p for p in positions if p is not None], insts)


def _position_gaps(positions: list[float], insts: list[Instance]) -> bool:
    per_position: dict[float, int] = {}
    for p in positions:
        key = round(p, 2)
        per_position[key] = per_position.get(key, 0) + 1
    temporal = {i.temporal_positions for i in insts} - {None}
    if len(temporal) == 1:
        (want,) = temporal
        if want and any(n < want for n in per_position.values()):
            return True
    steps = [b - a for a, b in zip(sorted(per_position), sorted(per_position)[1:], strict=False)]
    if len(steps) < 2:
        return False
    median = sorted(steps)[len(steps) // 2]
    return median > 0 and max(steps) > 1.5 * median


class Assembler:
    def __init__(self, cfg: SeriesConfig, journal: Journal, alert: Alert = _log_only) -> None:
        self.cfg = cfg
        self.journal = journal
        self.alert = alert
        self.open: dict[str, Assembly] = {}
        self.mpps = Expectations(cfg.grace_s)

    def idle_s(self, modality: str) -> float:
        return self.cfg.idle_timeout_s.get(modality, self.cfg.idle_timeout_s["default"])

    async def run(
        self, inbox: ObjectReceiveStream[Arrival], outbox: ObjectSendStream[SeriesComplete]
    ) -> None:
        """Consume arrivals until the inbox closes; emit complete series in order."""
        async with inbox, outbox:
            for done in await anyio.to_thread.run_sync(self.recover):
                await outbox.send(done)
            for assembly in list(self.open.values()):  # recovered, and already whole
                if reason := complete_by_data(assembly) or self._by_mpps(assembly):
                    await outbox.send(await self._complete(assembly, reason))
            while True:
                timeout = self._next_deadline() - time.monotonic()
                item: Arrival | None = None
                with anyio.move_on_after(max(0.0, timeout)):
                    try:
                        item = await inbox.receive()
                    except anyio.EndOfStream:
                        break
                for done in await self._handle(item):
                    await outbox.send(done)
        log.info("assembler stopped with %d series still being received", len(self.open))

    def _next_deadline(self) -> float:
        soonest = min((a.deadline for a in self.open.values()), default=time.monotonic() + 3600)
        return min(soonest, self.mpps.deadline)

    def _by_mpps(self, assembly: Assembly) -> str | None:
        return "mpps" if self.mpps.whole(assembly.series_uid, assembly.instances) else None

    async def _handle(self, item: Arrival | None) -> list[SeriesComplete]:
        due: list[tuple[Assembly, str]] = []
        if isinstance(item, Instance):
            assembly = await self._on_instance(item)
            by_data = complete_by_data(assembly) or self._by_mpps(assembly)
            if by_data:
                due.append((assembly, by_data))
        elif isinstance(item, AssociationEnded):
            self._on_association_end(item)
        elif isinstance(item, ProcedureStep):
            due += await self._on_step(item)
        await self._alert_missing()
        due += [(a, r) for a, r in self._timed_out() if all(a is not d for d, _ in due)]
        return [await self._complete(a, reason) for a, reason in due]

    async def _on_instance(self, inst: Instance) -> Assembly:
        assembly = self.open.get(inst.series_uid)
        if assembly is None:
            assembly = await retrying(self._open_series, inst)
        assembly.add(inst, self.idle_s(assembly.modality))
        return assembly

    def _open_series(self, inst: Instance) -> Assembly:
        state = self.journal.series_state(inst.series_uid)
        assembly = Assembly(inst.series_uid, inst.study_uid, inst.modality)
        if state not in (None, SeriesState.RECEIVING):
            log.info("late image for series %s (%s): amending it", inst.series_uid, state)
            self.journal.reopen_series(inst.series_uid)
            assembly.amended = True
            idle = self.idle_s(inst.modality)
            for earlier in self.journal.instances_of(inst.series_uid):
                assembly.add(earlier, idle)
            assembly.open_associations.clear()  # those associations ended long ago
        self.open[inst.series_uid] = assembly
        return assembly

    def _on_association_end(self, ended: AssociationEnded) -> None:
        for assembly in self.open.values():
            if ended.association not in assembly.open_associations:
                continue
            assembly.open_associations.discard(ended.association)
            whole = ended.released and not assembly.open_associations
            if self.mpps.expects_more(assembly.series_uid, assembly.instances):
                continue  # an MPPS COMPLETED lists instances still to come
            if whole and not short_of_count(assembly) and not has_gaps(assembly.instances.values()):
                assembly.grace_deadline = time.monotonic() + self.cfg.grace_s

    def _timed_out(self) -> list[tuple[Assembly, str]]:
        now = time.monotonic()
        due: list[tuple[Assembly, str]] = []
        for assembly in list(self.open.values()):
            if assembly.grace_deadline <= now:
                due.append((assembly, "released"))
            elif assembly.idle_deadline <= now:
                if has_gaps(assembly.instances.values()):
                    log.warning(
                        "series %s completed by idle timeout with gaps", assembly.series_uid
                    )
                due.append((assembly, "idle"))
        return due

    async def _on_step(self, step: ProcedureStep) -> list[tuple[Assembly, str]]:
        """COMPLETED: the series it lists whose instances are all in complete now;
        DISCONTINUED: a system alert (the series complete by the other rules)."""
        if step.status == StepStatus.DISCONTINUED:
            await self.alert("mpps.discontinued", discontinued_message(step))
        due = []
        for uid in self.mpps.add(step):
            assembly = self.open.get(uid)
            if assembly is not None:
                if self.mpps.whole(uid, assembly.instances):
                    due.append((assembly, "mpps"))
                continue
            state = await anyio.to_thread.run_sync(self.journal.series_state, uid)
            if state not in (None, SeriesState.RECEIVING):  # completed already: check it is whole
                have = await anyio.to_thread.run_sync(self.journal.instances_of, uid)
                if self.mpps.whole(uid, (i.sop_instance_uid for i in have)):
                    self.mpps.discard(uid)
        return due

    async def _alert_missing(self) -> None:
        for uid, exp in self.mpps.overdue():
            assembly = self.open.get(uid)
            if assembly is not None:
                have: list[str] = list(assembly.instances)
            else:
                insts = await anyio.to_thread.run_sync(self.journal.instances_of, uid)
                have = [i.sop_instance_uid for i in insts]
            if missing := exp.missing(have):
                await self.alert("mpps.missing", missing_message(uid, exp, missing))
            else:
                self.mpps.discard(uid)

    async def _complete(self, assembly: Assembly, reason: str) -> SeriesComplete:
        del self.open[assembly.series_uid]
        if reason == "mpps" or not self.mpps.expects_more(assembly.series_uid, assembly.instances):
            self.mpps.discard(assembly.series_uid)  # missing ones stay awaited for the alert
        completed_at = time.time()
        await retrying(self.journal.mark_complete, assembly.series_uid, reason, completed_at)
        done = SeriesComplete(
            series_uid=assembly.series_uid,
            study_uid=assembly.study_uid,
            modality=assembly.modality,
            instances=len(assembly.instances),
            reason=reason,
            amended=assembly.amended,
            last_image_at=assembly.last_image_at,
            completed_at=completed_at,
        )
        log.info(
            "series %s complete (%s%s): %d instances, %.0f ms after its last image",
            done.series_uid, reason, ", amended" if done.amended else "", done.instances,
            (completed_at - done.last_image_at) * 1000,
        )  # fmt: skip
        return done

    def recover(self) -> list[SeriesComplete]:
        """Rebuild state after a restart; returns series completed but not yet passed on."""
        for uid in self.journal.series_in_state(SeriesState.RECEIVING):
            insts = self.journal.instances_of(uid)
            if not insts:
                continue
            first = insts[0]
            assembly = Assembly(uid, first.study_uid, first.modality)
            row = self.journal.series_row(uid)
            assembly.amended = bool(row and row["amendments"])
            for inst in insts:
                assembly.add(inst, self.idle_s(first.modality))
            assembly.open_associations.clear()  # associations do not survive a restart
            self.open[uid] = assembly
        with self.journal.reading() as db:  # COMPLETED steps still awaiting their instances
            for step in mpps_log.completed_steps(db, list(self.open)):
                self.mpps.add(step)
        pending = [
            self._recovered(uid) for uid in self.journal.series_in_state(SeriesState.COMPLETE)
        ]
        if self.open or pending:
            log.info(
                "recovered %d series being received and %d complete series to pass on",
                len(self.open), len(pending),
            )  # fmt: skip
        return [p for p in pending if p is not None]

    def _recovered(self, uid: str) -> SeriesComplete | None:
        row = self.journal.series_row(uid)
        if row is None:
            return None
        return SeriesComplete(
            series_uid=uid,
            study_uid=row["study_uid"],
            modality=row["modality"],
            instances=len(self.journal.instances_of(uid)),
            reason=row["completion_reason"] or "recovered",
            amended=bool(row["amendments"]),
            last_image_at=row["last_received_at"],
            completed_at=row["completed_at"] or time.time(),
        )
