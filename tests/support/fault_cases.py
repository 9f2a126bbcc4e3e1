"""The fault harness (issue 13): one running agent with a real Orthanc as its PACS and a
real Mosquitto, its storage on a small tmpfs, put through every attack in turn.

After each attack the agent must be alive, a normal series must get its verdict on the
broker, and every instance ever answered 0x0000 must reach the PACS or be quarantined
with a reason (``lost`` counts those that do neither). ``benchmarks/faults.py`` prints the
table; ``tests/test_faults_suite.py`` runs it in a bounded form in CI.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from tests.receive import hostile_data
from tests.support.agent_proc import AgentProcess
from tests.support.broker import Mosquitto, unique_prefix
from tests.support.dicom_factory import write_ct_series
from tests.support.disk import fill
from tests.support.orthanc import Orthanc
from tests.support.peers import dcmtk_env, require_tool, storescu
from tests.support.scu import associate, send_files
from tests.support.stalling import connections, half_associate_rq, socket_fds

GUARD_S = 180  # a guard against a hang, never a measured time
GIB = 1 << 30


@dataclass(frozen=True)
class Sizes:
    series: int = 200  # images of the kill -9 series
    flood: int = 200  # concurrent associations
    slowloris: int = 500  # half-open sockets
    bomb: int = GIB  # inflated size of the deflate bomb


CI = Sizes(series=40, flood=40, slowloris=120)


@dataclass
class Row:
    case: str
    answer: str
    alive: bool
    lost: int
    verdict: bool


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def acknowledged_files(storescu_log: str) -> list[Path]:
    """Files storescu saw a Success response for, from its -v log."""
    acked, current = [], None
    for line in storescu_log.splitlines():
        if m := re.search(r"Sending file: (.+)$", line):
            current = Path(m.group(1).strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acked.append(current)
    return acked


def vm_hwm_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM), from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) * 1024 if m else 0


class Rig:
    def __init__(self, work: Path, disk: Path, sizes: Sizes) -> None:
        self.work, self.disk, self.sizes = work, disk, sizes
        self.broker = Mosquitto(work / "broker").start()
        self.pacs = Orthanc(work / "pacs").start()
        self.prefix = unique_prefix()
        self.base = f"{self.prefix}/test-agent"
        self.agent = AgentProcess(
            work / "agent",
            storage={"path": str(disk / "state"), "min_free_bytes": 0, "retention_hours": 0,
                     "purge_interval_s": 1},
            mqtt={"url": self.broker.url, "topic_prefix": self.prefix},
            forward={"destinations": [self.pacs.destination()],
                     "retry": {"initial_s": 0.5, "max_s": 2}},
        )  # fmt: skip
        self.agent.storage = disk / "state"
        self.agent.start()
        self.acked: set[str] = set()
        self._seen: dict[str, str] = {}  # Orthanc id -> SOP Instance UID
        self._n = 0

    def close(self) -> None:
        for stop in (self.agent.stop, self.pacs.stop, self.broker.stop):
            with contextlib.suppress(AssertionError, OSError, RuntimeError):
                stop()

    def folder(self, name: str) -> Path:
        self._n += 1
        return self.work / "data" / f"{self._n:02d}-{name}"

    @property
    def alive(self) -> bool:
        return self.agent.proc is not None and self.agent.proc.poll() is None

    def send(self, files: list[Path]) -> list[int | None]:
        statuses = send_files(self.agent.port, files)
        self.acked |= {sop_uid(f) for f, s in zip(files, statuses, strict=True) if s == 0}
        return statuses

    def series(self, name: str, count: int) -> tuple[list[int | None], str]:
        """Send a series complete by its count; its statuses and Series Instance UID."""
        files = write_ct_series(self.folder(name), count, images_in_acquisition=count)
        uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        return self.send(files), uid

    def verdict(self, series_uid: str) -> bool:
        """True when the series' verdict is on the broker (retained, so it may be old)."""
        got = self.mqtt_messages(f"{self.base}/series/{series_uid}", 1, GUARD_S)
        return bool(got) and json.loads(got[0]).get("series_uid") == series_uid

    def normal_series(self) -> bool:
        statuses, uid = self.series("normal", 3)
        return statuses == [0, 0, 0] and self.verdict(uid)

    def mqtt_messages(self, topic: str, count: int, wait_s: float) -> list[str]:
        """Up to ``count`` messages on ``topic`` (retained ones included) within ``wait_s``."""
        cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-t", topic,
               "-C", str(count), "-W", str(int(wait_s)), "-q", "1"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def at_pacs(self) -> set[str]:
        for item in self.pacs.get("/instances?expand"):
            self._seen.setdefault(item["ID"], item["MainDicomTags"].get("SOPInstanceUID", ""))
        return set(self._seen.values())

    def quarantined(self) -> set[str]:
        rows = self.agent.query(
            "SELECT i.sop_instance_uid FROM deliveries d JOIN instances i ON i.id = d.instance_id"
            " WHERE d.state = 'quarantined' AND d.last_error IS NOT NULL"
        )
        return {r[0] for r in rows}

    def lost(self) -> int:
        """Acknowledged instances neither at the PACS nor quarantined with a reason, once
        the agent has had the hang guard to deliver them."""
        deadline = time.monotonic() + GUARD_S
        while True:
            missing = self.acked - self.at_pacs() - self.quarantined()
            if not missing or time.monotonic() > deadline:
                return len(missing)
            time.sleep(0.5)

    def run(self, name: str, case: Callable[[Rig], str]) -> Row:
        try:
            answer = case(self)
        except Exception as exc:  # a case that breaks is a row that says so, not a crash
            answer = f"case failed: {type(exc).__name__}: {str(exc)[:120]}"
        if not self.alive:
            return Row(name, answer, False, len(self.acked - self.at_pacs()), False)
        verdict = self.normal_series()
        return Row(name, answer, self.alive, self.lost(), verdict)


