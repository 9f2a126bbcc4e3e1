"""``dicom.receive_processes: 2``: two worker processes accept on the agent's port.

A real agent subprocess and real senders (dcmtk's storescu, pynetdicom): a series over four
associations arrives whole and is judged and forwarded once; a worker killed with SIGKILL
in the middle of a data set loses nothing it acknowledged (the daemon reads back what it
committed, restarts it, and the sender's retry stores the rest); the association limit
and the refusal count hold across both workers.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import yaml
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from agent.receive.spool import dataset_offset
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import write_ct_series
from tests.support.peers import free_port, storescu
from tests.support.scu import associate, send_files

pytestmark = pytest.mark.integration

TWO = {"receive_processes": 2}


def workers(agent: AgentProcess) -> list[psutil.Process]:
    assert agent.proc is not None
    kids = psutil.Process(agent.proc.pid).children()
    return [k for k in kids if "--multiprocessing-fork" in k.cmdline()]


def storescu_parallel(port: int, files: list[Path], associations: int) -> None:
    """dcmtk's storescu, ``associations`` of them at once, each a share of the files."""
    with ThreadPoolExecutor(associations) as pool:
        list(pool.map(lambda i: storescu(port, files[i::associations]), range(associations)))


def test_a_series_over_four_associations_is_received_whole_and_judged_once(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(dicom=TWO).start()
    procs = workers(agent)
    assert len(procs) == 2
    files = write_ct_series(tmp_path / "ct", 60)
    storescu_parallel(agent.port, files, 4)
    agent.wait_series_state("forwarded")
    (series,) = agent.query("SELECT series_uid, completions FROM series")
    assert series["completions"] == 1
    rows = agent.query("SELECT sop_instance_uid, association FROM instances")
    assert sorted(r[0] for r in rows) == sorted(str(dcmread(f).SOPInstanceUID) for f in files)
    assert len({r[1] for r in rows}) == 4  # four associations, each its own serial
    released = agent.query("SELECT COUNT(*) FROM events WHERE kind = 'released'")
    assert released[0][0] == 1
    delivered = agent.query("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
    assert delivered[0][0] == 60  # forwarded once: one delivery per image
    assert agent.stop() == 0
    assert not any(_running(p) for p in procs)  # the workers stopped with the daemon


def test_a_worker_killed_mid_receive_loses_nothing_acknowledged(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(dicom=TWO, series={"idle_timeout_s": {"default": 5}}).start()
    files = write_ct_series(tmp_path / "ct", 40)
    datasets = [dcmread(f) for f in files]
    acked: list[str] = []
    victim: list[int] = []
    ready, go = threading.Event(), threading.Event()

    def scanner() -> None:
        """Sends in order; after an abort it associates again and resends the rest."""
        ae = AE(ae_title="SCANNER")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(CTImageStorage)
        todo = list(datasets)
        while todo:
            assoc = ae.associate("127.0.0.1", agent.port, ae_title="EDGE")
            assert assoc.is_established
            local = assoc.dul.socket.socket.getsockname()[1]  # type: ignore[union-attr]
            while todo and assoc.is_established:
                if len(acked) == 10 and not victim:  # kill the worker serving this one
                    victim.append(local)
                    ready.set()
                    go.wait(60)
                rsp = assoc.send_c_store(todo[0])
                if rsp and getattr(rsp, "Status", None) == 0x0000:
                    acked.append(str(todo.pop(0).SOPInstanceUID))
            if assoc.is_established:
                assoc.release()

    sender = threading.Thread(target=scanner)
    sender.start()
    assert ready.wait(120)
    serving = [
        w for w in workers(agent)
        if any(c.raddr and c.raddr[1] == victim[0] for c in w.net_connections("tcp"))
    ]  # fmt: skip
    assert len(serving) == 1
    serving[0].kill()  # SIGKILL, between two C-STOREs of an open association
    go.set()
    sender.join(300)
    assert not sender.is_alive()
    agent.wait_for(
        "SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'", lambda r: r[0][0] == 40, 120
    )
    stored = {r[0] for r in agent.query("SELECT sop_instance_uid FROM instances")}
    assert set(acked) <= stored and len(acked) == 40
    assert "receive worker" in agent.log() and "exited with -9" in agent.log()
    deadline = time.monotonic() + 60  # the dead one is restarted
    while len(workers(agent)) != 2:
        assert time.monotonic() < deadline, agent.log()[-3000:]
        time.sleep(0.2)
    assert send_files(agent.port, [write_ct_series(tmp_path / "more", 1)[0]]) == [0x0000]


def test_a_worker_killed_while_a_data_set_streams_in(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    """SIGKILL while the worker holds a partial file: nothing half-written stays behind,
    and what it acknowledged before is delivered."""
    agent = agent_factory(dicom=TWO).start()
    files = write_ct_series(tmp_path / "ct", 5)
    assert send_files(agent.port, files) == [0x0000] * 5
    big = dcmread(write_ct_series(tmp_path / "big", 1)[0])  # again and again: one copy kept
    statuses: list[int | None] = []

    def scanner() -> None:
        ae = AE(ae_title="SCANNER")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", agent.port, ae_title="EDGE")
        while assoc.is_established and len(statuses) < 500:
            rsp = assoc.send_c_store(big)
            statuses.append(int(rsp.Status) if rsp and "Status" in rsp else None)

    sender = threading.Thread(target=scanner)
    incoming = agent.storage / "incoming"
    sender.start()
    generation = None
    while generation is None:  # until a worker is caught holding a partial file
        assert sender.is_alive(), "every data set went through before a worker was caught"
        for partial in incoming.glob("w*-*"):
            for w in workers(agent):
                with contextlib.suppress(psutil.Error):
                    if any(f.path == str(partial) for f in w.open_files()):
                        w.kill()
                        generation = int(partial.name[1:].split("-")[0])
    sender.join(300)
    assert len(statuses) < 500  # the association died with the worker
    expected = 5 + (0x0000 in statuses)  # the big one, if acknowledged before the kill
    agent.wait_for(
        "SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'",
        lambda r: r[0][0] == expected, 120,
    )  # fmt: skip
    agent.wait_for_log("partial files removed")
    assert not list(incoming.glob(f"w{generation}-*"))


def test_the_limits_hold_across_workers(agent_factory: type[AgentProcess], tmp_path: Path) -> None:
    port = free_port()
    agent = agent_factory(
        dicom={**TWO, "max_associations": 2, "max_dataset_bytes": "1MiB"},
        metrics={"bind": "127.0.0.1", "port": port},
    ).start(probe_port=False)
    held = [associate(agent.port), associate(agent.port)]
    try:
        assert all(a.is_established for a in held)
        third = associate(agent.port)  # whichever worker takes it, two are open in total
        assert not third.is_established and third.is_rejected
    finally:
        for a in held:
            a.release()
    good = write_ct_series(tmp_path / "ct", 1)[0]
    garbage = tmp_path / "garbage.dcm"  # a valid file meta, then random bytes: 0xC210
    head = good.read_bytes()
    garbage.write_bytes(head[: dataset_offset(head[:1024])] + random.Random(0).randbytes(4096))
    huge = tmp_path / "huge.dcm"  # over max_dataset_bytes: 0xA700
    ds = dcmread(good)
    ds.Rows = ds.Columns = 1024
    ds.PixelData = bytes(1024 * 1024 * 2)
    ds.save_as(huge, enforce_file_format=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            statuses = send_files(agent.port, [garbage, huge])
            break
        except ConnectionError:  # the two released associations are still closing
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert statuses == [0xC210, 0xA700]
    want = {"0xC210": 1.0, "0xA700": 1.0}
    while (got := _refusals(port)) != want:  # counted in the worker, added up in the daemon
        assert time.monotonic() < deadline, got
        time.sleep(0.2)


def _refusals(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as rsp:
        lines = rsp.read().decode().splitlines()
    out = {}
    for line in lines:
        if line.startswith("scanner_agent_refusals_total{"):
            status = line.split('status="')[1].split('"')[0]
            out[status] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_reloaded_calling_ae_list_reaches_the_workers(
    agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(dicom={**TWO, "allowed_calling_aets": ["CT1"]}).start()
    one = write_ct_series(tmp_path / "ct", 1)
    assert storescu(agent.port, one, calling="CT2", check=False).returncode != 0
    doc = yaml.safe_load(agent.config_path.read_text())
    doc["dicom"]["allowed_calling_aets"] = ["CT1", "CT2"]
    agent.config_path.write_text(yaml.safe_dump(doc))
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for_log("received SIGHUP")
    agent.wait_for_log("dicom.allowed_calling_aets now ['CT1', 'CT2']", 2)  # both workers
    for _ in range(4):  # whichever worker takes the association, CT2 is allowed now
        assert storescu(agent.port, one, calling="CT2", check=False).returncode == 0


def test_workers_die_with_a_killed_daemon(agent_factory: type[AgentProcess]) -> None:
    agent = agent_factory(dicom=TWO).start()
    procs = workers(agent)
    assert len(procs) == 2
    agent.kill9()  # no drain, no goodbye: PR_SET_PDEATHSIG takes the workers down
    deadline = time.monotonic() + 60
    while alive := [p for p in procs if _running(p)]:
        assert time.monotonic() < deadline, f"orphaned receive workers: {alive}"
        time.sleep(0.1)


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an orphan's exit may wait for a reaper that never comes)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
