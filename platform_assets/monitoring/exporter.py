"""The platform's own Prometheus metrics, read from where the truth is at scrape time.

    python -m platform_assets.monitoring.exporter [--port 29100]

A custom collector queries the warehouse (streaming progress, dead letters, alerts, quarantine,
run failures) and Kafka (consumer lag from watermarks against durable offsets) on every scrape, so
the figures never drift from the data and a restart loses nothing. A source that cannot be read
sets ``platform_exporter_up{source=...}`` to 0 instead of failing the scrape.
"""

from __future__ import annotations

import argparse
import sys
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from platform_assets import namespace


class PlatformCollector:
    def __init__(self, resources: dict, streams, sources):
        self.warehouse = resources["warehouse"]
        self.kafka = resources["kafka"]
        self.store = resources["stream_store"]
        self.streams, self.sources = streams, sources

    def _table_exists(self, name: str) -> bool:
        return bool(self.warehouse.query("SELECT to_regclass(%s) IS NOT NULL AS ok", (name,))["ok"].iloc[0])

    def collect(self):
        up = GaugeMetricFamily("platform_exporter_up", "Whether the exporter could read a source", labels=["source"])
        yield from self._warehouse_metrics(up)
        yield from self._kafka_metrics(up)
        yield up

    def _warehouse_metrics(self, up):
        ingested = CounterMetricFamily("platform_events_ingested", "Valid stream messages made durable", labels=["stream"])
        dead = CounterMetricFamily("platform_dead_letters", "Stream messages dead-lettered", labels=["stream"])
        alerts = CounterMetricFamily("platform_alerts", "Anomaly alerts raised", labels=["stream"])
        last = GaugeMetricFamily("platform_stream_last_batch_timestamp_seconds", "When the last micro-batch became durable",
                                 labels=["stream"])
        quarantined = GaugeMetricFamily("platform_quarantined_rows", "Rows in the quarantine table of a source",
                                        labels=["source"])
        failures = CounterMetricFamily("platform_run_failures", "Dagster runs recorded as failed", labels=["job"])
        streaming, quarantine, ops = (namespace.schema(s) for s in ("streaming", "quarantine", "ops"))
        try:
            if self._table_exists(f"{streaming}.batches"):
                frame = self.warehouse.query(
                    "SELECT stream, sum(valid_messages) AS ok, sum(dead_letters) AS dead, "
                    f"extract(epoch FROM max(written_at)) AS last FROM {streaming}.batches GROUP BY stream")
                for row in frame.itertuples():
                    ingested.add_metric([row.stream], float(row.ok))
                    dead.add_metric([row.stream], float(row.dead))
                    last.add_metric([row.stream], float(row.last))
            if self._table_exists(f"{streaming}.alerts"):
                for row in self.warehouse.query(f"SELECT stream, count(*) AS n FROM {streaming}.alerts GROUP BY 1").itertuples():
                    alerts.add_metric([row.stream], float(row.n))
            for name in self.sources.sources:
                if self._table_exists(f"{quarantine}.{name}"):
                    n = self.warehouse.query(f'SELECT count(*) AS n FROM {quarantine}."{name}"')["n"].iloc[0]
                    quarantined.add_metric([name], float(n))
            if self._table_exists(f"{ops}.run_failures"):
                for row in self.warehouse.query(f"SELECT job, count(DISTINCT run_id) AS n FROM {ops}.run_failures GROUP BY 1").itertuples():
                    failures.add_metric([row.job], float(row.n))
            up.add_metric(["warehouse"], 1.0)
        except Exception:  # noqa: BLE001 - a scrape reports the source as down rather than failing
            up.add_metric(["warehouse"], 0.0)
        yield from (ingested, dead, alerts, last, quarantined, failures)

    def _kafka_metrics(self, up):
        lag = GaugeMetricFamily("platform_kafka_consumer_lag", "Messages on the topic not yet durable", labels=["stream", "topic"])
        try:
            for name, stream in (self.streams.streams if self.streams else {}).items():
                marks = self.kafka.watermarks(stream.topic)
                durable = self.store.durable_ends(stream.topic)
                total = sum(high - max(durable.get(p, low), low) for p, (low, high) in marks.items())
                lag.add_metric([name, stream.topic], float(total))
            up.add_metric(["kafka"], 1.0)
        except Exception:  # noqa: BLE001
            up.add_metric(["kafka"], 0.0)
        yield lag


def build_collector() -> PlatformCollector:
    from platform_assets.catalogue import load_catalogues
    from platform_assets.settings import load_local_defaults
    from resources import build_resources

    load_local_defaults()
    configured = build_resources(resolved=True)
    from resources.stream_store import StreamStore

    warehouse = configured["warehouse"]
    kafka = configured["kafka"].model_copy(update={"timeout_seconds": 3.0})
    resources = {"warehouse": warehouse, "kafka": kafka, "stream_store": StreamStore(warehouse=warehouse)}
    catalogues = load_catalogues()  # the demo's or PLATFORM_CATALOGUE_DIR's; streams None when there are none
    return PlatformCollector(resources, catalogues.streams, catalogues.sources)


def main(argv=None) -> int:
    from prometheus_client import REGISTRY, start_http_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=29100)
    args = parser.parse_args(argv)
    REGISTRY.register(build_collector())
    start_http_server(args.port, addr=args.host)
    print(f"platform exporter on http://{args.host}:{args.port}/metrics", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