def _storescu_bg(rig: Rig, files: list[Path]) -> subprocess.Popen[str]:
    cmd = [require_tool("storescu"), "-v", "-aet", "SCANNER", "-aec", "EDGE", "127.0.0.1",
           str(rig.agent.port), *map(str, files)]  # fmt: skip
    return subprocess.Popen(
        cmd, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def kill9_mid_receive(rig: Rig) -> str:
    files = write_ct_series(rig.folder("kill-rx"), rig.sizes.series)
    sender = _storescu_bg(rig, files)
    third = len(files) // 3
    rig.agent.wait_for("SELECT COUNT(*) AS n FROM instances", lambda r: r[0]["n"] >= third, GUARD_S)
    rig.agent.kill9()
    _, log = sender.communicate(timeout=GUARD_S)
    acked = acknowledged_files(log)
    rig.acked |= {sop_uid(f) for f in acked}
    rig.agent.start()
    storescu(rig.agent.port, files)  # the scanner sends the series again
    rig.acked |= {sop_uid(f) for f in files}
    return f"killed after {len(acked)}/{len(files)} acked; resent whole"


def kill9_mid_send(rig: Rig) -> str:
    files = write_ct_series(rig.folder("kill-tx"), rig.sizes.series)
    before = len(rig.at_pacs())
    storescu(rig.agent.port, files)
    rig.acked |= {sop_uid(f) for f in files}
    deadline = time.monotonic() + GUARD_S
    while len(rig.at_pacs()) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    rig.agent.kill9()
    sent = len(rig.at_pacs()) - before
    rig.agent.start()
    return f"killed with {sent}/{len(files)} at the PACS"


def pacs_down(rig: Rig) -> str:
    rig.pacs.stop()
    statuses, _ = rig.series("pacs-down", 5)
    rig.agent.wait_for(
        "SELECT MAX(attempts) AS a FROM deliveries WHERE state = 'queued'",
        lambda r: (r[0]["a"] or 0) >= 2, GUARD_S,
    )  # fmt: skip
    rig.pacs.start()
    return f"{_codes(statuses)} while down; retried, then delivered"


def broker_down(rig: Rig) -> str:
    rig.broker.stop()
    statuses, uid = rig.series("broker-down", 3)
    rig.agent.wait_for_log(f"verdict {uid}", 1, GUARD_S)  # queued in the outbox
    rig.broker.start()
    published = rig.verdict(uid)
    return (
        f"{_codes(statuses)}; verdict {'published' if published else 'MISSING'} after the restart"
    )


def disk_full(rig: Rig) -> str:
    """Fill the tmpfs so that a journal write meets the full disk first: the agent's WAL
    is checkpointed to nothing, so the next commit (a series completion) must grow it."""
    alerts: list[str] = []
    watcher = threading.Thread(
        target=lambda: alerts.extend(rig.mqtt_messages(f"{rig.base}/alerts", 2, GUARD_S)),
        daemon=True,
    )
    watcher.start()
    first = write_ct_series(rig.folder("disk-a"), 2)  # completes after its association
    assoc = associate(rig.agent.port)
    held = [int(assoc.send_c_store(dcmread(f)).Status) for f in first]
    rig.acked |= {sop_uid(f) for f, s in zip(first, held, strict=True) if s == 0}
    rig.agent.wait_for(  # retention would free space as the disk fills: let it finish first
        "SELECT COUNT(*) AS n FROM instances WHERE state != 'purged' AND id IN "
        "(SELECT instance_id FROM deliveries WHERE state = 'delivered')",
        lambda r: r[0]["n"] == 0, GUARD_S,
    )  # fmt: skip
    with sqlite3.connect(rig.agent.storage / "journal.sqlite", timeout=30) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    filler = rig.disk / "filler"
    fill(filler)
    assoc.release()  # the series completes: a journal write on a full disk
    rig.agent.wait_for_log("system alert storage.full", 1, GUARD_S)
    refused = rig.send(write_ct_series(rig.folder("disk-b"), 3))
    filler.unlink()
    rig.agent.wait_for_log("system alert storage.resumed", 1, GUARD_S)
    watcher.join()
    reasons = [json.loads(a)["reasons"][0] for a in alerts]
    full = [r["message"] for r in reasons if r["code"] == "storage.full"]
    why = "journal" if full and "journal write failed" in full[0] else "receive"
    return f"{_codes(held)}, full in the {why}: {_codes(refused)}; {len(full)} storage.full alert, resumed"


def association_flood(rig: Rig) -> str:
    results: list[bool] = []

    def one() -> None:
        assoc = associate(rig.agent.port)
        results.append(assoc.is_established)
        if assoc.is_established:
            assoc.send_c_echo()
            assoc.release()

    threads = [threading.Thread(target=one) for _ in range(rig.sizes.flood)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD_S)
    return f"{sum(results)} served, {results.count(False)} rejected of {len(threads)}"


def slowloris(rig: Rig) -> str:
    before = socket_fds(rig.agent)
    with connections(rig.agent.port, rig.sizes.slowloris, half_associate_rq()):
        statuses = rig.send(write_ct_series(rig.folder("slowloris"), 2))
        held = socket_fds(rig.agent) - before
    return (
        f"{rig.sizes.slowloris} half-open held; agent sockets +{held}; scanner {_codes(statuses)}"
    )


def deflate_bomb(rig: Rig) -> str:
    bomb = hostile_data.deflate_bomb(rig.folder("bomb") / "bomb.dcm", rig.sizes.bomb)
    assert rig.agent.proc is not None
    before = vm_hwm_bytes(rig.agent.proc.pid)
    statuses = send_files(rig.agent.port, [bomb])
    peak = vm_hwm_bytes(rig.agent.proc.pid)
    return (
        f"{_codes(statuses)}; {rig.sizes.bomb >> 20} MiB inflated, peak RSS {peak >> 20} MiB "
        f"({before >> 20} MiB before)"
    )


def length_lies(rig: Rig) -> str:
    folder = rig.folder("lies")
    files = [hostile_data.lying_length(folder / "a.dcm"),
             hostile_data.huge_un_in_the_middle(folder / "b.dcm")]  # fmt: skip
    return _codes(send_files(rig.agent.port, files))


def deep_nesting(rig: Rig) -> str:
    path = hostile_data.deep_nesting(rig.folder("nesting") / "deep.dcm", 500)
    return _codes(send_files(rig.agent.port, [path]))


def bad_uids(rig: Rig) -> str:
    folder = rig.folder("uids")
    refused = [hostile_data.with_uids(folder / "nul.dcm", "1.2\x003", "1.2.4"),
               hostile_data.with_uids(folder / "long.dcm", "1." * 40, "1.2.4")]  # fmt: skip
    stored = [hostile_data.with_uids(folder / "wild.dcm", "1.2.3", "1.2.+/#")]
    return f"{_codes(send_files(rig.agent.port, refused))}; wildcards {_codes(rig.send(stored))}"


CASES: dict[str, Callable[[Rig], str]] = {
    "kill -9 mid-receive": kill9_mid_receive,
    "kill -9 mid-send": kill9_mid_send,
    "PACS down": pacs_down,
    "broker down": broker_down,
    "disk full": disk_full,
    "association flood": association_flood,
    "slowloris": slowloris,
    "deflate bomb": deflate_bomb,
    "length lies": length_lies,
    "deep nesting": deep_nesting,
    "bad UIDs": bad_uids,
}


def _codes(statuses: list[int | None]) -> str:
    """[0, 0, 0xA700] as '0x0000 x2, 0xA700'."""
    out: list[str] = []
    for status in dict.fromkeys(statuses):
        n = statuses.count(status)
        code = "none" if status is None else f"0x{status:04X}"
        out.append(code if n == 1 else f"{code} x{n}")
    return ", ".join(out)


def table(rows: list[Row], acked: int) -> str:
    head = ("case", "answer", "alive", "lost", "verdict after")
    cells = [head] + [(r.case, r.answer, "yes" if r.alive else "NO", str(r.lost),
                       "yes" if r.verdict else "NO") for r in rows]  # fmt: skip
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lost = sum(r.lost for r in rows)
    return "\n".join(lines) + f"\n{acked} instances acknowledged, {lost} lost"
