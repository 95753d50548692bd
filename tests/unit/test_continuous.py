"""Continuous mode's pure parts: when a batch is due, which ranges it covers, deferred interrupts,
and how the sensor supervises one consumer run per shard."""

import os
import signal

import pytest

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.config import load_streams
from platform_assets.streaming.continuous import Batcher, batch_ranges, interrupts_deferred, oldest_age
from resources.kafka import KafkaMessage, OffsetRange
from sensors.kafka_streams import MODE_TAG, PARALLELISM_TAG, SHARD_TAG, plan_consumers


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def msgs(partition, offsets):
    return [KafkaMessage(partition, o, None, b"{}", 0) for o in offsets]


def test_a_batch_is_due_after_max_wait_from_its_first_message():
    clock = Clock()
    b = Batcher(max_wait=1.0, max_messages=100, clock=clock)
    assert not b.due() and b.poll_timeout() == 1.0  # nothing held: wait a whole max_wait for messages
    b.add(msgs(0, range(5)))
    clock.t += 0.4
    b.add(msgs(0, range(5, 10)))  # later messages do not push the deadline back
    assert not b.due() and b.poll_timeout() == pytest.approx(0.6)
    clock.t += 0.6
    assert b.due() and b.poll_timeout() == 0.0
    assert [m.offset for m in b.take()] == list(range(10))
    assert not b.due() and b.first_at is None


def test_a_batch_is_due_max_wait_after_its_first_message_was_produced():
    """Messages that waited in the broker while the previous batch was made do not wait a whole
    max_wait more; an age beyond max_wait (a producer's clock ahead or behind) is capped."""
    clock = Clock()
    b = Batcher(max_wait=1.0, max_messages=100, clock=clock)
    b.add(msgs(0, range(3)), age=0.7)
    assert not b.due() and b.poll_timeout() == pytest.approx(0.3)
    b.add(msgs(0, range(3, 6)), age=5.0)  # only the batch's first poll sets its clock
    assert not b.due()
    clock.t += 0.3
    assert b.due()
    b.take()
    b.add(msgs(0, range(6, 8)), age=-3.0)  # a producer clock ahead: as if just produced
    assert b.poll_timeout() == pytest.approx(1.0)
    b.take()
    b.add(msgs(0, range(8, 9)), age=60.0)
    assert b.due()


def test_the_age_of_a_poll_is_its_oldest_timestamped_message():
    polled = [KafkaMessage(0, 1, None, b"{}", 99_000), KafkaMessage(0, 2, None, b"{}", 98_500),
              KafkaMessage(0, 3, None, b"{}", -1)]  # -1: no timestamp
    assert oldest_age(polled, now=lambda: 100.0) == pytest.approx(1.5)
    assert oldest_age([KafkaMessage(0, 3, None, b"{}", -1)], now=lambda: 100.0) == 0.0
    assert oldest_age([], now=lambda: 100.0) == 0.0


class FakeProducer:
    def __init__(self, fail=False):
        self.sent, self.fail, self.pending = [], fail, []

    def produce(self, topic, key, value, on_delivery):
        self.pending.append((topic, key, value, on_delivery))

    def flush(self, timeout):
        for topic, key, value, on_delivery in self.pending:
            on_delivery("broker down" if self.fail else None, None)
            self.sent.append((topic, key, value))
        self.pending = []
        return 0


class FakeKafka:
    timeout_seconds = 1.0

    def __init__(self, fail_first=False):
        self.made, self.fail_first = [], fail_first

    def producer(self):
        self.made.append(FakeProducer(fail=self.fail_first and not self.made))
        return self.made[-1]


def test_the_publisher_keeps_one_producer_and_replaces_it_after_a_failure():
    from platform_assets.streaming.publish import Publisher
    from resources.kafka import KafkaUnavailable

    kafka = FakeKafka(fail_first=True)
    pub = Publisher(kafka)
    with pytest.raises(KafkaUnavailable, match="topic alerts: 1 messages undelivered|topic alerts: .*broker down"):
        pub.topic("alerts")([(b"k", b"v")])
    assert pub.topic("alerts")([(b"k1", b"v1"), (b"k2", b"v2")]) == 2
    assert pub.produce([("predictions", b"k3", b"v3")]) == 1
    assert len(kafka.made) == 2  # one after the failure, then kept
    assert kafka.made[1].sent == [("alerts", b"k1", b"v1"), ("alerts", b"k2", b"v2"), ("predictions", b"k3", b"v3")]
    assert pub.produce([]) == 0


def test_a_batch_is_due_at_max_messages_and_the_rest_stays_due():
    clock = Clock()
    b = Batcher(max_wait=1.0, max_messages=4, clock=clock)
    b.add(msgs(1, range(3)))
    assert not b.due() and b.room() == 1
    b.add(msgs(1, range(3, 10)))
    assert b.due() and b.room() == 0
    assert [m.offset for m in b.take()] == [0, 1, 2, 3]
    assert b.due()  # six left: a full batch
    assert [m.offset for m in b.take()] == [4, 5, 6, 7]
    assert not b.due()  # two left, arrived at t=100: due when their max_wait is up, not later
    clock.t += 1.0
    assert b.due() and [m.offset for m in b.take()] == [8, 9] and not b.due()


def test_empty_polls_never_make_an_empty_batch():
    clock = Clock()
    b = Batcher(max_wait=0.5, max_messages=10, clock=clock)
    b.add([])
    clock.t += 5
    assert not b.due()


