"""Kafka at scale against the real broker: partition counts per environment, parallel shards, and
partitions added while the platform runs (every client over the platform's settings: SASL_SSL
locally; the broker's security itself is tests/integration/test_kafka_broker.py's).

Exactly once is checked by (partition, offset): every produced message is in the lake or among the
dead letters once, ``streaming.batches`` tiles each partition from 0 to its high watermark without
gap or overlap, and the consumer group has committed up to the end.
"""

from __future__ import annotations

import itertools
import uuid

import dagster as dg
import pytest

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.config import StreamCatalogue, TopicSpec, apply_env_overrides, load_streams
from platform_assets.streaming.produce import FleetStream
from platform_assets.streaming.topics import ensure_topics
from resources import build_resources
from resources.kafka import OffsetRange
from resources.stream_store import StreamStore
from tests.integration.streaming_harness import (
    STREAM,
    Harness,
    _failure,
    assert_exactly_once,
    drop_topics,
    renamed,
    send,
)

pytestmark = [pytest.mark.integration]


def scaled(partitions: int, parallelism: int) -> StreamCatalogue:
    """The catalogue on topics of this test's own, sized for it, batches launched at once."""
    base = renamed(load_streams(load_catalogue()), uuid.uuid4().hex[:8])
    stream = base.streams[STREAM]
    eager = stream.trigger.model_copy(update={"min_messages": 1})
    return base.model_copy(update={
        "topics": {**base.topics, stream.topic: TopicSpec(partitions=partitions)},
        "streams": {**base.streams, STREAM: stream.model_copy(update={"parallelism": parallelism, "trigger": eager})},
    })


@pytest.fixture()
def make_harness(platform, tmp_path, monkeypatch):
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    made = []

    def make(partitions: int, parallelism: int) -> Harness:
        h = Harness(scaled(partitions, parallelism))
        h.lake_root = tmp_path / "lake"
        ensure_topics(h.kafka.admin(), h.streams.topics)
        made.append(h)
        return h

    yield make
    for h in made:
        admin = h.kafka.admin()
        for future in admin.delete_topics(list(h.streams.topics)).values():
            future.result(10)


def produce_to(h: Harness, counts: dict[int, int], seed: int) -> None:
    """``counts[p]`` valid readings into partition p (explicit partitions, whatever the keys hash to)."""
    producer = h.kafka.producer()
    source = iter(FleetStream(STREAM, machines=4, seed=seed))
    for p, n in counts.items():
        for key, value, _ in itertools.islice(source, n):
            producer.produce(h.topic(), key=key, value=value, partition=p)
    assert producer.flush(30) == 0


def test_partition_counts_come_from_the_environment_and_topics_grow():
    """STREAM_TOPIC_PARTITIONS sizes topics per environment; ensure_topics grows, never shrinks."""
    kafka = build_resources(resolved=True)["kafka"]  # the platform's client settings (SASL_SSL locally)
    base = renamed(load_streams(load_catalogue()), uuid.uuid4().hex[:8])
    topic = base.streams[STREAM].topic
    admin = kafka.admin()
    try:
        two = apply_env_overrides(base, {"STREAM_TOPIC_PARTITIONS": f"{topic}=2"})
        assert ensure_topics(admin, two.topics)[topic] == "created"
        assert kafka.partitions(topic) == [0, 1]
        five = apply_env_overrides(base, {"STREAM_TOPIC_PARTITIONS": f"{topic}=5"})
        assert ensure_topics(admin, five.topics)[topic] == "grown to 5 partitions"
        assert kafka.partitions(topic) == [0, 1, 2, 3, 4]
        assert ensure_topics(admin, two.topics)[topic] == "exists"  # partitions are never removed
        assert kafka.partitions(topic) == [0, 1, 2, 3, 4]
    finally:
        drop_topics(admin, base.topics)


