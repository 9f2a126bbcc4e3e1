"""Several associations to one destination (``forward.destinations[].max_associations``).

A batch is dealt round-robin over the lanes, so lane k sends items k, k+n, k+2n, ... in
queue order: each series still goes out in its InstanceNumber order within a lane, and the
lanes together start items in queue order. pynetdicom spends most of a C-STORE waiting on
its own threads and the peer, so a second and third association overlap that waiting
(benchmarks/RESULTS.md, store-and-forward). Each outcome is recorded as it comes, from the
lane's thread (the journal serialises them): after a kill -9 at most one item per lane
goes again. A lane that must wait (RetryLater) stops; the others finish their share, and
the worker backs off on the earliest item that waits.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from agent.forward.senders import BatchResult, Done, Sender, ignore
from agent.journal.delivery_queue import DeliveryItem


class LanedSender:
    def __init__(self, make: Callable[[], Sender], lanes: int, name: str) -> None:
        self.lanes = [make() for _ in range(lanes)]
        self.pool = ThreadPoolExecutor(lanes, thread_name_prefix=f"forward-{name}")

    def send(self, batch: list[DeliveryItem], on_done: Done = ignore) -> BatchResult:
        n = min(len(self.lanes), len(batch))
        if n <= 1:
            return self.lanes[0].send(batch, on_done)
        futures = [
            self.pool.submit(lane.send, batch[k::n], on_done)
            for k, lane in enumerate(self.lanes[:n])
        ]
        results = [f.result() for f in futures]
        merged = BatchResult(done=[d for r in results for d in r.done])
        order = {id(item): i for i, item in enumerate(batch)}
        waiting = [r for r in results if r.retry is not None and r.retry_item is not None]
        if waiting:
            first = min(waiting, key=lambda r: order[id(r.retry_item)])
            merged.retry, merged.retry_item = first.retry, first.retry_item
        return merged

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()
