"""The destination workers as a set that a reload can change while the agent runs.

:meth:`WorkerPool.apply` compares the destinations of the running config with a new one:
a new destination gets a worker at once; a removed one's worker stops after the send in
progress, and what was queued for it stays in the journal, never deleted; a changed one
(another host, port, AE title, TLS or folder) is replaced, the new worker starting only once
the old one has finished its send, so no item is ever in flight to both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from agent.config import AgentConfig, ForwardConfig
from agent.forward.forwarder import DestinationWorker, SystemAlert, make_sender, queue_for
from agent.journal.database import Journal
from agent.journal.space import surviving

log = logging.getLogger(__name__)


@dataclass
class _Running:
    worker: DestinationWorker
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


@dataclass(frozen=True)
class Changes:
    added: list[str]
    removed: list[str]
    replaced: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.replaced)

    def describe(self) -> str:
        parts = [f"{what} {', '.join(names)}" for what, names in
                 (("added", self.added), ("removed", self.removed), ("changed", self.replaced))
                 if names]  # fmt: skip
        return "destinations " + "; ".join(parts)


class WorkerPool:
    def __init__(self, cfg: AgentConfig, journal: Journal, alert: SystemAlert) -> None:
        self.cfg = cfg
        self.journal = journal
        self.alert = alert
        self._tg: TaskGroup | None = None
        self._running: dict[str, _Running] = {}
        self._pending = [self._worker(d.name) for d in cfg.forward.destinations]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.cfg.forward.destinations]

    def _worker(self, name: str) -> DestinationWorker:
        queue = queue_for(self.cfg, name, self.journal)  # images, or verdict messages
        return DestinationWorker(name, make_sender(self.cfg, name), queue, self.cfg, self.alert)

    def start(self, tg: TaskGroup) -> None:
        self._tg = tg
        for worker in self._pending:
            self._spawn(worker, after=None)
        self._pending = []

    def _spawn(self, worker: DestinationWorker, after: anyio.Event | None) -> None:
        assert self._tg is not None
        running = _Running(worker)
        self._running[worker.name] = running
        self._tg.start_soon(self._run, running, after, name=f"forward:{worker.name}")

    @staticmethod
    async def _run(running: _Running, after: anyio.Event | None) -> None:
        try:
            if after is not None:
                await after.wait()  # the worker it replaces has finished its send
            with running.scope:  # a full journal stops the worker; it starts again after
                await surviving(f"forward:{running.worker.name}", running.worker.run)
        finally:
            running.done.set()

    def nudge_all(self) -> None:
        for running in list(self._running.values()):
            running.worker.nudge()

    def set_forward(self, forward: ForwardConfig) -> None:
        """Routes, retry and hold settings for the running workers."""
        for running in self._running.values():
            running.worker.cfg = forward

    def apply(self, cfg: AgentConfig) -> Changes:
        """Start, stop and replace workers so they match ``cfg``'s destinations."""
        old = {d.name: d for d in self.cfg.forward.destinations}
        new = {d.name: d for d in cfg.forward.destinations}
        changes = Changes(
            added=sorted(new.keys() - old.keys()),
            removed=sorted(old.keys() - new.keys()),
            replaced=sorted(n for n in old.keys() & new.keys() if old[n] != new[n]),
        )
        self.cfg = cfg
        for name in changes.removed + changes.replaced:
            self._running[name].scope.cancel()
        for name in changes.removed:
            del self._running[name]
        for name in changes.added + changes.replaced:
            previous = self._running.get(name)
            self._spawn(self._worker(name), after=previous.done if previous else None)
        self.set_forward(cfg.forward)
        if changes:
            log.info("forward: %s", changes.describe())
        return changes
