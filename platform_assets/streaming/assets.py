"""Stream assets: per stream, one multi-asset over the lake table, dead letters, windows and alerts.

One step rather than a chain because the order of writes is the exactly-once protocol
(platform_assets/streaming/batch.py) and a step costs seconds of latency. The stream's ``mode``
chooses its body:

- ``micro_batch``: one run per batch; the sensor passes the exact offset ranges in the run config,
  or (a standby run, sensors/kafka_streams.py) the run warms up, waits for its shard's lock and
  takes the shard's backlog then;
- ``continuous``: one long-running run per shard (platform_assets/streaming/continuous.py) that
  makes a durable batch every ``max_wait`` seconds or ``max_messages`` messages and reports each
  one as a materialisation of these assets.
"""

import posixpath

import dagster as dg
import pandas as pd
from pydantic import Field

from platform_assets.sources.config import Catalogue
from platform_assets.streaming import compaction, continuous
from platform_assets.streaming.batch import StreamTarget, batch_metadata, process_batch
from platform_assets.streaming.config import StreamCatalogue, StreamConfig
from platform_assets.streaming.predict import StreamPredictor
from resources.kafka import KafkaResource, OffsetRange
from resources.lake import LakeResource
from resources.mlflow_tracking import MlflowResource
from resources.online_store import OnlineStoreResource
from resources.spark import SparkResource
from resources.stream_store import StreamStore, stats_view

MODE_TAG = "stream/mode"


class RangeConfig(dg.Config):
    partition: int = Field(ge=0)
    start: int = Field(ge=0, description="first offset (inclusive)")
    end: int = Field(ge=0, description="last offset (exclusive)")


class MicroBatchConfig(dg.Config):
    ranges: list[RangeConfig] = Field(default_factory=list, description="offset ranges to ingest, one per "
                                      "partition; none: a standby run, which takes its shard's backlog when its turn comes")
    shard: int = Field(default=0, ge=0, description="standby: its partitions are those with p % parallelism == shard")
    parallelism: int = Field(default=1, gt=0)


# How long a standby run waits for its shard's lock (the batch before it) before it gives up (it
# has named nothing yet, so nothing is redone; the sensor starts another).
TURN_WAIT_S = 300.0


class ConsumerConfig(dg.Config):
    shard: int = Field(default=0, ge=0, description="consume the partitions p with p % parallelism == shard")
    parallelism: int = Field(default=1, gt=0)


def topic_key(topic: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topic.replace(".", "_").replace("-", "_")])


def stream_keys(name: str, stream: StreamConfig) -> dict[str, dg.AssetKey]:
    keys = {"lake": dg.AssetKey(["lake", "stream", name]),
            "dead_letters": dg.AssetKey(["warehouse", "streaming", f"{name}_dead_letters"])}
    if stream.windows:
        keys["windows"] = dg.AssetKey(["warehouse", "streaming", stats_view(name)])
    if stream.anomalies:
        keys["alerts"] = dg.AssetKey(["warehouse", "streaming", f"{name}_alerts"])
    if stream.predictions:
        keys["predictions"] = dg.AssetKey(["warehouse", "streaming", f"{name}_predictions"])
    return keys


def stream_predictor(target: StreamTarget, *, kafka: KafkaResource, lake: LakeResource, stream_store: StreamStore,
                     mlflow: MlflowResource, online_store: OnlineStoreResource, log=None) -> StreamPredictor | None:
    """The stream's predictor when it declares ``predictions`` (platform_assets/streaming/predict.py)."""
    if not target.stream.predictions:
        return None
    return StreamPredictor(target.name, target.stream, lake=lake, stream_store=stream_store, mlflow=mlflow,
                           online_store=online_store, kafka=kafka, predictions_topic=target.streams.predictions_topic,
                           alerts_topic=target.streams.alerts_topic, log=log)


def group_id(name: str) -> str:
    return f"platform.{name}"


