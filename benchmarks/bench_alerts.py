"""Alert latency and burst throughput of the MQTT publisher, against Mosquitto's own clients.

One mosquitto_sub (QoS 1, printing its receipt time with %U) listens to both sides, so the
subscriber is the same C client for us and for the anchor:

- latency: from just before ``notifier.series_verdict(verdict, alert)`` (the verdict is
  ready) to mosquitto_sub's receipt of the alert. That includes the durable outbox write
  (SQLite, synchronous=FULL: an fsync) and the PUBACK wait. Anchor: a line written to a
  running ``mosquitto_pub -l -q 1`` until mosquitto_sub prints it (no disk, no fsync).
- burst: 1,000 verdicts, each with an alert (2,000 messages), produced by the notifier in its
  own process (tests/notifier_runner.py) until mosquitto_sub has them all; then that process'
  RSS. Anchor: 2,000 lines through ``mosquitto_pub -l -q 1``.

    python -m pytest benchmarks/bench_alerts.py --benchmark-only -s -p no:cacheprovider
"""

from __future__ import annotations

import json
import queue
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from agent.alerts.notifier import Notifier
from benchmarks.conftest import record
from tests.support.alert_samples import agent_config, repeat_alert, series_uid, verdict
from tests.support.broker import Mosquitto, unique_prefix
from tests.support.notifier_proc import Runner

SAMPLES = 50
BURST = 1000


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: install mosquitto-clients (Debian: apt-get install -y mosquitto-clients)"
        )
    return path


class Sub:
    """mosquitto_sub printing '<receipt unix time> <topic> <payload>' per message."""

    def __init__(self, port: int, topic: str) -> None:
        self.proc = subprocess.Popen(
            [tool("mosquitto_sub"), "-p", str(port), "-q", "1", "-t", topic, "-F", "%U %t %p"],
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[tuple[float, str, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.5)  # subscribed

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            stamp, topic, payload = line.rstrip("\n").split(" ", 2)
            self.lines.put((float(stamp), topic, payload))

    def next(self, timeout: float = 10) -> tuple[float, str, str]:
        return self.lines.get(timeout=timeout)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def ms(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values) * 1000, values[int(len(values) * 0.95) - 1] * 1000


async def our_latencies(cfg: Any, sub: Sub) -> list[float]:
    notifier = Notifier.open(cfg)
    out: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        while notifier.link_state != "online":
            await anyio.sleep(0.01)
        for n in range(SAMPLES):
            v = verdict(series_uid(n))
            t0 = time.time()
            await notifier.series_verdict(v, repeat_alert(v))
            while True:
                at, topic, _ = await anyio.to_thread.run_sync(sub.next)
                if topic.endswith("/alerts"):
                    break
            out.append(at - t0)
            await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    return out


def anchor_latencies(port: int, topic: str, sub: Sub) -> list[float]:
    pub = subprocess.Popen(
        [tool("mosquitto_pub"), "-p", str(port), "-q", "1", "-t", topic, "-l"],
        stdin=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert pub.stdin
    time.sleep(0.3)
    out = []
    for n in range(SAMPLES):
        t0 = time.time()
        pub.stdin.write(f"{n}\n")
        pub.stdin.flush()
        while True:  # skip anything else still queued (the notifier's offline status)
            at, _, payload = sub.next()
            if payload == str(n):
                break
        out.append(at - t0)
        time.sleep(0.02)
    pub.stdin.close()
    pub.wait(5)
    return out


def test_alert_latency(benchmark: Any, broker: Mosquitto, tmp_path: Path) -> None:
    prefix = unique_prefix()
    cfg = agent_config(tmp_path / "state", {"url": broker.url, "topic_prefix": prefix})
    sub = Sub(broker.port, f"{prefix}/#")
    try:
        ours: list[float] = []
        benchmark.pedantic(
            lambda: ours.extend(anyio.run(our_latencies, cfg, sub)), rounds=1, iterations=1
        )
        anchor = anchor_latencies(broker.port, f"{prefix}/anchor", sub)
    finally:
        sub.stop()
    (om, op), (am, ap) = ms(ours), ms(anchor)
    benchmark.extra_info.update(
        ours_median_ms=round(om, 2),
        ours_p95_ms=round(op, 2),
        anchor_median_ms=round(am, 2),
        anchor_p95_ms=round(ap, 2),
    )
    record("alert-latency", "mosquitto_pub -l -> mosquitto_sub (median)", am, "ms", anchor=True)
    record("alert-latency", "verdict ready -> alert at mosquitto_sub (median)", om, "ms")
    record(
        "alert-latency", "verdict ready -> alert at mosquitto_sub (p95)", op, "ms", ratio=op / ap
    )
    record(
        "alert-latency",
        "mosquitto_pub -l -> mosquitto_sub (p95; anchor of the p95)",
        ap,
        "ms",
        ratio=None,
    )


def wait_count(sub: Sub, want: int) -> float:
    got = last = 0.0
    while got < want:
        last, _, _ = sub.next(timeout=60)
        got += 1
    return last


def test_burst_1000_verdicts(benchmark: Any, broker: Mosquitto, tmp_path: Path) -> None:
    prefix = unique_prefix()
    runner = Runner(tmp_path / "runner", {"url": broker.url, "topic_prefix": prefix}).start()
    sub = Sub(broker.port, f"{prefix}/ct-1/#")
    try:
        runner.send({"system": "warm-up"})
        wait_count(sub, 2)  # the retained online status and the warm-up alert
        timing: dict[str, float] = {}

        def burst() -> None:
            t0 = time.time()
            runner.send({"burst": str(BURST), "base": "1.2.826.0.1.3680043.8.498.77"})
            timing["queued"] = time.time() - t0
            timing["received"] = wait_count(sub, 2 * BURST) - t0

        benchmark.pedantic(burst, rounds=1, iterations=1)
        assert runner.proc
        rss = psutil.Process(runner.proc.pid).memory_info().rss / 2**20
        t0 = time.time()
        lines = "".join(json.dumps({"n": n}) + "\n" for n in range(2 * BURST))
        subprocess.run(
            [
                tool("mosquitto_pub"),
                "-p",
                str(broker.port),
                "-q",
                "1",
                "-t",
                f"{prefix}/ct-1/anchor",
                "-l",
            ],
            input=lines,
            text=True,
            check=True,
        )
        anchor_s = wait_count(sub, 2 * BURST) - t0
    finally:
        sub.stop()
        runner.stop()
    rate = 2 * BURST / timing["received"]
    benchmark.extra_info.update(
        messages_per_s=round(rate), queued_s=round(timing["queued"], 2), rss_mib=round(rss, 1)
    )
    record(
        "alert-burst",
        "mosquitto_pub -l, 2,000 messages",
        2 * BURST / anchor_s,
        "msg/s",
        anchor=True,
    )
    record("alert-burst", "notifier, 1,000 verdicts + 1,000 alerts", rate, "msg/s")
    record("alert-burst", "notifier: all queued durably after", timing["queued"], "s")
    record("alert-memory", "notifier process RSS after the burst", rss, "MiB")
