"""One batch of a stream made durable: the exactly-once protocol, shared by both modes.

The micro-batch asset (one Dagster run per batch) and the continuous consumer (one long-running run
per shard) hand the messages of exact offset ranges to ``process_batch``, which does, in order:

1. name the ranges in an intent (a consumer killed after this point is redone on exactly them);
2. validate against the source contract: invalid messages become dead letters with their bytes;
3. write Parquet to the lake, one file per range and event hour, named by the range (a redo
   replaces its own files);
4. detect anomalies and produce alerts to the alerts topic (at least once; keyed by a
   deterministic alert id, so consumers deduplicate);
5. in ONE warehouse transaction: the ranges, dead letters, window partials and alerts, only if the
   ranges continue the durable offsets (else nothing is recorded and this batch's files go);
6. only then commit the offsets to the consumer group (for lag monitoring).

A failure before 5 records nothing, so the same ranges are read again; after 5 the data is durable
and the next batch starts at the new durable end whatever happened to the commit.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import dagster as dg
import pandas as pd
import pyarrow as pa

from platform_assets.metadata import frame_metadata
from platform_assets.sources.config import Contract
from platform_assets.streaming import microbatch as mb
from platform_assets.streaming.config import StreamCatalogue, StreamConfig
from platform_assets.streaming.decode import decode
from platform_assets.streaming.predict import Scored, StreamPredictor
from platform_assets.streaming.publish import Publisher
from resources.kafka import KafkaMessage, KafkaResource, OffsetRange
from resources.lake import LakeResource
from resources.stream_store import SCHEMA, BatchConflict, StreamStore, stats_view


class Batch(NamedTuple):
    """What one durable batch wrote, for its materialisation metadata."""

    ranges: list[OffsetRange]
    messages: int
    valid: pd.DataFrame
    dead: pd.DataFrame
    files: dict[str, pd.DataFrame]
    partials: pd.DataFrame | None
    alerts: pd.DataFrame | None
    started: pd.Timestamp
    lake_at: pd.Timestamp
    durable_at: pd.Timestamp
    scored: Scored | None = None  # online features and predictions, when the stream declares them
    seconds: dict | None = None  # per step (intent, decode, lake, windows_alerts, predict, transaction, publish, commit)


class StreamTarget(NamedTuple):
    """A stream with everything its batches need: catalogue entry, contract and asset keys."""

    name: str
    stream: StreamConfig
    streams: StreamCatalogue
    contract: Contract
    keys: dict[str, dg.AssetKey]

    @property
    def lake_base(self) -> str:
        return posixpath.join(*self.keys["lake"].path[1:])


def process_batch(target: StreamTarget, messages: Sequence[KafkaMessage], ranges: Sequence[OffsetRange], *,
                  kafka: KafkaResource, lake: LakeResource, stream_store: StreamStore,
                  commit: Callable[[dict[int, int]], None], run_id: str | None,
                  predictor: StreamPredictor | None = None, publisher: Publisher | None = None) -> Batch:
    """Steps 1-6 above for the messages of exactly ``ranges`` (see the module docstring); with a
    ``predictor``, the batch's predictions join step 5's transaction and are published after it.
    A long-lived consumer passes its ``publisher`` (one producer for its life) for the alerts;
    without one, each batch's alerts go through a producer of their own."""
    try:
        return _process_batch(target, messages, ranges, kafka=kafka, lake=lake, stream_store=stream_store,
                              commit=commit, run_id=run_id, predictor=predictor, publisher=publisher)
    except BaseException:
        if predictor is not None:  # its rolling state may no longer match the warehouse
            predictor.reset()
        raise