def build_stream_assets(name: str, stream: StreamConfig, sources: Catalogue, streams: StreamCatalogue):
    keys = stream_keys(name, stream)
    target = StreamTarget(name, stream, streams, streams.contract(name, sources), keys)
    topic = topic_key(stream.topic)
    descriptions = {
        "lake": f"Messages of {stream.topic} that meet the {stream.contract_of} contract, Parquet per event hour.",
        "dead_letters": f"Messages of {stream.topic} that broke the contract: raw bytes, partition, offset, reason.",
        "windows": f"{stream.windows.minutes if stream.windows else ''}-minute tumbling windows per {stream.key} (a view over exactly-once partials).",
        "alerts": f"Readings more than N standard deviations from their {stream.key}'s recent mean; also sent to {streams.alerts_topic}.",
        "predictions": f"Scores of the {stream.predictions.model if stream.predictions else ''} champion on online "
                       f"features from the stream (also in Redis), traced to offsets and model versions; also sent "
                       f"to {streams.predictions_topic}.",
    }
    kinds = {"lake": {"parquet"}, "dead_letters": {"postgres"}, "windows": {"postgres"}, "alerts": {"postgres", "kafka"},
             "predictions": {"postgres", "kafka", "redis"}}
    # Skippable in micro-batch mode: a standby run that finds no backlog materialises nothing.
    specs = [
        dg.AssetSpec(key, deps=[topic] if part == "lake" else [keys["lake"]], group_name="streaming",
                     description=descriptions[part], kinds=kinds[part], skippable=stream.mode != "continuous")
        for part, key in keys.items()
    ]
    if stream.mode == "continuous":
        return _continuous_asset(target, specs)
    checks = [
        dg.AssetCheckSpec("ranges_contiguous", asset=keys["lake"], blocking=True,
                          description="Each range starts where the last durable batch ended: no gap, no overlap."),
        dg.AssetCheckSpec("dead_letter_rate", asset=keys["lake"], description="At most 5% of messages dead-lettered."),
    ]

    @dg.multi_asset(name=f"stream_{name}", specs=specs, check_specs=checks, op_tags={"stream": name})
    def _micro_batch(context: dg.AssetExecutionContext, config: MicroBatchConfig, kafka: KafkaResource,
                     lake: LakeResource, stream_store: StreamStore, mlflow: MlflowResource,
                     online_store: OnlineStoreResource):
        predictor = stream_predictor(target, kafka=kafka, lake=lake, stream_store=stream_store,
                                     mlflow=mlflow, online_store=online_store, log=context.log)

        def ingest(ranges: list[OffsetRange]):
            messages = kafka.read_ranges(stream.topic, ranges)
            return process_batch(target, messages, ranges, kafka=kafka, lake=lake, stream_store=stream_store,
                                 commit=lambda offsets: kafka.commit(group_id(name), stream.topic, offsets),
                                 run_id=context.run_id, predictor=predictor)

        if config.ranges:  # planned by the sensor (a first batch, or a failed batch retried unchanged)
            ranges = [OffsetRange(r.partition, r.start, r.end) for r in config.ranges]
            durable = stream_store.durable_ends(stream.topic)
            gaps = {r.partition: (durable.get(r.partition), r.start) for r in ranges
                    if durable.get(r.partition) is not None and durable[r.partition] != r.start}
            if gaps:
                raise dg.Failure(f"stream {name}: requested ranges do not continue the durable offsets "
                                 f"(partition: (durable end, requested start)) {gaps}", allow_retries=False)
            batch = ingest(ranges)
        else:  # a standby run: warm up while the shard's batch before it works, then take the backlog
            warm_up(predictor, context.log)
            parts = [p for p in kafka.watermarks(stream.topic) if p % config.parallelism == config.shard]
            with stream_store.partitions_lock(stream.topic, parts, wait_seconds=TURN_WAIT_S):
                from sensors.kafka_streams import standby_ranges  # the sensor's own planning rules

                durable = stream_store.durable_ends(stream.topic)
                marks = {p: m for p, m in kafka.watermarks(stream.topic).items() if p in parts}
                ranges = standby_ranges(stream, durable, marks, stream_store.pending_intents(stream.topic, parts))
                batch = ingest(ranges) if ranges else None
            if batch is None:
                context.log.info(f"stream {name}: shard {config.shard}/{config.parallelism} had no backlog "
                                 "when this standby run's turn came: nothing to do")
                yield dg.AssetCheckResult(check_name="ranges_contiguous", asset_key=keys["lake"], passed=True,
                                          metadata={"messages": 0})
                yield dg.AssetCheckResult(check_name="dead_letter_rate", asset_key=keys["lake"], passed=True,
                                          severity=dg.AssetCheckSeverity.WARN, metadata={"messages": 0})
                return
        for part, metadata in batch_metadata(target, batch, lake).items():
            yield dg.MaterializeResult(asset_key=keys[part], metadata=metadata)
        yield dg.AssetCheckResult(check_name="ranges_contiguous", asset_key=keys["lake"], passed=True,
                                  metadata={"durable_before": dg.MetadataValue.json({str(k): v for k, v in durable.items()})})
        rate = len(batch.dead) / batch.messages if batch.messages else 0.0
        yield dg.AssetCheckResult(check_name="dead_letter_rate", asset_key=keys["lake"], passed=rate <= 0.05,
                                  severity=dg.AssetCheckSeverity.WARN, metadata={"rate": round(rate, 5)})
        context.log.info(f"stream {name}: {batch.messages} messages, {len(batch.dead)} dead letters, "
                         f"{len(batch.files)} files")

    return _micro_batch


