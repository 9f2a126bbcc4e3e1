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
- ``spool_free_bytes``                    free space on the spool's file system
- ``mqtt_connected``                      1 while the broker link is online (0: none configured)
- ``associations_active``                 DICOM associations open now
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.config import AgentConfig
from agent.journal.database import connect
from agent.operator.status import read_status

P = "scanner_agent_"


class JournalCollector(Collector):
    def __init__(
        self, cfg: AgentConfig, mqtt_connected: Callable[[], bool],
        associations: Callable[[], int],
    ) -> None:  # fmt: skip
        self.storage = cfg.storage_path
        self.journal_path = cfg.storage_path / "journal.sqlite"
        self.destinations = [d.name for d in cfg.forward.destinations]
        self.mqtt_connected = mqtt_connected
        self.associations = associations

    def collect(self) -> Iterator[Metric]:
        doc = read_status(self.journal_path, self.destinations)
        yield CounterMetricFamily(
            P + "instances_received", "Instances received and recorded in the journal",
            value=doc["instances"]["total"],
        )  # fmt: skip
        yield self._completions()
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
                                value=int(self.mqtt_connected()))  # fmt: skip
        yield GaugeMetricFamily(P + "associations_active", "DICOM associations open now",
                                value=self.associations())  # fmt: skip

    def _completions(self) -> Metric:
        counts: dict[str, int] = {}
        if self.journal_path.exists():
            conn = connect(self.journal_path, readonly=True)
            try:
                counts = dict(conn.execute(
                    "SELECT detail, COUNT(*) FROM events WHERE kind = 'complete' GROUP BY detail"
                ).fetchall())  # fmt: skip
            finally:
                conn.close()
        return _labelled(CounterMetricFamily, "series_completed",
                         "Series completions by reason", "reason", counts)  # fmt: skip


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


def start_metrics(
    cfg: AgentConfig, mqtt_connected: Callable[[], bool], associations: Callable[[], int]
) -> MetricsServer | None:
    if cfg.metrics is None:
        return None
    return MetricsServer(cfg, JournalCollector(cfg, mqtt_connected, associations))