def _process_batch(target: StreamTarget, messages: Sequence[KafkaMessage], ranges: Sequence[OffsetRange], *,
                   kafka: KafkaResource, lake: LakeResource, stream_store: StreamStore,
                   commit: Callable[[dict[int, int]], None], run_id: str | None,
                   predictor: StreamPredictor | None, publisher: Publisher | None) -> Batch:
    name, stream, topic = target.name, target.stream, target.stream.topic
    ranges = [r for r in ranges if r.end > r.start]
    started = pd.Timestamp.now(tz="UTC")
    clock = _Steps()
    stream_store.record_intent(topic, ranges, run_id)
    clock.lap("intent")
    decoded = decode(messages, target.contract, topic)
    clock.lap("decode")
    valid, dead = decoded.valid, decoded.dead_letters
    files = mb.lake_files(valid, target.lake_base, stream.event_time, ranges)
    for rel, rows in files.items():
        lake.write_parquet(rel, pa.Table.from_pandas(rows, preserve_index=False))
    lake_at = pd.Timestamp.now(tz="UTC")
    clock.lap("lake")

    partials = mb.minute_partials(valid, stream, ranges) if stream.windows else None
    alerts = None
    if stream.anomalies:
        since = valid[stream.event_time].min() - pd.Timedelta(minutes=stream.anomalies.history_minutes + 1) \
            if len(valid) else started
        history = stream_store.history(name, stream.key, sorted(valid[stream.key].unique()) if len(valid) else [],
                                       since, ranges, topic)
        frames = [h for h in (history, partials) if h is not None and len(h)]
        history = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        alerts = mb.detect_anomalies(valid, history, stream, topic)
        if len(alerts):
            alerts_topic = target.streams.alerts_topic
            produce = publisher.topic(alerts_topic) if publisher else lambda records: kafka.produce(alerts_topic, records)
            produce(
                (str(a.key).encode(), json.dumps({**a._asdict(), "event_time": a.event_time.isoformat(),
                                                   "stream": name, "topic": topic}).encode())
                for a in alerts.itertuples(index=False))
    clock.lap("windows_alerts")
    scored = predictor.prepare(valid, partials, ranges, topic) if predictor is not None else None
    clock.lap("predict")
    if scored is not None and scored.alerts is not None and len(scored.alerts):
        alerts = pd.concat([a for a in (alerts, scored.alerts) if a is not None and len(a)], ignore_index=True)
    counts = {r.partition: (int((valid[mb.PARTITION] == r.partition).sum()) if len(valid) else 0,
                            int((dead["partition"] == r.partition).sum()))
              for r in ranges}
    try:
        stream_store.record_batch(stream=name, topic=topic, ranges=ranges, counts=counts, dead_letters=dead,
                                  partials=partials, alerts=alerts, key=stream.key,
                                  signals=stream.windows.signals if stream.windows else (), run_id=run_id,
                                  predictions=scored.predictions if scored is not None else None)
    except BatchConflict as conflict:
        # Another consumer recorded these partitions first: our files there are named by ranges
        # that will never be recorded, so they go (theirs have other names).
        for rel in files:
            if int(posixpath.basename(rel)[1:].split("-")[0]) in conflict.partitions:
                lake.delete_file(rel)
        raise
    durable_at = pd.Timestamp.now(tz="UTC")
    clock.lap("transaction")
    if scored is not None:
        try:  # durable already: a failure here costs freshness (Redis, topic), never data
            predictor.publish(scored)
            scored.status["published_at"] = pd.Timestamp.now(tz="UTC").isoformat()
        except Exception as exc:  # noqa: BLE001 (the state advanced first: it stays right)
            scored.status["publish_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    clock.lap("publish")
    commit({r.partition: r.end for r in ranges})
    clock.lap("commit")
    return Batch(ranges, len(messages), valid, dead, files, partials, alerts, started, lake_at, durable_at, scored,
                 clock.seconds)


class _Steps:
    """Seconds per step of a batch, for its metadata and the benchmark's breakdown."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._t, 4)
        self._t = now


def batch_metadata(target: StreamTarget, batch: Batch, lake: LakeResource) -> dict[str, dict]:
    """Materialisation metadata per asset part (lake, dead_letters, windows, alerts) of one batch."""
    valid, dead, files = batch.valid, batch.dead, batch.files
    offsets_md = dg.MetadataValue.json([r._asdict() for r in batch.ranges])
    if len(valid):
        to_lake = (batch.lake_at - valid[target.stream.event_time]).dt.total_seconds()
        kafka_to_durable = (batch.durable_at - valid[mb.KAFKA_TS]).dt.total_seconds()
    else:
        to_lake = kafka_to_durable = pd.Series(dtype=float)
    base = target.lake_base
    out = {
        "lake": {
            **frame_metadata(valid.drop(columns=[mb.KAFKA_TS])),
            "offset_ranges": offsets_md, "messages": batch.messages, "dead_letters": len(dead),
            "files_written": len(files),
            "hours": dg.MetadataValue.json(sorted({posixpath.relpath(posixpath.dirname(f), base) for f in files})),
            "event_to_lake_seconds_p50": float(to_lake.median()) if len(to_lake) else 0.0,
            "event_to_lake_seconds_max": float(to_lake.max()) if len(to_lake) else 0.0,
            "produce_to_durable_seconds_max": round(float(kafka_to_durable.max()), 3) if len(kafka_to_durable) else 0.0,
            "batch_seconds": round((batch.durable_at - batch.started).total_seconds(), 3),
            "step_seconds": dg.MetadataValue.json(batch.seconds or {}),
            "path": dg.MetadataValue.path(lake.uri(base)),
        },
        "dead_letters": {
            "dagster/row_count": len(dead), "offset_ranges": offsets_md,
            "reasons": dg.MetadataValue.json(dead["reason"].str.split(":").str[0].value_counts().to_dict()
                                             if len(dead) else {}),
            "table": f"{SCHEMA}.dead_letters"},
    }
    if "windows" in target.keys:
        out["windows"] = {"window_partials_written": len(batch.partials) if batch.partials is not None else 0,
                          "offset_ranges": offsets_md, "table": f"{SCHEMA}.{stats_view(target.name)}"}
    if "alerts" in target.keys:
        out["alerts"] = {"dagster/row_count": len(batch.alerts) if batch.alerts is not None else 0,
                         "offset_ranges": offsets_md, "topic": target.streams.alerts_topic,
                         "table": f"{SCHEMA}.alerts"}
    if "predictions" in target.keys:
        status = dict(batch.scored.status) if batch.scored is not None else {"predictions": 0}
        out["lake"]["predictions_status"] = str(status.get("publish_error") or status.get("champion", "n/a"))
        out["predictions"] = {"dagster/row_count": int(status.pop("predictions", 0)), "offset_ranges": offsets_md,
                              **{k: (v if isinstance(v, (int, float)) else str(v)) for k, v in status.items()},
                              "topic": str(target.streams.predictions_topic), "table": f"{SCHEMA}.predictions"}
    return out