def warm_up(predictor: StreamPredictor | None, log) -> None:
    """Load the champion and the lake context before the run's turn (seconds in a fresh process),
    so a standby run's batch does not wait for them. A failure is the batch's to report."""
    if predictor is None:
        return
    try:
        predictor.current_champion()
        predictor.context()
    except Exception as exc:  # noqa: BLE001 (prepare loads them again and fails or degrades as usual)
        log.warning(f"warm-up before the batch failed ({type(exc).__name__}: {exc}); the batch tries again")


def _continuous_asset(target: StreamTarget, specs: list[dg.AssetSpec]):
    """The long-running body: never returns on its own; a termination request ends it (run canceled)."""
    name, stream = target.name, target.stream

    @dg.multi_asset(name=f"stream_{name}", specs=specs, op_tags={"stream": name, MODE_TAG: "continuous"},
                    description=f"Continuous consumer of {stream.topic}: a durable batch every {stream.max_wait:g} s "
                                f"or {stream.max_messages} messages; runs until terminated.")
    def _consume(context: dg.AssetExecutionContext, config: ConsumerConfig, kafka: KafkaResource,
                 lake: LakeResource, stream_store: StreamStore, mlflow: MlflowResource,
                 online_store: OnlineStoreResource, spark: SparkResource):
        predictor = stream_predictor(target, kafka=kafka, lake=lake, stream_store=stream_store, mlflow=mlflow,
                                     online_store=online_store, log=context.log)
        if stream.engine == "spark":  # Spark Structured Streaming, the same process_batch
            from platform_assets.streaming import spark_engine

            yield from spark_engine.consume(context, target, config.shard, config.parallelism, kafka=kafka,
                                            lake=lake, stream_store=stream_store, spark=spark, group=group_id(name),
                                            topic_key=topic_key(stream.topic), predictor=predictor)
            return
        yield from continuous.consume(context, target, config.shard, config.parallelism, kafka=kafka, lake=lake,
                                      stream_store=stream_store, group=group_id(name),
                                      topic_key=topic_key(stream.topic), predictor=predictor)

    return _consume


def compaction_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["lake", "stream", f"{name}_compaction"])


