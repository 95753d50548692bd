"""How the sensor turns durable offsets and watermarks into ranges."""

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.config import StreamConfig, load_streams
from resources.kafka import OffsetRange
from sensors.kafka_streams import plan_ranges, run_key

STREAM = load_streams(load_catalogue()).streams["sensor_readings"]


def test_ranges_continue_from_durable_ends_to_the_watermark():
    ranges = plan_ranges(STREAM, {0: 10, 1: 50}, {0: (0, 25), 1: (0, 50), 2: (5, 9)})
    assert ranges == [OffsetRange(0, 10, 25), OffsetRange(2, 5, 9)]  # nothing new on 1; 2 from its low mark


def test_latest_start_policy_skips_history_and_retention_is_respected():
    latest = STREAM.model_copy(update={"start_from": "latest"})
    assert plan_ranges(latest, {}, {0: (0, 100)}) == []
    assert plan_ranges(STREAM, {0: 3}, {0: (40, 100)}) == [OffsetRange(0, 40, 100)]


def test_batches_are_capped_across_partitions():
    capped = STREAM.model_copy(update={"trigger": STREAM.trigger.model_copy(update={"max_batch_messages": 100})})
    ranges = plan_ranges(capped, {}, {0: (0, 1000), 1: (0, 1000)})
    assert ranges == [OffsetRange(0, 0, 50), OffsetRange(1, 0, 50)]


def test_run_key_is_deterministic_in_topic_and_ranges():
    assert run_key("s", [OffsetRange(0, 1, 5), OffsetRange(3, 0, 2)]) == "s:0:1-5,3:0-2"
    assert isinstance(STREAM, StreamConfig)
