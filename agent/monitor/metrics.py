"""Prometheus ``/metrics`` (config ``metrics: {bind, port}``; omitted: off).

A custom collector reads the journal at scrape time, the way ``scanner-agent status`` does,
so no room has to thread counters through its code and a restart loses no count: what the
journal holds is the truth. Only live process state (the broker link, open associations)
comes from callables the daemon hands in. Families (all ``scanner_agent_*``):

- ``instances_received_total``            instances the journal has recorded
- ``series_completed_total{reason}``      completions by reason (amendments count again)
- ``series{state}``                       series by state now
- ``delivery_queue_depth{destination}``   instances waiting for each destination
- ``delivery_oldest_seconds{destination}`` age of the oldest undelivered instance
- ``delivery_quarantined{destination}``   quarantined deliveries (``quarantine retry`` lowers it)
- ``quarantined_total{destination}``      deliveries ever quarantined (a retry does not lower it)
- ``qc_results_total{protocol,status}``   series QC verdicts by matched protocol and status
- ``verdict_latency_seconds``             histogram: a series' last image to its verdict
- ``triage_score{model,finding}``         histogram of series triage scores
- ``spool_free_bytes``                    free space on the spool's file system
- ``mqtt_connected``                      1 while the broker link is online (0: none configured)
- ``associations_active``                 DICOM associations open now
- ``refusals_total{status}``              C-STOREs answered with a failure status, by status

The verdict counters live in the journal (agent/journal/counters.py). Refusals are counted in
the process: under a flood or a full disk the journal is the last thing to write to, so they
start again from 0 after a restart, which Prometheus' ``rate()`` reads as a counter reset.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from agent.config import AgentConfig
from agent.journal import counters, verdict_log
from agent.journal.database import connect
from agent.journal.delivery_queue import QUARANTINED_TOTAL
from agent.operator.status import read_status

P = "scanner_agent_"


@dataclass(frozen=True)
class Live:
    """Process state the journal does not hold, read at scrape time."""

    mqtt_connected: Callable[[], bool]
    associations: Callable[[], int]
    refusals: Callable[[], Mapping[int, int]]  # C-STORE failure status -> count
    destinations: Callable[[], list[str]]  # their names now: a reload may change them


class JournalCollector(Collector):
    def __init__(self, cfg: AgentConfig, live: Live) -> None:
        self.storage = cfg.storage_path
        self.journal_path = cfg.storage_path / "journal.sqlite"
        self.live = live

    def collect(self) -> Iterator[Metric]:
        doc = read_status(self.journal_path, self.live.destinations())
        yield CounterMetricFamily(
            P + "instances_received", "Instances received and recorded in the journal",
            value=doc["instances"]["total"],
        )  # fmt: skip
        yield _labelled(GaugeMetricFamily, "series", "Series by state", "state",
                        doc["series"]["by_state"])  # fmt: skip
        dests: dict[str, dict[str, Any]] = doc["destinations"]
        yield _labelled(GaugeMetricFamily, "delivery_queue_depth",
                        "Instances queued for a destination", "destination",
                        {n: d["queued"] for n, d in dests.items()})  # fmt: skip
        yield _labelled(GaugeMetricFamily, "delivery_oldest_seconds",
                        "Age of the oldest undelivered instance (0: none)", "destination",
                        {n: d["oldest_undelivered_s"] or 0 for n, d in dests.items()})  # fmt: skip
        yield _labelled(GaugeMetricFamily, "delivery_quarantined",
                        "Deliveries quarantined with a reason", "destination",
                        {n: d["quarantined"] for n, d in dests.items()})  # fmt: skip
        yield GaugeMetricFamily(P + "spool_free_bytes", "Free bytes on the spool's file system",
                                value=shutil.disk_usage(self.storage).free)  # fmt: skip
        yield GaugeMetricFamily(P + "mqtt_connected", "1 while the MQTT broker link is online",
                                value=int(self.live.mqtt_connected()))  # fmt: skip
        yield GaugeMetricFamily(P + "associations_active", "DICOM associations open now",
                                value=self.live.associations())  # fmt: skip
        yield _labelled(CounterMetricFamily, "refusals", "C-STOREs answered with a failure status",
                        "status", {f"0x{s:04X}": n for s, n in self.live.refusals().items()})  # fmt: skip
        if self.journal_path.exists():
            conn = connect(self.journal_path, readonly=True)
            try:
                yield from _journal_counters(conn)
            finally:
                conn.close()


def _journal_counters(db: sqlite3.Connection) -> Iterator[Metric]:
    completions = dict(db.execute(
        "SELECT detail, COUNT(*) FROM events WHERE kind = 'complete' GROUP BY detail"
    ).fetchall())  # fmt: skip
    yield _labelled(CounterMetricFamily, "series_completed", "Series completions by reason",
                    "reason", completions)  # fmt: skip
    yield _counted(db, QUARANTINED_TOTAL, "Deliveries quarantined", ["destination"])
    yield _counted(db, verdict_log.QC_RESULTS, "Series QC verdicts by protocol and status",
                   ["protocol", "status"])  # fmt: skip
    yield _histogram(db, verdict_log.VERDICT_LATENCY,
                     "Seconds from a series' last image to its verdict", [])  # fmt: skip
    yield _histogram(db, verdict_log.TRIAGE_SCORE, "Series triage scores by model and finding",
                     ["model", "finding"])  # fmt: skip


def _counted(db: sqlite3.Connection, family: str, doc: str, labels: list[str]) -> Metric:
    metric = CounterMetricFamily(P + family, doc, labels=labels)
    for c in counters.counts(db, family):
        metric.add_metric([c.labels.get(k, "") for k in labels], c.value)
    return metric


def _histogram(db: sqlite3.Connection, family: str, doc: str, labels: list[str]) -> Metric:
    metric = HistogramMetricFamily(P + family, doc, labels=labels)
    for h in counters.histograms(db, family):
        metric.add_metric([h.labels.get(k, "") for k in labels], h.buckets, h.sum)
    return metric


def _labelled(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str, doc: str, label: str,
    values: dict[str, Any],
) -> Metric:  # fmt: skip
    family = kind(P + name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([str(key)], value)
    return family


class MetricsServer:
    """The HTTP endpoint in its own thread (prometheus-client's WSGI server)."""

    def __init__(self, cfg: AgentConfig, collector: Collector) -> None:
        assert cfg.metrics is not None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        self._server, self._thread = start_http_server(
            cfg.metrics.port, addr=cfg.metrics.bind, registry=registry
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def start_metrics(cfg: AgentConfig, live: Live) -> MetricsServer | None:
    if cfg.metrics is None:
        return None
    return MetricsServer(cfg, JournalCollector(cfg, live))
