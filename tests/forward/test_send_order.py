"""Send order (README step 6): stat, then urgent, then routine series; series in arrival
order; instances in InstanceNumber order, whatever order the scanner sent them in."""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt

from agent.domain.instances import SeriesInfo
from agent.journal.database import Journal
from agent.journal.delivery_queue import DeliveryQueue
from tests.support.dicom_factory import write_ct_series
from tests.support.instances import slices
from tests.support.peers import free_port, storescu


class RecordingSCP:
    """A pynetdicom Storage SCP that records the InstanceNumber of each C-STORE as it comes."""

    def __init__(self) -> None:
        self.arrived: list[int] = []
        self.lock = threading.Lock()
        self.port = free_port()
        ae = AE(ae_title="PACS")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(str(cx.abstract_syntax))
        handlers: list[Any] = [(evt.EVT_C_STORE, self._store)]
        self.server: Any = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=handlers
        )

    def _store(self, event: Any) -> int:
        with self.lock:
            self.arrived.append(int(event.dataset.InstanceNumber))
        return 0x0000


@pytest.mark.integration
def test_instances_go_out_in_instance_number_order(agent_factory: Any, tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "s", 12, images_in_acquisition=12)
    shuffled = files[:]
    random.Random(5).shuffle(shuffled)
    sent = [int(dcmread(f, stop_before_pixels=True).InstanceNumber) for f in shuffled]
    assert sent != sorted(sent)
    scp = RecordingSCP()
    try:
        dest = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}
        agent = agent_factory(forward={"destinations": [dest], "batch_size": 4}).start()
        storescu(agent.port, shuffled)
        agent.wait_series_state("forwarded", 60)
        assert scp.arrived == list(range(1, 13)), f"sent as {sent}"
    finally:
        scp.server.shutdown()


def queue_series(journal: Journal, uid: str, n: int, received_at: float, seed: int) -> None:
    """Record ``n`` slices of series ``uid`` in a shuffled order and release them."""
    instances = [
        replace(inst, series_uid=uid, sop_instance_uid=f"{uid}.{inst.instance_number}",
                sha256=f"{uid}{inst.instance_number}".ljust(64, "0"), received_at=received_at)
        for inst in slices(n)
    ]  # fmt: skip
    random.Random(seed).shuffle(instances)
    info = SeriesInfo(series_uid=uid, study_uid="1.2", modality="CT")
    for inst in instances:
        journal.record_instance(inst, info)
    journal.release_series(uid, ["pacs"])


def test_queue_order_is_priority_then_arrival_then_instance_number(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite")
    arrivals = {"9.1": ("routine", 100.0), "9.2": ("urgent", 200.0), "9.3": ("routine", 300.0),
                "9.4": ("stat", 400.0), "9.5": ("urgent", 150.0)}  # fmt: skip
    for seed, (uid, (priority, at)) in enumerate(arrivals.items()):
        queue_series(journal, uid, 4, at, seed)
        with journal.transaction() as db:
            db.execute("UPDATE series SET priority = ? WHERE series_uid = ?", (priority, uid))
    batch = DeliveryQueue(journal).next_batch("pacs", 100)
    order = [(item.series_uid, item.sop_instance_uid.rsplit(".", 1)[1]) for item in batch]
    expected_series = ["9.4", "9.5", "9.2", "9.1", "9.3"]
    assert order == [(uid, str(n)) for uid in expected_series for n in range(1, 5)]
    assert [item.priority for item in batch[::4]] == [
        "stat",
        "urgent",
        "urgent",
        "routine",
        "routine",
    ]