@pytest.mark.slow
def test_parallel_shards_land_every_message_exactly_once_despite_a_failed_shard(make_harness, monkeypatch):
    h = make_harness(partitions=6, parallelism=2)
    tally = send(h, 3000, malformed=0.02)
    assert tally["delivered"] == 3000
    first = h.tick()
    requests = sorted(first.run_requests, key=lambda r: r.tags["stream/shard"])
    assert [r.tags["stream/shard"] for r in requests] == ["0", "1"]
    assert all(r.tags["stream/parallelism"] == "2" and "/shard-" in r.run_key for r in requests)
    parts = [{x["partition"] for x in r.run_config["ops"][h.asset_names[STREAM]]["config"]["ranges"]}
             for r in requests]
    assert not parts[0] & parts[1] and all(p % 2 == s for s, ps in enumerate(parts) for p in ps)

    # A run of shard 1 in flight holds back shard 1 only.
    job = h.defs.resolve_job_def(requests[1].job_name)
    fake = h.instance.create_run_for_job(job, run_config=requests[1].run_config, tags=requests[1].tags,
                                         status=dg.DagsterRunStatus.STARTED)
    held = h.tick()
    assert [r.run_key for r in held.run_requests] == [requests[0].run_key]
    h.instance.delete_run(fake.run_id)

    # Both shards run; shard 1 fails before anything is recorded, shard 0 succeeds.
    record = StreamStore.record_batch

    def shard_1_fails(self, **kw):
        if any(r.partition % 2 for r in kw["ranges"]):
            raise RuntimeError("injected")
        return record(self, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(StreamStore, "record_batch", shard_1_fails)
        ok, failed = h.execute_all(requests)
    assert ok.success and not failed.success and "injected" in _failure(failed)

    send(h, 1000, malformed=0.02, seed=2)
    second = {r.tags["stream/shard"]: r for r in h.tick().run_requests}
    assert second["1"].run_config == requests[1].run_config  # retried unchanged...
    assert second["1"].run_key == requests[1].run_key + "#retry-1"
    assert "#retry" not in second["0"].run_key  # ...while shard 0 moved on
    for result in h.execute_all(list(second.values())):
        assert result.success, _failure(result)
    h.drain()
    marks = assert_exactly_once(h)
    assert sum(high for _, high in marks.values()) == 4000


@pytest.mark.slow
def test_a_partition_added_while_running_is_read_from_offset_0_and_joins_a_shard(make_harness):
    h = make_harness(partitions=2, parallelism=2)
    produce_to(h, {0: 300, 1: 200}, seed=1)
    h.drain()
    assert h.kafka.watermarks(h.topic()) == {0: (0, 300), 1: (0, 200)}

    from confluent_kafka.admin import NewPartitions

    admin = h.kafka.admin()  # kept: the futures need their client alive
    admin.create_partitions([NewPartitions(h.topic(), 3)])[h.topic()].result(10)
    produce_to(h, {2: 150, 0: 40, 1: 60}, seed=2)
    request = {r.tags["stream/shard"]: r for r in h.tick().run_requests}
    # After a shard's first batch its runs are standby runs: they choose their ranges when their turn
    # comes (the shard's whole backlog at that instant), so the ranges are read from what they recorded.
    assert sorted(request) == ["0", "1"]
    results = h.execute_all([request["0"], request["1"]])
    for result in results:
        assert result.success, _failure(result)
    recorded = h.resources["warehouse"].query(
        "SELECT run_id, partition, start_offset, end_offset FROM streaming.batches WHERE topic = %s "
        "AND run_id = ANY(%s) ORDER BY partition", (h.topic(), [r.run_id for r in results]))
    by_run = {run: {OffsetRange(int(p), int(a), int(b)) for p, a, b in zip(rows["partition"], rows["start_offset"],
                                                                          rows["end_offset"])}
              for run, rows in recorded.groupby("run_id")}
    assert by_run == {results[0].run_id: {OffsetRange(0, 300, 340), OffsetRange(2, 0, 150)},  # new partition 2 → shard 0
                      results[1].run_id: {OffsetRange(1, 200, 260)}}
    assert h.drain() == []
    assert assert_exactly_once(h) == {0: (0, 340), 1: (0, 260), 2: (0, 150)}
