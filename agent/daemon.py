"""The daemon: one task group holding the receiver and the pipeline stages.

    receiver threads --arrivals--> assembler --complete--> recon --> release gate --journal queue-->
    one forwarder per destination; beside them the hold timer and retention

SIGTERM (or SIGINT) stops the listener, lets running associations finish, closes the
arrivals channel and so drains every stage in order, then returns (exit status 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydicom import dcmread
from pydicom.dataset import Dataset

from agent.alerts.notifier import Notifier
from agent.config import AgentConfig, ForwardConfig, TriageConfig
from agent.domain.instances import Instance, SeriesComplete
from agent.domain.verdicts import Alert, Verdict, system_alert
from agent.errors import StartupError
from agent.forward.mpps_forward import MppsForwarder
from agent.forward.pool import WorkerPool
from agent.journal.database import Journal, connect
from agent.journal.retention import purge_periodically
from agent.journal.series_actions import SeriesActions
from agent.journal.space import surviving, watch_space
from agent.journal.state_lock import StateLock
from agent.monitor.drift import DriftWatch
from agent.monitor.drift import Row as DriftRow
from agent.monitor.drift import table as drift_table
from agent.monitor.metrics import Live, start_metrics
from agent.monitor.preflight import startup_problems
from agent.qc.image_qc import MetricsStore, measure_dataset
from agent.qc.protocols import Protocols, load_protocols
from agent.receive.local_ingest import store_dataset
from agent.receive.orphans import set_aside_orphans
from agent.receive.receiver import Receiver
from agent.receive.spool import Spool
from agent.receive.workers import ReceiverPool
from agent.recon.ct_stage import ProjectionRecon
from agent.recon.mrd_server import MrdServer
from agent.reload import Target, reload
from agent.series.assembler import Arrival, Assembler
from agent.stages import run_stage
from agent.systemd_notify import notify, watchdog_interval_s
from agent.triage.engine import TriageEngine
from agent.triage.stage import TriageTracker
from agent.verdict.gate import ReleaseGate
from agent.verdict.in_flight import InFlight
from agent.verdict.judge import Judge
from agent.verdict.worklist import WorklistCheck
from agent.warmup import warm_up_kernels
from agent.web.server import start_web

log = logging.getLogger(__name__)

# Arrivals are small records of what is already durable in the journal; a generous buffer
# lets the scanner run ahead of a slow pipeline, and past it the receiver waits.
ARRIVALS_BUFFER = 10_000
COMPLETE_BUFFER = 256
MEASURE_BUFFER = 2_000  # past this, per-image QC catches up at completion instead


async def serve(
    cfg: AgentConfig, *, on_ready: Callable[[Receiver], None] | None = None,
    reload_config: Callable[[], AgentConfig] | None = None,
) -> None:  # fmt: skip
    """Run the agent until SIGTERM; SIGHUP applies ``reload_config()`` (see agent/reload.py)."""
    # The lock comes first: recovery below deletes incoming/, which may be another agent's.
    lock = StateLock.acquire(cfg.storage_path)
    try:
        if problems := startup_problems(cfg):  # before minutes of warm-up, not after
            raise StartupError(problems)
        spool = Spool(
            cfg.storage_path,
            min_free_bytes=int(cfg.storage.min_free_bytes),
            max_spool_bytes=int(cfg.storage.max_spool_bytes) if cfg.storage.max_spool_bytes else None,
        )
        spool.clean_incoming()
        journal = Journal.open(spool.journal_path)
        try:
            set_aside_orphans(spool, journal)  # before the port opens: no commit is in flight
            await _run_pipeline(cfg, spool, journal, on_ready, reload_config)
        finally:
            journal.close()
    finally:
        lock.release()
    log.info("scanner-agent stopped")


async def _run_pipeline(
    cfg: AgentConfig,
    spool: Spool,
    journal: Journal,
    on_ready: Callable[[Receiver], None] | None,
    reload_config: Callable[[], AgentConfig] | None = None,
) -> None:
    arrivals_tx, arrivals_rx = anyio.create_memory_object_stream[Arrival](ARRIVALS_BUFFER)
    measure_tx, measure_rx = anyio.create_memory_object_stream[Instance](MEASURE_BUFFER)
    complete_tx, complete_rx = anyio.create_memory_object_stream[SeriesComplete](COMPLETE_BUFFER)
    gate_tx, gate_rx = anyio.create_memory_object_stream[SeriesComplete](COMPLETE_BUFFER)
    parts = _Parts(cfg, spool, journal)
    offer = _measuring(measure_tx, parts.in_flight)
    kind = ReceiverPool if cfg.dicom.receive_processes > 1 else Receiver  # several processes
    receiver = kind(cfg.dicom, journal, spool, _thread_sink(arrivals_tx, offer),
                        [p.label for p in cfg.mpps.forward_to])  # fmt: skip
    async with anyio.create_task_group() as services:
        parts.start_services(services, measure_rx)
        async with anyio.create_task_group() as pipeline:
            assembler = Assembler(cfg.series, journal, parts.alert)
            pipeline.start_soon(assembler.run, arrivals_rx, complete_tx, name="assembler")
            feed = _feeder(arrivals_tx, offer)
            recon = ProjectionRecon(journal, spool, cfg.compute.device, feed, parts.alert)
            mrd = await _start_mrd(cfg, spool, journal, feed, services, parts.alert)
            pipeline.start_soon(run_stage, "recon", recon, complete_rx, gate_tx, name="recon")
            pipeline.start_soon(run_stage, "release", parts.gate, gate_rx, None, name="release")
            await warm_up_kernels(cfg.compute.device, cfg.qc.enabled)
            metrics = start_metrics(cfg, Live(  # before the listener: whoever sees it can scrape
                lambda: cfg.mqtt is not None and parts.notifier.link_state == "online",
                lambda: len(receiver.ae.active_associations), receiver.refusal_counts,
                lambda: parts.pool.names,
            ))  # fmt: skip
            web = start_web(cfg, parts.notifier)  # bound before the listener, like metrics
            if web is not None:
                services.start_soon(web.run, name="web")
            # SIGHUP's handler is in place before the port opens: whoever sees the listener may
            # reload at once, and SIGHUP's default action would end the process
            with _hangups(reload_config is not None) as hangups:
                receiver.start()
                parts.notifier.listening()
                notify("READY=1")
                notify(f"STATUS=receiving on {cfg.dicom.bind}:{receiver.port}")
                if on_ready:
                    on_ready(receiver)
                async with anyio.create_task_group() as background:
                    background.start_soon(_watchdog, name="watchdog")
                    if hangups is not None and reload_config is not None:
                        background.start_soon(_reload_on_hangup, hangups,
                                              parts.reload_target(receiver), reload_config,
                                              name="reload")  # fmt: skip
                    await _wait_for_signal()
                    background.cancel_scope.cancel()
            if mrd is not None:
                mrd.stop()
            services.start_soon(_abandon_if_full, journal, pipeline.cancel_scope, name="stop")
            await _drain(receiver, arrivals_tx)
            if metrics is not None:
                metrics.close()
            measure_tx.close()
        services.cancel_scope.cancel()  # the pipeline is drained; deliveries resume next start
    parts.notifier.close()


async def _start_mrd(
    cfg: AgentConfig, spool: Spool, journal: Journal, feed: Callable[[Instance], Awaitable[None]],
    tg: TaskGroup, alert: Callable[[str, str], Awaitable[None]] | None = None,
) -> MrdServer | None:  # fmt: skip
    """The MRD raw-data listener: reconstructed images enter the spool like received ones."""
    if cfg.mrd is None:
        return None

    async def on_image(ds: Dataset) -> None:
        inst = await anyio.to_thread.run_sync(store_dataset, ds, spool, journal)
        if inst is not None:
            await feed(inst)

    server = MrdServer(
        cfg.mrd, on_image, send_back=True, device=cfg.compute.device, workers=cfg.compute.workers,
        journal=journal, alert=alert,
    )  # fmt: skip
    space = journal.space
    server.accepting = lambda: not space.paused  # a full disk refuses raw data too
    tg.start_soon(server.serve, name="mrd")  # it warms the MRI kernels before listening
    return server


class _Parts:
    """The long-lived pieces beside the pipeline: QC, forwarders, notifier, timers."""

    def __init__(self, cfg: AgentConfig, spool: Spool, journal: Journal) -> None:
        self.cfg = cfg
        self.journal = journal
        self.store = MetricsStore(journal)
        protocols = load_protocols(cfg.qc.protocols) if cfg.qc.enabled else None
        self.triage: TriageTracker | None = None
        if cfg.triage.enabled:
            engine = TriageEngine.start(cfg.triage, cfg.storage_path / "cache" / "onnx")
            self.triage = TriageTracker(engine, journal)
        self.in_flight = InFlight()
        self.judge = Judge(journal, spool, self.store, protocols, self.triage, self.in_flight)
        self.pool = WorkerPool(cfg, journal, self.alert)
        if not self.pool.names:
            log.warning("no forward.destinations configured: received images stay in the spool")
        worklist = WorklistCheck(cfg.worklist, cfg.dicom.ae_title) if cfg.worklist else None
        self.gate = ReleaseGate(
            journal, cfg.forward, self.nudge_all, judge=self.judge, publish=self.publish,
            worklist=worklist,
        )  # fmt: skip
        actions = SeriesActions(
            connect(spool.journal_path), [d.name for d in cfg.forward.destinations],
            on_release=lambda uid: self.gate.release(uid, "technologist", False),
            on_repeat=self.gate.reject,  # the IOCM rejection KOS of the repeated series
        )  # fmt: skip
        self.notifier = Notifier.open(cfg, control=actions)
        self.drift = DriftWatch(self.alert)
        self.notifier.hold_online()  # "online" once the listener is open, not before

    def start_services(
        self, tg: TaskGroup, measure_rx: MemoryObjectReceiveStream[Instance]
    ) -> None:
        # each of these stops on a full journal and starts again when space returns
        tg.start_soon(surviving, "notifier", self.notifier.run, name="notifier")
        tg.start_soon(surviving, "commands", self._announce_commands, name="commands")
        self.pool.start(tg)  # its workers survive a full journal the same way
        tg.start_soon(surviving, "hold-timer", self.gate.expire_holds, name="hold-timer")
        if self.cfg.mpps.forward_to:
            mpps = MppsForwarder(self.cfg.mpps, self.cfg.dicom.ae_title, self.journal, self.alert)
            tg.start_soon(surviving, "mpps-forward", mpps.run, name="mpps-forward")
        purge = partial(
            purge_periodically, self.journal, self.cfg.storage.retention_hours * 3600,
            self.cfg.storage.purge_interval_s,
        )  # fmt: skip
        tg.start_soon(surviving, "retention", purge, name="retention")
        tg.start_soon(watch_space, self.journal, self.alert, int(self.cfg.storage.min_free_bytes),
                      name="space")  # fmt: skip
        if self.cfg.qc.enabled or self.triage is not None:
            for n in range(self.cfg.compute.workers):
                tg.start_soon(self._measure, measure_rx.clone(), name=f"qc-measure-{n}")
        measure_rx.close()

    def reload_target(self, receiver: Receiver) -> Target:
        def set_forward(forward: ForwardConfig) -> None:
            self.gate.cfg = forward
            self.pool.set_forward(forward)

        def set_protocols(protocols: Protocols | None) -> None:
            self.judge.protocols = protocols

        def set_calling_aets(aets: list[str]) -> None:
            receiver.ae.require_calling_aet = aets  # checked per new association

        def set_model_modes(triage: TriageConfig) -> list[str]:
            return self.triage.engine.set_modes(triage) if self.triage is not None else []

        return Target(self.cfg, set_forward, set_protocols, set_calling_aets, self.alert,
                      self.pool.apply, set_model_modes)  # fmt: skip

    def nudge_all(self) -> None:
        self.pool.nudge_all()

    async def alert(self, code: str, message: str) -> None:
        log.warning("system alert %s: %s", code, message)
        await self.notifier.system(system_alert(code, message))

    async def publish(self, verdict: Verdict, alerts: list[Alert]) -> None:
        await self.notifier.series_verdict(verdict, alerts[0] if alerts else None)
        for extra in alerts[1:]:  # a triage alert beside a QC one
            await self.notifier.system(extra)
        await self.drift.check(await anyio.to_thread.run_sync(self._drift_table))

    def _drift_table(self) -> list[DriftRow]:
        with self.journal.reading() as db:
            return drift_table(db)

    async def _measure(self, inbox: MemoryObjectReceiveStream[Instance]) -> None:
        """Per-image QC and triage as each image arrives; at completion only aggregation is
        left. A failure here is logged: the verdict measures what is missing at completion."""
        async with inbox:
            async for inst in inbox:
                try:
                    await anyio.to_thread.run_sync(self._measure_one, inst)
                except Exception:
                    log.exception("per-image work failed on %s", inst.sop_instance_uid)
                finally:
                    self.in_flight.done(inst.series_uid)

    def _measure_one(self, inst: Instance) -> None:
        """Read the image once for both QC and triage."""
        try:
            ds = dcmread(inst.path)
        except Exception as exc:  # unreadable now: the verdict measures it again at completion
            log.warning("cannot read %s for QC and triage: %s", inst.path, exc)
            return
        if self.cfg.qc.enabled:
            iid = self.store.instance_id(inst.sop_instance_uid, inst.sha256)
            if iid is not None:
                self.store.put(iid, measure_dataset(ds))
        if self.triage is not None:
            self.triage.add(inst, ds)

    async def _announce_commands(self) -> None:
        """Commands are applied and audited by SeriesActions; the new state is published."""
        async for outcome in self.notifier.commands():
            log.info(
                "command %s on %s by %s: %s", outcome.command.action, outcome.command.series_uid,
                outcome.command.by, outcome.message,
            )  # fmt: skip
            if outcome.applied:
                await self.gate.announce(outcome.command.series_uid, outcome.to_state)


async def _drain(receiver: Receiver, arrivals_tx: MemoryObjectSendStream[Arrival]) -> None:
    notify("STOPPING=1")
    log.info("stopping: closing the listener and draining the pipeline")
    await anyio.to_thread.run_sync(receiver.stop)
    await arrivals_tx.aclose()


async def _abandon_if_full(journal: Journal, pipeline: anyio.CancelScope) -> None:
    """Stopping on a full disk: stages waiting for space would wait for ever, so the drain
    gives them up; their work is in the journal and resumes at the next start."""
    space = await anyio.to_thread.run_sync(lambda: journal.space)
    while not space.paused:
        await anyio.sleep(0.25)
    log.warning("stopping while the disk is full: waiting stages resume at the next start")
    pipeline.cancel()


def _measuring(
    measure_tx: MemoryObjectSendStream[Instance], in_flight: InFlight
) -> Callable[[Instance], None]:
    """Offer an image to per-image QC and triage (event-loop thread only) and count it in
    flight if taken; a full queue drops it, and completion measures it instead."""

    def offer(inst: Instance) -> None:
        with contextlib.suppress(
            anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
        ):
            measure_tx.send_nowait(inst)
            in_flight.started(inst.series_uid)

    return offer


def _feeder(
    tx: MemoryObjectSendStream[Arrival], offer: Callable[[Instance], None]
) -> Callable[[Instance], Awaitable[None]]:
    """Feeds images the agent made itself to per-image QC and triage, then to the assembler,
    as the receiver does for images that arrive over the network."""

    async def feed(inst: Instance) -> None:
        try:
            offer(inst)
            await tx.send(inst)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.debug("pipeline closed; %s left to recovery", inst.sop_instance_uid)

    return feed


def _thread_sink(
    tx: MemoryObjectSendStream[Arrival], offer: Callable[[Instance], None]
) -> Callable[[Arrival], None]:
    """A callable for pynetdicom's threads that hands items to the event loop.

    Hands off without waiting while the channel has room (a blocking round trip per image
    halves ingest speed); waits for room only when the pipeline is far behind. Per-image QC
    gets a copy of each instance when it has room; if it falls behind, the verdict measures
    what is missing at completion, so the scanner never waits for QC.
    """
    token = anyio.lowlevel.current_token()
    loop = asyncio.get_running_loop()
    room = tx.statistics().max_buffer_size

    def sink(item: Arrival) -> None:
        try:
            if isinstance(item, Instance):
                loop.call_soon_threadsafe(offer, item)
            if tx.statistics().current_buffer_used < room - 64:
                loop.call_soon_threadsafe(_send_nowait, tx, item)
            else:
                anyio.from_thread.run(tx.send, item, token=token)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, RuntimeError):
            # Shutting down: the item is in the journal and is recovered at the next start.
            log.debug("pipeline closed; %r left to recovery", item)

    return sink


def _send_nowait(tx: MemoryObjectSendStream[Arrival], item: Arrival) -> None:
    try:
        tx.send_nowait(item)
    except anyio.WouldBlock:  # raced past the room check: wait in a task instead
        asyncio.get_running_loop().create_task(tx.send(item))
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        log.debug("pipeline closed; %r left to recovery", item)


def _hangups(wanted: bool) -> contextlib.AbstractContextManager[AsyncIterator[int] | None]:
    """SIGHUP's receiver (its handler installed on entry), or None when nothing reloads."""
    return anyio.open_signal_receiver(signal.SIGHUP) if wanted else contextlib.nullcontext()


async def _reload_on_hangup(
    signals: AsyncIterator[int], target: Target, load: Callable[[], AgentConfig]
) -> None:
    async for _ in signals:
        log.info("received SIGHUP: reloading the config")
        await reload(target, load)


async def _wait_for_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            return


async def _watchdog() -> None:
    interval = watchdog_interval_s()
    if interval is None:
        return
    while True:  # a ping proves the event loop is alive and not blocked
        notify("WATCHDOG=1")
        await anyio.sleep(interval)
