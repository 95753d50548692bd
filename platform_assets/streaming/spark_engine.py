"""Continuous mode on Spark Structured Streaming (``engine: spark`` in streams.yaml).

Spark reads the topic (the ``spark-sql-kafka-0-10`` source, over the same SASL_SSL login as every
other client) and hands each micro-batch to ``foreachBatch``; the batch's key, value, partition,
offset and timestamp are collected to the driver and go through ``process_batch``, the same
validation, dead letters, windows, anomaly rules and exactly-once bookkeeping as the Python
consumer (``continuous.py``). So the two engines write the same rows; Spark brings the reading
(executors fetch from the brokers) and its operations model, not a second implementation.

The durable table (``streaming.batches``) is the truth, the checkpoint only a cache: every start
reads the durable ends and hands them to Spark as ``startingOffsets``, with a checkpoint folder of
this run's own that is deleted at the end (a checkpoint left by an earlier run could point past
what was recorded, or before it). Ranges run from the durable position to the last message taken,
as in the Python consumer, so they tile each partition whatever Spark's own batch ends were.

Stopping (a termination request, or ``stop()``): a batch in flight is let finish and become
durable, then the query is stopped. A run killed mid-batch leaves an intent that the next start,
on either engine, redoes exactly.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import dagster as dg

from platform_assets.streaming.batch import StreamTarget, batch_metadata, process_batch
from platform_assets.streaming.continuous import (
    DISCOVER_EVERY_S,
    OBSERVE_EVERY_S,
    _materializations,
    batch_ranges,
    claim_partitions,
    committer,
)
from resources.kafka import KafkaMessage, KafkaResource
from resources.lake import LakeResource
from resources.spark import SparkResource, kafka_options
from resources.stream_store import StreamStore

STOP_WAIT_S = 120.0  # how long a stop waits for the batch in flight to become durable
CONNECTOR = "spark-sql-kafka-0-10"


class SparkStreamFailed(RuntimeError):
    pass


def _messages(frame) -> list[KafkaMessage]:
    """A micro-batch's records on the driver, in (partition, offset) order, as the Python consumer's."""
    import pyarrow.compute as pc

    table = frame.selectExpr("partition", "offset", "key", "value", "unix_millis(timestamp) AS ts").toArrow()
    if table.num_rows == 0:
        return []
    table = table.take(pc.sort_indices(table, [("partition", "ascending"), ("offset", "ascending")]))
    cols = [table.column(c).to_pylist() for c in ("partition", "offset", "key", "value", "ts")]
    return [KafkaMessage(int(p), int(o), k, v, int(ts)) for p, o, k, v, ts in zip(*cols)]


def start_positions(kafka: KafkaResource, stream_store: StreamStore, target: StreamTarget,
                    partitions: list[int]) -> dict[int, int]:
    """Where each partition starts: its durable end (the truth), never before the low watermark; a
    partition with nothing recorded starts as ``start_from`` says (as in the Python consumer)."""
    topic = target.stream.topic
    durable = stream_store.durable_ends(topic)
    marks = kafka.watermarks(topic)
    out = {}
    for p in partitions:
        low, high = marks[p]
        fresh = high if target.stream.start_from == "latest" and not durable else low
        out[p] = max(durable.get(p, fresh), low)
    return out


def consume(context: dg.AssetExecutionContext, target: StreamTarget, shard: int, parallelism: int, *,
            kafka: KafkaResource, lake: LakeResource, stream_store: StreamStore, spark: SparkResource, group: str,
            topic_key: dg.AssetKey, stop: Callable[[], bool] = lambda: False,
            predictor=None) -> Iterator[dg.AssetMaterialization | dg.AssetObservation]:
    """Consume the shard's partitions with Spark until interrupted (or ``stop()``), yielding each
    batch's events; the same contract as ``continuous.consume``."""
    stream, topic = target.stream, target.stream.topic
    mine = lambda parts: sorted(p for p in parts if p % parallelism == shard)
    log, run_id = context.log, context.run_id
    if spark.master.startswith("sc://"):
        raise SparkStreamFailed("engine: spark needs a classic Spark session (foreachBatch calls back into this "
                                "process); SPARK_MASTER is Spark Connect")
    if not any(CONNECTOR in jar for jar in spark.jars()) and not spark.extra_conf.get("spark.jars.packages"):
        raise SparkStreamFailed(f"engine: spark needs the {CONNECTOR} connector on spark.jars: run "
                                "'deploy/local/services.sh install' (it fills .local/spark-jars) or set SPARK_JARS_DIR")

    def events(batch) -> list:
        metadata = batch_metadata(target, batch, lake)
        metadata["lake"]["engine"] = "spark"
        return _materializations(target, metadata)

    with contextlib.ExitStack() as stack:
        partitions, pending = claim_partitions(stack, stream_store, kafka, topic, mine, log)
        if pending:  # a consumer (of either engine) died between its intent and its transaction
            yield from events(process_batch(target, kafka.read_ranges(topic, pending), pending, kafka=kafka,
                                            lake=lake, stream_store=stream_store, run_id=run_id, predictor=predictor,
                                            commit=lambda offsets: kafka.commit(group, topic, offsets)))

        commit_consumer = kafka.consumer(group)
        stack.callback(commit_consumer.close)
        commit = committer(commit_consumer, topic, log)

        session = spark.session
        checkpoints = tempfile.mkdtemp(prefix=f"spark-stream-{target.name}-{shard}-")
        stack.callback(shutil.rmtree, checkpoints, True)
        done: queue.Queue = queue.Queue()  # events of durable batches, for the main thread to yield
        failure: list[BaseException] = []
        busy, stopping = threading.Lock(), threading.Event()
        totals = {"batches": 0, "messages": 0}
        positions: dict[int, int] = {}

        def on_batch(frame, batch_id: int) -> None:
            """foreachBatch, on Spark's callback thread: one durable batch (or nothing when stopping)."""
            with busy:
                if stopping.is_set() or failure:
                    return
                try:
                    messages = _messages(frame)
                    if not messages:
                        return
                    ranges = batch_ranges(messages, positions)
                    batch = process_batch(target, messages, ranges, kafka=kafka, lake=lake, stream_store=stream_store,
                                          commit=commit, run_id=run_id, predictor=predictor)
                    positions.update({r.partition: r.end for r in ranges})
                    totals["batches"] += 1
                    totals["messages"] += len(messages)
                    done.put(events(batch))
                except BaseException as exc:  # noqa: BLE001 (re-raised by the main thread, with its own type)
                    failure.append(exc)
                    raise SparkStreamFailed(f"batch {batch_id}: {type(exc).__name__}: {exc}") from None

        def start_query(parts: list[int]):
            positions.clear()
            positions.update(start_positions(kafka, stream_store, target, parts))
            reader = (session.readStream.format("kafka").options(**kafka_options(kafka))
                      .option("assign", json.dumps({topic: parts}))
                      .option("startingOffsets", json.dumps({topic: {str(p): o for p, o in positions.items()}}))
                      .option("maxOffsetsPerTrigger", str(stream.max_messages))
                      .option("groupIdPrefix", f"{group}.spark"))  # the platform user's groups: platform.*
            query = (reader.load().writeStream.queryName(f"stream_{target.name}_{shard}_{int(time.time())}")
                     .foreachBatch(on_batch).trigger(processingTime=f"{stream.max_wait:g} seconds")
                     .option("checkpointLocation", tempfile.mkdtemp(dir=checkpoints)).start())
            log.info(f"stream {target.name} shard {shard}/{parallelism} on Spark: partitions {parts} from "
                     f"{dict(positions)} (durable ends), a batch every {stream.max_wait:g} s or at most "
                     f"{stream.max_messages} messages")
            return query

        def stop_query(query) -> None:
            """Let the batch in flight become durable, then stop Spark's query."""
            stopping.set()
            if busy.acquire(timeout=STOP_WAIT_S):
                busy.release()
            with contextlib.suppress(Exception):
                query.stop()
            stopping.clear()

        query = start_query(partitions)
        stack.callback(lambda: stop_query(query))
        observed = discovered = time.monotonic()
        while not stop():
            with contextlib.suppress(queue.Empty):
                while True:
                    yield from done.get_nowait()
            if failure:
                raise failure[0]
            if not query.isActive:
                raise SparkStreamFailed(f"stream {target.name}: Spark's query ended: {query.exception()}")
            query.awaitTermination(0.2)
            now = time.monotonic()
            if now - discovered >= DISCOVER_EVERY_S:
                discovered = now
                added = [p for p in mine(kafka.partitions(topic)) if p not in partitions]
                if added:  # restart on all partitions, from the durable ends again
                    stack.enter_context(stream_store.partitions_lock(topic, added))
                    stop_query(query)
                    partitions = sorted([*partitions, *added])
                    query = start_query(partitions)
            if now - observed >= OBSERVE_EVERY_S:
                observed = now
                yield observe_lag(kafka, topic, dict(positions), topic_key, target, shard, totals)
                log.info(f"shard {shard}: {totals['batches']} batches, {totals['messages']} messages so far (Spark)")
        stop_query(query)
        with contextlib.suppress(queue.Empty):
            while True:
                yield from done.get_nowait()
        if failure:
            raise failure[0]


def observe_lag(kafka: KafkaResource, topic: str, positions: dict[int, int], topic_key: dg.AssetKey,
                target: StreamTarget, shard: int, totals: dict) -> dg.AssetObservation:
    """Messages on the shard's partitions not yet durable (high watermark − durable position)."""
    marks = kafka.watermarks(topic)
    lag = {p: max(0, marks[p][1] - pos) for p, pos in positions.items() if p in marks}
    return dg.AssetObservation(asset_key=topic_key, metadata={
        "consumer_lag": sum(lag.values()), "lag_by_partition": dg.MetadataValue.json({str(p): v for p, v in lag.items()}),
        "stream": target.name, "shard": shard, "mode": "continuous", "engine": "spark",
        "batches_so_far": totals["batches"], "messages_so_far": totals["messages"]})