def test_ranges_start_at_the_consumer_position_and_end_after_the_last_message():
    positions = {0: 10, 1: 7, 2: 3}
    ranges = batch_ranges([*msgs(0, [10, 11, 13]), *msgs(1, [9])], positions)  # 12 and 7-8: no message
    assert ranges == [OffsetRange(0, 10, 14), OffsetRange(1, 7, 10)]  # partition 2 got nothing: no range


def test_an_interrupt_during_a_batch_is_delivered_once_the_batch_is_done():
    done, before = [], signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), interrupts_deferred() as received:
        os.kill(os.getpid(), signal.SIGTERM)  # as a pod's termination or Dagster's interrupt would
        done.append("batch finished")
        assert received == [signal.SIGTERM]
    assert done == ["batch finished"]
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def test_a_second_interrupt_abandons_the_batch_at_once():
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        done.append("not reached")
    assert done == []


def consumer(shard, parallelism=2):
    return {"stream": "s", MODE_TAG: "continuous", SHARD_TAG: str(shard), PARALLELISM_TAG: str(parallelism)}


def test_supervisor_launches_a_consumer_for_each_shard_without_one():
    launches, reason = plan_consumers(2, [consumer(1)], lambda s: {0: "r0", 1: "r1"}[s])
    assert launches == [(0, "shard-0:continuous:after-r0")] and reason is None
    launches, reason = plan_consumers(2, [consumer(0), consumer(1)], lambda s: None)
    assert launches == [] and reason == "every shard's consumer is running"
    launches, _ = plan_consumers(3, [], lambda s: None)
    assert launches == [(0, "shard-0:continuous:after-start"), (1, "shard-1:continuous:after-start"),
                        (2, "shard-2:continuous:after-start")]


def test_a_restart_gets_a_new_run_key_after_each_previous_run():
    first, _ = plan_consumers(1, [], lambda s: None)
    again, _ = plan_consumers(1, [], lambda s: "run-a")
    later, _ = plan_consumers(1, [], lambda s: "run-b")
    assert len({first[0][1], again[0][1], later[0][1]}) == 3


def test_supervisor_waits_for_micro_batches_and_consumers_of_another_parallelism():
    micro = {"stream": "s", MODE_TAG: "micro_batch", SHARD_TAG: "0"}
    launches, reason = plan_consumers(1, [micro], lambda s: None)
    assert launches == [] and "micro-batch" in reason
    launches, reason = plan_consumers(1, [consumer(1, parallelism=2)], lambda s: None)
    assert launches == [] and "parallelism 2" in reason


def test_catalogue_modes_are_validated():
    from platform_assets.sources.config import CatalogueError
    from platform_assets.streaming.config import StreamCatalogue

    streams = load_streams(load_catalogue(), environ={})
    stream = streams.streams["sensor_readings"]
    assert stream.max_wait == 0.5 and stream.max_messages > 0
    data = streams.model_dump()
    data["streams"]["sensor_readings"]["mode"] = "realtime"
    with pytest.raises((ValueError, CatalogueError)):
        StreamCatalogue.model_validate(data)


def test_a_started_consumer_that_logs_nothing_is_marked_failed_so_it_is_replaced(monkeypatch):
    import dagster as dg

    from sensors import kafka_streams

    @dg.op
    def noop():
        pass

    job = dg.GraphDefinition(name="g", node_defs=[noop]).to_job()
    with dg.DagsterInstance.ephemeral() as instance:
        tags = {"stream": "s", MODE_TAG: "continuous", SHARD_TAG: "0"}
        run = instance.create_run_for_job(job, tags=tags, status=dg.DagsterRunStatus.STARTED)
        instance.report_engine_event("batch durable", run)  # a consumer alive: it logs
        assert not kafka_streams._lost(instance, run)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

        monkeypatch.setattr(kafka_streams, "SILENT_AFTER_S", 0.0)  # its last event is now too old
        assert kafka_streams._lost(instance, run)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        micro = instance.create_run_for_job(job, tags={"stream": "s"}, status=dg.DagsterRunStatus.STARTED)
        assert not kafka_streams._lost(instance, micro)  # micro-batch runs are not supervised this way


def test_a_consumer_that_keeps_failing_is_restarted_less_and_less_often():
    from sensors.kafka_streams import restart_delay

    assert restart_delay(0) == restart_delay(1) == 0  # a killed consumer comes back at the next tick
    assert [restart_delay(n) for n in (2, 3, 4)] == [10, 20, 40]
    assert restart_delay(50) == 300


class _Watermarks:
    """A consumer whose broker answers for some partitions and is unreachable for others."""

    def __init__(self, highs: dict[int, int | None]):
        self.highs = highs

    def get_watermark_offsets(self, tp, timeout, cached):
        from confluent_kafka import KafkaError, KafkaException

        high = self.highs[tp.partition]
        if high is None:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get watermark offsets"))
        return 0, high


def test_lag_is_observed_per_partition_and_unknown_while_the_broker_is_unreachable():
    import types

    import dagster as dg

    from platform_assets.streaming.continuous import observe_lag

    target = types.SimpleNamespace(name="s")
    totals = {"batches": 2, "messages": 30}
    key = dg.AssetKey(["topic"])
    seen = observe_lag(_Watermarks({0: 15, 1: 40}), "t", {0: 10, 1: 40}, key, target, 0, totals)
    assert seen.metadata["consumer_lag"].value == 5
    assert seen.metadata["lag_by_partition"].value == {"0": 5, "1": 0}
    down = observe_lag(_Watermarks({0: 15, 1: None}), "t", {0: 10, 1: 40}, key, target, 0, totals)
    assert down.metadata["consumer_lag"].value == -1  # not a run-ending error, and not a false 5
    assert down.metadata["lag_by_partition"].value == {"0": 5, "1": -1}
