"""Micro-batch assets: one step per batch reads an exact offset range and makes it durable.

Per stream, one multi-asset materialises the streaming lake table, its dead letters and, where the
catalogue declares them, the windowed statistics and alerts. One step rather than a chain because
the order of writes is the exactly-once protocol and a step costs seconds of latency:

1. read exactly the requested ranges (assign, seek, stop at the end offsets);
2. validate against the source contract: invalid messages become dead letters with their bytes;
3. write Parquet to the lake, one file per range and event hour, named by the range (a retry
   replaces its own files);
4. detect anomalies and produce alerts to the alerts topic (at least once; keyed by a
   deterministic alert id, so consumers deduplicate);
5. in ONE warehouse transaction: the ranges, dead letters, window partials and alerts;
6. only then commit the offsets to the consumer group (for lag monitoring).

A failure before 5 leaves nothing recorded, so the sensor requests the same ranges again.
"""

import json
import posixpath

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field

from platform_assets.metadata import frame_metadata
from platform_assets.sources.config import Catalogue
from platform_assets.streaming import microbatch as mb
from platform_assets.streaming.config import StreamCatalogue, StreamConfig
from resources.kafka import KafkaResource, OffsetRange
from resources.lake import LakeResource
from resources.stream_store import SCHEMA, StreamStore, stats_view


class RangeConfig(dg.Config):
    partition: int = Field(ge=0)
    start: int = Field(ge=0, description="first offset (inclusive)")
    end: int = Field(ge=0, description="last offset (exclusive)")


class MicroBatchConfig(dg.Config):
    ranges: list[RangeConfig] = Field(description="offset ranges to ingest, one per partition")


def topic_key(topic: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topic.replace(".", "_").replace("-", "_")])


def stream_keys(name: str, stream: StreamConfig) -> dict[str, dg.AssetKey]:
    keys = {"lake": dg.AssetKey(["lake", "stream", name]),
            "dead_letters": dg.AssetKey(["warehouse", "streaming", f"{name}_dead_letters"])}
    if stream.windows:
        keys["windows"] = dg.AssetKey(["warehouse", "streaming", stats_view(name)])
    if stream.anomalies:
        keys["alerts"] = dg.AssetKey(["warehouse", "streaming", f"{name}_alerts"])
    return keys


def group_id(name: str) -> str:
    return f"platform.{name}"