def build_compaction_asset(name: str, stream: StreamConfig) -> dg.AssetsDefinition:
    """One partition per event hour: rewrites the closed hour's files into one (compaction.py)."""
    cfg = stream.compaction
    lake_key = stream_keys(name, stream)["lake"]
    base = posixpath.join(*lake_key.path[1:])

    @dg.asset(key=compaction_key(name), deps=[lake_key], group_name="streaming", kinds={"parquet"},
              partitions_def=dg.HourlyPartitionsDefinition(start_date=cfg.start),
              automation_condition=dg.AutomationCondition.on_cron(cfg.cron),
              description=f"Each closed event hour of {lake_key.to_user_string()} rewritten into one large Parquet "
                          f"file, atomically, rows unchanged; the offset ranges it covers in the file's metadata.")
    def _compact(context: dg.AssetExecutionContext, lake: LakeResource, stream_store: StreamStore):
        window = context.partition_time_window
        hour = pd.Timestamp(window.start).tz_convert("UTC")
        closes = pd.Timestamp(window.end).tz_convert("UTC") + pd.Timedelta(minutes=cfg.grace_minutes)
        if pd.Timestamp.now(tz="UTC") < closes:
            raise dg.Failure(f"hour {hour:%Y-%m-%d %H}:00 is still open until {closes:%H:%M} UTC "
                             f"(grace_minutes={cfg.grace_minutes}): nothing compacted", allow_retries=False)
        done = compaction.compact_hour(lake, compaction.hour_dir(base, hour), stream_store.recorded_ranges(stream.topic))
        return dg.MaterializeResult(metadata={
            "file": done.file or "nothing to compact", "dagster/row_count": done.rows,
            "files_replaced": done.files_replaced, "offset_ranges": dg.MetadataValue.json(done.ranges),
            "files_in_flight_left": done.skipped_in_flight, "path": dg.MetadataValue.path(lake.uri(done.hour_dir))})

    return _compact


def build_streaming_definitions(sources: Catalogue, streams: StreamCatalogue):
    """Topic specs (and compaction assets), the stream assets and one job per stream (in-process: a
    batch is one step). The second and third lists line up with the catalogue's streams."""
    topic_specs = [dg.AssetSpec(topic_key(t), group_name="streaming", kinds={"kafka"},
                                description=f"Kafka topic {t} ({spec.partitions} partitions).")
                   for t, spec in streams.topics.items() if t not in (streams.alerts_topic, streams.predictions_topic)]
    alert_keys = [stream_keys(n, s)["alerts"] for n, s in streams.streams.items() if s.anomalies]
    topic_specs.append(dg.AssetSpec(topic_key(streams.alerts_topic), deps=alert_keys, group_name="streaming",
                                    kinds={"kafka"}, description="Kafka topic of anomaly alerts."))
    if streams.predictions_topic:
        scored = [stream_keys(n, s)["predictions"] for n, s in streams.streams.items() if s.predictions]
        topic_specs.append(dg.AssetSpec(topic_key(streams.predictions_topic), deps=scored, group_name="streaming",
                                        kinds={"kafka"}, description="Kafka topic of predictions on the streams."))
    assets, jobs = [], []
    for name, stream in streams.streams.items():
        asset = build_stream_assets(name, stream, sources, streams)
        assets.append(asset)
        what = (f"The continuous consumer of stream {name}, one run per shard (launched and restarted by its sensor)."
                if stream.mode == "continuous" else f"One micro-batch of stream {name} (launched by its sensor).")
        jobs.append(dg.define_asset_job(f"stream_{name}_job", selection=dg.AssetSelection.assets(asset),
                                        executor_def=dg.in_process_executor,
                                        tags={"stream": name, MODE_TAG: stream.mode}, description=what))
        if stream.compaction:
            topic_specs.append(build_compaction_asset(name, stream))
    return topic_specs, assets, jobs
