"""Several associations per DIMSE destination (``max_associations``): every image arrives
once, each lane holds its own association, the earliest waiting item is the one retried,
and a response that pynetdicom's reactor thread takes is given back (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import _config
from pynetdicom.dimse_primitives import C_STORE

from agent.config import AgentConfig
from agent.forward.dimse_sender import DimseSender
from agent.forward.forwarder import make_sender
from agent.forward.lanes import LanedSender
from agent.forward.outcome import Kind
from agent.journal.delivery_queue import DeliveryItem
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import StoreSCP, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _chunked_send_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """DimseSender turns on pynetdicom's module-wide chunked send, as the agent's process
    wants; here it runs inside pytest's process, so the setting is put back afterwards for
    the tests whose SCUs let pynetdicom re-encode (they failed after this file without it)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", _config.STORE_SEND_CHUNKED_DATASET)


def _items(files: list[Path]) -> list[DeliveryItem]:
    out = []
    for i, f in enumerate(files):
        ds = dcmread(f, stop_before_pixels=True)
        out.append(DeliveryItem(i + 1, "pacs", str(f), str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                                str(ds.file_meta.TransferSyntaxUID), str(ds.SeriesInstanceUID),
                                str(ds.StudyInstanceUID), "routine"))  # fmt: skip
    return out


def _cfg(tmp_path: Path, port: int, lanes: int) -> AgentConfig:
    dest = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port,
            "max_associations": lanes, "timeout_s": 5}  # fmt: skip
    return AgentConfig.model_validate(
        {"storage": {"path": str(tmp_path / "state")}, "forward": {"destinations": [dest]}}
    )


def test_three_associations_deliver_every_image_once(tmp_path: Path) -> None:
    scp = StoreSCP(tmp_path / "pacs", "--fork")  # one process per association, as a PACS does
    try:
        sender = make_sender(_cfg(tmp_path, scp.port, 3), "pacs")
        assert isinstance(sender, LanedSender) and len(sender.lanes) == 3
        items = _items(write_ct_series(tmp_path / "ct", 30, images_in_acquisition=30))
        recorded: list[int] = []
        result = sender.send(items, lambda done: recorded.extend(i.instance_id for i, _ in done))
        assert result.retry is None, result.retry
        assert sorted(recorded) == [i.instance_id for i in items], "each outcome recorded once"
        assert {o.kind for _, o in result.done} == {Kind.DELIVERED}
        lanes = [lane for lane in sender.lanes if isinstance(lane, DimseSender)]
        assert all(lane.assoc is not None and lane.assoc.is_established for lane in lanes)
        assert len({id(lane.assoc) for lane in lanes}) == 3, "one association per lane"
        sender.close()
        names = {p.name.split(".", 1)[1] for p in scp.received()}
        assert names == {i.sop_instance_uid for i in items}
    finally:
        scp.stop()


def test_a_destination_down_retries_the_earliest_item(tmp_path: Path) -> None:
    sender = make_sender(_cfg(tmp_path, free_port(), 3), "pacs")
    items = _items(write_ct_series(tmp_path / "ct", 7, images_in_acquisition=7))
    result = sender.send(items)
    assert result.done == [] and result.retry is not None
    assert result.retry_item is items[0], "the worker backs off on the head of the queue"


def test_one_association_stays_a_plain_sender(tmp_path: Path) -> None:
    assert isinstance(make_sender(_cfg(tmp_path, free_port(), 1), "pacs"), DimseSender)


def test_a_response_the_reactor_takes_goes_back_to_the_waiting_store(tmp_path: Path) -> None:
    scp = StoreSCP(tmp_path / "pacs")
    try:
        sender = make_sender(_cfg(tmp_path, scp.port, 1), "pacs")
        assert isinstance(sender, DimseSender)
        items = _items(write_ct_series(tmp_path / "ct", 1))
        assert sender.send(items).retry is None
        assoc = sender.assoc
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo, rsp.Status = 1, 0x0000
        assoc._serve_request(rsp, 1)  # what the reactor does when it wins the race
        assert assoc.dimse.msg_queue.get_nowait() == (1, rsp), "given back, not dropped"
        sender.close()
    finally:
        scp.stop()