def build_stream_assets(name: str, stream: StreamConfig, sources: Catalogue, streams: StreamCatalogue):
    contract = streams.contract(name, sources)
    keys = stream_keys(name, stream)
    topic = topic_key(stream.topic)
    descriptions = {
        "lake": f"Messages of {stream.topic} that meet the {stream.contract_of} contract, Parquet per event hour.",
        "dead_letters": f"Messages of {stream.topic} that broke the contract: raw bytes, partition, offset, reason.",
        "windows": f"{stream.windows.minutes if stream.windows else ''}-minute tumbling windows per {stream.key} (a view over exactly-once partials).",
        "alerts": f"Readings more than N standard deviations from their {stream.key}'s recent mean; also sent to {streams.alerts_topic}.",
    }
    kinds = {"lake": {"parquet"}, "dead_letters": {"postgres"}, "windows": {"postgres"}, "alerts": {"postgres", "kafka"}}
    specs = [
        dg.AssetSpec(key, deps=[topic] if part == "lake" else [keys["lake"]], group_name="streaming",
                     description=descriptions[part], kinds=kinds[part])
        for part, key in keys.items()
    ]
    checks = [
        dg.AssetCheckSpec("ranges_contiguous", asset=keys["lake"], blocking=True,
                          description="Each range starts where the last durable batch ended: no gap, no overlap."),
        dg.AssetCheckSpec("dead_letter_rate", asset=keys["lake"], description="At most 5% of messages dead-lettered."),
    ]

    @dg.multi_asset(name=f"stream_{name}", specs=specs, check_specs=checks, op_tags={"stream": name})
    def _micro_batch(context: dg.AssetExecutionContext, config: MicroBatchConfig, kafka: KafkaResource,
                     lake: LakeResource, stream_store: StreamStore):
        started = pd.Timestamp.now(tz="UTC")
        ranges = [OffsetRange(r.partition, r.start, r.end) for r in config.ranges]
        durable = stream_store.durable_ends(stream.topic)
        gaps = {r.partition: (durable.get(r.partition), r.start) for r in ranges
                if durable.get(r.partition) is not None and durable[r.partition] != r.start}
        if gaps:
            raise dg.Failure(f"stream {name}: requested ranges do not continue the durable offsets "
                             f"(partition: (durable end, requested start)) {gaps}", allow_retries=False)

        messages = kafka.read_ranges(stream.topic, ranges)
        decoded = mb.decode(messages, contract, stream.topic)
        valid, dead = decoded.valid, decoded.dead_letters
        base = posixpath.join(*keys["lake"].path[1:])
        files = mb.lake_files(valid, base, stream.event_time, ranges)
        for rel, rows in files.items():
            lake.write_parquet(rel, pa.Table.from_pandas(rows, preserve_index=False))
        lake_at = pd.Timestamp.now(tz="UTC")

        partials = mb.minute_partials(valid, stream, ranges) if stream.windows else None
        alerts = None
        if stream.anomalies:
            since = valid[stream.event_time].min() - pd.Timedelta(minutes=stream.anomalies.history_minutes + 1) \
                if len(valid) else started
            history = stream_store.history(name, stream.key, sorted(valid[stream.key].unique()) if len(valid) else [],
                                           since, ranges, stream.topic)
            history = pd.concat([h for h in (history, partials) if h is not None and len(h)], ignore_index=True) \
                if (len(history) or (partials is not None and len(partials))) else pd.DataFrame()
            alerts = mb.detect_anomalies(valid, history, stream, stream.topic)
            if len(alerts):
                kafka.produce(streams.alerts_topic, (
                    (str(a.key).encode(), json.dumps({**a._asdict(), "event_time": a.event_time.isoformat(),
                                                       "stream": name, "topic": stream.topic}).encode())
                    for a in alerts.itertuples(index=False)))
        counts = {r.partition: (int((valid[mb.PARTITION] == r.partition).sum()) if len(valid) else 0,
                                int((dead["partition"] == r.partition).sum()))
                  for r in ranges}
        stream_store.record_batch(stream=name, topic=stream.topic, ranges=ranges, counts=counts, dead_letters=dead,
                                  partials=partials, alerts=alerts, key=stream.key,
                                  signals=stream.windows.signals if stream.windows else (), run_id=context.run_id)
        durable_at = pd.Timestamp.now(tz="UTC")
        kafka.commit(group_id(name), stream.topic, {r.partition: r.end for r in ranges if r.end > r.start})

        n_msgs = len(messages)
        offsets_md = dg.MetadataValue.json([r._asdict() for r in ranges])
        latency = (lake_at - valid[stream.event_time]).dt.total_seconds() if len(valid) else pd.Series(dtype=float)
        yield dg.MaterializeResult(asset_key=keys["lake"], metadata={
            **frame_metadata(valid.drop(columns=[mb.KAFKA_TS])),
            "offset_ranges": offsets_md, "messages": n_msgs, "dead_letters": len(dead),
            "files_written": len(files),
            "hours": dg.MetadataValue.json(sorted({posixpath.relpath(posixpath.dirname(f), base) for f in files})),
            "event_to_lake_seconds_p50": float(latency.median()) if len(latency) else 0.0,
            "event_to_lake_seconds_max": float(latency.max()) if len(latency) else 0.0,
            "batch_seconds": round((durable_at - started).total_seconds(), 3),
            "path": dg.MetadataValue.path(lake.uri(base)),
        })
        yield dg.MaterializeResult(asset_key=keys["dead_letters"], metadata={
            "dagster/row_count": len(dead), "offset_ranges": offsets_md,
            "reasons": dg.MetadataValue.json(dead["reason"].str.split(":").str[0].value_counts().to_dict() if len(dead) else {}),
            "table": f"{SCHEMA}.dead_letters"})
        if "windows" in keys:
            yield dg.MaterializeResult(asset_key=keys["windows"], metadata={
                "window_partials_written": len(partials) if partials is not None else 0,
                "offset_ranges": offsets_md, "table": f"{SCHEMA}.{stats_view(name)}"})
        if "alerts" in keys:
            yield dg.MaterializeResult(asset_key=keys["alerts"], metadata={
                "dagster/row_count": len(alerts) if alerts is not None else 0, "offset_ranges": offsets_md,
                "topic": streams.alerts_topic, "table": f"{SCHEMA}.alerts"})
        yield dg.AssetCheckResult(check_name="ranges_contiguous", asset_key=keys["lake"], passed=True,
                                  metadata={"durable_before": dg.MetadataValue.json({str(k): v for k, v in durable.items()})})
        rate = len(dead) / n_msgs if n_msgs else 0.0
        yield dg.AssetCheckResult(check_name="dead_letter_rate", asset_key=keys["lake"], passed=rate <= 0.05,
                                  severity=dg.AssetCheckSeverity.WARN, metadata={"rate": round(rate, 5)})
        context.log.info(f"stream {name}: {n_msgs} messages, {len(dead)} dead letters, {len(files)} files")

    return _micro_batch


def build_streaming_definitions(sources: Catalogue, streams: StreamCatalogue):
    """Topic specs, micro-batch assets and one job per stream (in-process: a batch is one step)."""
    topic_specs = [dg.AssetSpec(topic_key(t), group_name="streaming", kinds={"kafka"},
                                description=f"Kafka topic {t} ({spec.partitions} partitions).")
                   for t, spec in streams.topics.items() if t != streams.alerts_topic]
    alert_keys = [stream_keys(n, s)["alerts"] for n, s in streams.streams.items() if s.anomalies]
    topic_specs.append(dg.AssetSpec(topic_key(streams.alerts_topic), deps=alert_keys, group_name="streaming",
                                    kinds={"kafka"}, description="Kafka topic of anomaly alerts."))
    assets, jobs = [], []
    for name, stream in streams.streams.items():
        asset = build_stream_assets(name, stream, sources, streams)
        assets.append(asset)
        jobs.append(dg.define_asset_job(f"stream_{name}_job", selection=dg.AssetSelection.assets(asset),
                                        executor_def=dg.in_process_executor, tags={"stream": name},
                                        description=f"One micro-batch of stream {name} (launched by its sensor)."))
    return topic_specs, assets, jobs
