"""Continuous mode: a long-lived consumer inside one Dagster run per shard.

Why a run: Dagster starts it (the stream's sensor launches one run per shard and launches a new one
when it is gone), shows it (each durable batch is an ``AssetMaterialization`` of the stream's assets,
logged by the run that did the work, with its ranges and counts; the consumer lag is an
``AssetObservation`` of the topic), and stops it (terminating the run from the UI interrupts the run
process). No scheduler outside Dagster, and no per-batch run overhead: a batch is due every
``max_wait`` seconds or ``max_messages`` messages, whichever comes first.

Each batch goes through ``process_batch``, the same exactly-once protocol as a micro-batch. A
termination request arriving during a batch is held until the batch is durable and its
materialisations are written (a second one abandons it, which is safe: nothing unrecorded is ever
committed); one arriving while waiting for messages stops the consumer at once, dropping only
messages that were never recorded.

A batch is due ``max_wait`` seconds after its first message was *produced* (its Kafka timestamp),
not after it was polled, so messages that arrived while the previous batch was being made do not
wait a whole ``max_wait`` more; under a backlog, polls fill a batch to ``max_messages`` first.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import dagster as dg

from platform_assets.streaming.batch import StreamTarget, batch_metadata, process_batch
from platform_assets.streaming.publish import Publisher
from resources.kafka import KafkaMessage, KafkaResource, KafkaUnavailable, OffsetRange
from resources.lake import LakeResource
from resources.stream_store import StreamStore

OBSERVE_EVERY_S = 10.0  # consumer lag as an observation of the topic asset
DISCOVER_EVERY_S = 30.0  # partitions added to the topic join the shard that owns them
# A poll returns when it has its messages or at its timeout; short polls let a batch's clock start when
# its first message arrives (a 1 s poll under light traffic started it up to 1 s late).
POLL_SLICE_S = 0.1
POLL_MESSAGES = 10_000  # at most per poll


def oldest_age(messages: Sequence[KafkaMessage], now: Callable[[], float] = time.time) -> float:
    """Seconds since the oldest of ``messages`` was produced (its Kafka timestamp); 0 without one."""
    stamps = [m.timestamp_ms for m in messages if m.timestamp_ms and m.timestamp_ms > 0]
    return max(0.0, now() - min(stamps) / 1000) if stamps else 0.0


class Batcher:
    """Holds polled messages until a batch is due: ``max_messages`` held, or the oldest has waited
    ``max_wait`` seconds. Pure (the clock is injected), so the rule is unit-tested."""

    def __init__(self, max_wait: float, max_messages: int, clock: Callable[[], float] = time.monotonic):
        self.max_wait, self.max_messages, self.clock = max_wait, max_messages, clock
        self.messages: list[KafkaMessage] = []
        self.first_at: float | None = None

    def add(self, messages: Sequence[KafkaMessage], age: float = 0.0) -> None:
        """``age``: seconds the oldest of ``messages`` has already waited (since it was produced), so
        a batch is due ``max_wait`` after its first message was produced, not after it was polled:
        messages that arrived while the previous batch was being made do not wait a full
        ``max_wait`` more. Capped at ``max_wait`` (clocks of producers may be off)."""
        if messages and self.first_at is None:
            self.first_at = self.clock() - min(max(age, 0.0), self.max_wait)
        self.messages.extend(messages)

    def room(self) -> int:
        return max(0, self.max_messages - len(self.messages))

    def due(self) -> bool:
        return bool(self.messages) and (len(self.messages) >= self.max_messages
                                        or self.clock() - self.first_at >= self.max_wait)

    def poll_timeout(self) -> float:
        """How long the next poll may block without making a due batch late."""
        if self.first_at is None:
            return self.max_wait
        return max(0.0, self.first_at + self.max_wait - self.clock())

    def take(self) -> list[KafkaMessage]:
        """The next batch (at most ``max_messages``); what is left is already late, so stays due."""
        batch, self.messages = self.messages[:self.max_messages], self.messages[self.max_messages:]
        if not self.messages:
            self.first_at = None
        return batch


def batch_ranges(messages: Sequence[KafkaMessage], positions: dict[int, int]) -> list[OffsetRange]:
    """Per partition, from where the consumer stood to just after the last message taken. Starting at
    the position rather than the first offset keeps ranges contiguous over offsets that carry no
    message (transaction markers, compaction)."""
    last: dict[int, int] = {}
    for m in messages:
        last[m.partition] = max(last.get(m.partition, -1), m.offset)
    return [OffsetRange(p, positions[p], end + 1) for p, end in sorted(last.items())]


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM until the block is done, then deliver one SIGINT to the handler that was in
    place (Dagster's, which raises ``DagsterExecutionInterruptedError``). A second signal during the
    block is delivered at once. Only the main thread can handle signals: elsewhere this does nothing."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def hold(signo, frame):
        received.append(signo)
        if len(received) > 1:
            handler = previous[signal.SIGINT]
            if callable(handler):
                handler(signal.SIGINT, frame)
            raise KeyboardInterrupt

    for s in previous:
        signal.signal(s, hold)
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        signal.raise_signal(signal.SIGINT)


def _materializations(target: StreamTarget, metadata: dict[str, dict]) -> list[dg.AssetMaterialization]:
    out = []
    for part, md in metadata.items():
        if part in ("dead_letters", "alerts", "predictions") and not md["dagster/row_count"]:
            continue  # nothing written to that table by this batch
        out.append(dg.AssetMaterialization(asset_key=target.keys[part], metadata=md))
    return out


def consume(context: dg.AssetExecutionContext, target: StreamTarget, shard: int, parallelism: int, *,
            kafka: KafkaResource, lake: LakeResource, stream_store: StreamStore, group: str,
            topic_key: dg.AssetKey, stop: Callable[[], bool] = lambda: False,
            predictor=None) -> Iterator[dg.AssetMaterialization | dg.AssetObservation]:
    """Consume the shard's partitions until interrupted (or ``stop()``), yielding each batch's events."""
    from confluent_kafka import KafkaError, TopicPartition

    stream, topic = target.stream, target.stream.topic
    mine = lambda parts: sorted(p for p in parts if p % parallelism == shard)
    log = context.log
    run_id = context.run_id

    publisher = Publisher(kafka)  # one producer for the consumer's life (alerts, predictions)
    if predictor is not None:
        predictor.use_publisher(publisher)

    def durable_batch(messages, ranges, commit):
        # A termination waits for the batch AND its materialisations (written to the instance while this
        # generator is suspended in the yield), so every durable batch shows in the UI.
        with interrupts_deferred():
            batch = process_batch(target, messages, ranges, kafka=kafka, lake=lake, stream_store=stream_store,
                                  commit=commit, run_id=run_id, predictor=predictor, publisher=publisher)
            yield from _materializations(target, batch_metadata(target, batch, lake))

    with contextlib.ExitStack() as stack:
        partitions, pending = claim_partitions(stack, stream_store, kafka, topic, mine, log)
        if pending:
            yield from durable_batch(kafka.read_ranges(topic, pending), pending,
                                     lambda offsets: kafka.commit(group, topic, offsets))

        consumer = kafka.consumer(group, **{"enable.partition.eof": False, "fetch.wait.max.ms": 100})
        stack.callback(consumer.close)

        def start_positions(parts):
            durable = stream_store.durable_ends(topic)
            out = {}
            for p in parts:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=kafka.timeout_seconds)
                fresh = high if stream.start_from == "latest" and not durable else low
                out[p] = max(durable.get(p, fresh), low)
            return out

        positions = start_positions(partitions)
        consumer.assign([TopicPartition(topic, p, o) for p, o in positions.items()])
        log.info(f"stream {target.name} shard {shard}/{parallelism}: consuming partitions {partitions} "
                 f"from {positions}, a batch every {stream.max_wait:g} s or {stream.max_messages} messages")

        commit = committer(consumer, topic, log)

        batcher = Batcher(stream.max_wait, stream.max_messages)
        observed = discovered = time.monotonic()
        totals = {"batches": 0, "messages": 0}
        while not stop():
            while True:  # under a backlog, fill the batch before it is judged due (fewer, larger batches)
                asked = max(1, min(batcher.room(), POLL_MESSAGES))
                polled = consumer.consume(num_messages=asked, timeout=min(batcher.poll_timeout(), POLL_SLICE_S))
                messages = []
                for msg in polled:
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise KafkaUnavailable(f"topic {topic}: {err}")
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning(f"topic {topic}: {err} (the client retries)")
                        continue
                    messages.append(KafkaMessage(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                                 msg.timestamp()[1]))
                batcher.add(messages, age=oldest_age(messages))
                if len(polled) < asked or not batcher.room():
                    break
            while batcher.due():
                messages = batcher.take()
                ranges = batch_ranges(messages, positions)
                yield from durable_batch(messages, ranges, commit)
                positions.update({r.partition: r.end for r in ranges})
                totals["batches"] += 1
                totals["messages"] += len(messages)
            now = time.monotonic()
            if now - discovered >= DISCOVER_EVERY_S:
                discovered = now
                added = [p for p in mine(kafka.partitions(topic)) if p not in positions]
                if added:
                    stack.enter_context(stream_store.partitions_lock(topic, added))
                    new = start_positions(added)
                    consumer.incremental_assign([TopicPartition(topic, p, o) for p, o in new.items()])
                    positions.update(new)
                    partitions = sorted(positions)
                    log.info(f"partitions {added} added to the topic: consuming them from {new}")
            if now - observed >= OBSERVE_EVERY_S:
                observed = now
                yield observe_lag(consumer, topic, positions, topic_key, target, shard, totals)
                log.info(f"shard {shard}: {totals['batches']} batches, {totals['messages']} messages so far")


def claim_partitions(stack: contextlib.ExitStack, stream_store: StreamStore, kafka: KafkaResource, topic: str,
                     mine: Callable[[list[int]], list[int]], log) -> tuple[list[int], list[OffsetRange]]:
    """The start of every consumer, of either engine: the shard's partitions locked against any other
    consumer (held until ``stack`` closes), one pinned warehouse connection, and the ranges a consumer
    that died between its intent and its transaction left behind, to redo exactly, first."""
    stream_store.ensure_schema()
    partitions = mine(kafka.partitions(topic))
    stack.enter_context(stream_store.partitions_lock(
        topic, partitions, on_wait=lambda p: log.info(f"partition {p}: waiting for the previous consumer")))
    stack.enter_context(stream_store.pinned())
    pending = stream_store.pending_intents(topic, partitions)
    if pending:
        log.info(f"redoing unrecorded ranges {pending} left by a previous consumer")
    return partitions, pending


def committer(consumer, topic: str, log) -> Callable[[dict[int, int]], None]:
    """The offset commit after a durable batch: a failure is only a warning (the data is durable, the
    durable table is the truth, and the next commit catches up)."""
    from confluent_kafka import KafkaException, TopicPartition

    def commit(offsets: dict[int, int]) -> None:
        try:
            consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
        except KafkaException as exc:
            log.warning(f"offset commit failed (lag monitoring only): {exc}")
    return commit


def observe_lag(consumer, topic: str, positions: dict[int, int], topic_key: dg.AssetKey, target: StreamTarget,
                shard: int, totals: dict) -> dg.AssetObservation:
    """Messages on the shard's partitions not yet durable (high watermark − durable position).

    Observation only: while the broker is unreachable the lag is reported unknown (-1) instead of
    ending the consumer run, which would cost a restart per broker blip and protect nothing."""
    from confluent_kafka import KafkaException, TopicPartition

    lag: dict[int, int] = {}
    for p, pos in positions.items():
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
        except KafkaException:
            lag[p] = -1
            continue
        lag[p] = max(0, high - pos)
    known = [v for v in lag.values() if v >= 0]
    return dg.AssetObservation(asset_key=topic_key, metadata={
        "consumer_lag": sum(known) if len(known) == len(lag) else -1,
        "lag_by_partition": dg.MetadataValue.json({str(p): v for p, v in lag.items()}),
        "stream": target.name, "shard": shard, "mode": "continuous", "batches_so_far": totals["batches"],
        "messages_so_far": totals["messages"]})


def stop_consumers(instance: dg.DagsterInstance, wait_seconds: float = 60.0) -> list[str]:
    """Terminate every continuous consumer run in flight and wait until they have stopped; the ids.

    For whoever stops the platform (``make demo`` on Ctrl-C, after stopping the daemon so that no
    sensor starts them again): a code server does not exit while a run it launched is still
    executing, and a consumer run never ends on its own."""
    running = [r for r in instance.get_runs(dg.RunsFilter(tags={"stream/mode": "continuous"}))
               if not r.is_finished]
    for run in running:
        instance.run_launcher.terminate(run.run_id)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline and any(not instance.get_run_by_id(r.run_id).is_finished for r in running):
        time.sleep(0.5)
    return [r.run_id for r in running]
