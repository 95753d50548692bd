"""How the sensor turns durable offsets and watermarks into ranges, per shard."""

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.config import StreamConfig, load_streams
from resources.kafka import OffsetRange
from sensors.kafka_streams import (
    PastRun,
    ShardPlan,
    due,
    next_tick_estimate,
    plan_ranges,
    plan_shards,
    run_key,
    shards,
    standby_ranges,
)

# The catalogue as committed: a developer's STREAM_* scale settings must not change these tests.
STREAM = load_streams(load_catalogue(), environ={}).streams["sensor_readings"]


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


# -- shards: parallel micro-batches ---------------------------------------------------------------

NOW = 1_000.0
TWO = STREAM.model_copy(update={"parallelism": 2, "trigger": STREAM.trigger.model_copy(update={"min_messages": 1})})
MARKS = {p: (0, 100) for p in range(5)}


def plan(stream=TWO, durable=None, marks=MARKS, in_flight=(), recent=(), attempts=lambda r: 1, since=None):
    return plan_shards(stream, durable or {}, marks, {}, list(in_flight), list(recent), attempts, NOW, since or {})


def test_shards_are_disjoint_cover_every_partition_and_stay_put_when_partitions_are_added():
    for n in (1, 2, 3, 4):
        for count in (1, 3, 6, 7, 12):
            split = shards(range(count), n)
            assert sorted(p for parts in split.values() for p in parts) == list(range(count))
            assert set(split) == set(range(n))
            grown = shards(range(count + 2), n)  # two partitions added: none of the old ones moves
            assert all(set(split[s]) <= set(grown[s]) for s in split)


def test_each_shard_gets_its_own_batch_over_its_own_partitions():
    plans = plan()
    assert [p.shard for p in plans] == [0, 1]
    assert [[r.partition for r in p.ranges] for p in plans] == [[0, 2, 4], [1, 3]]
    assert all(p.attempt == 0 and p.reason is None for p in plans)


def test_in_flight_blocks_only_the_shard_whose_partitions_it_reads():
    running = PastRun("run-a", False, (OffsetRange(1, 0, 50), OffsetRange(3, 0, 50)))
    plans = plan(in_flight=[running])
    assert plans[0].ranges and not plans[1].ranges and "run-a" in plans[1].reason
    # After a change of parallelism, a run of the old layout blocks every shard it overlaps.
    old = PastRun("run-old", False, (OffsetRange(0, 0, 10), OffsetRange(1, 0, 10)))
    assert all(not p.ranges and "run-old" in p.reason for p in plan(in_flight=[old]))


def test_a_failed_shard_is_retried_unchanged_while_the_other_moves_on():
    failed = (OffsetRange(1, 0, 40), OffsetRange(3, 0, 40))
    done = PastRun("ok", False, (OffsetRange(0, 0, 40), OffsetRange(2, 0, 40), OffsetRange(4, 0, 40)))
    recent = [PastRun("bad", True, failed), done]
    plans = plan(durable={0: 40, 2: 40, 4: 40}, recent=recent, attempts=lambda r: 1)
    assert plans[1] == ShardPlan(1, list(failed), 1, None, NOW)  # same ranges, first retry
    assert plans[0].ranges == [OffsetRange(0, 40, 100), OffsetRange(2, 40, 100), OffsetRange(4, 40, 100)]
    # Recorded before it failed (e.g. the commit failed): not retried, the next batch follows on.
    moved_on = plan(durable={0: 40, 1: 40, 2: 40, 3: 40, 4: 40}, recent=recent)
    assert moved_on[1].ranges == [OffsetRange(1, 40, 100), OffsetRange(3, 40, 100)] and moved_on[1].attempt == 0
    # Too many attempts: the shard stops and says why; the other shard is unaffected.
    stuck = plan(durable={0: 40, 2: 40, 4: 40}, recent=recent, attempts=lambda r: 5)
    assert not stuck[1].ranges and "failed 5 times" in stuck[1].reason and stuck[0].ranges


def test_a_failed_run_spanning_shards_is_retried_once():
    failed = PastRun("bad", True, (OffsetRange(0, 0, 40), OffsetRange(1, 0, 40)))
    plans = plan(marks={0: (0, 100), 1: (0, 100)}, recent=[failed])
    assert [p.ranges for p in plans] == [list(failed.ranges), []]
    assert "retrying" in plans[1].reason


def test_small_backlog_waits_per_shard():
    slow = TWO.model_copy(update={"trigger": TWO.trigger.model_copy(update={"min_messages": 1000})})
    fresh = plan(slow)
    assert not any(p.ranges for p in fresh) and [p.backlog_since for p in fresh] == [NOW, NOW]
    aged = plan(slow, since={0: NOW - 60, 1: NOW})
    assert aged[0].ranges and not aged[1].ranges


def test_a_partition_added_while_running_starts_at_its_low_watermark():
    durable = {0: 100, 1: 100}
    grown = {0: (0, 120), 1: (0, 100), 2: (0, 30)}  # partition 2 is new
    assert plan_ranges(STREAM, durable, grown) == [OffsetRange(0, 100, 120), OffsetRange(2, 0, 30)]
    # Even for a stream that started from the latest offsets: the policy is for the first start only.
    latest = STREAM.model_copy(update={"start_from": "latest"})
    assert plan_ranges(latest, durable, grown) == [OffsetRange(0, 100, 120), OffsetRange(2, 0, 30)]
    assert plan_ranges(latest, {}, grown, origin={0: 120, 1: 100}) == [OffsetRange(2, 0, 30)]
    # With shards, it joins partition % parallelism.
    plans = plan(durable=durable, marks=grown)
    assert plans[0].ranges == [OffsetRange(0, 100, 120), OffsetRange(2, 0, 30)] and not plans[1].ranges


def test_shard_run_keys_name_the_shard():
    assert run_key("s", [OffsetRange(1, 0, 5)], shard=1) == "s/shard-1:1:0-5"


def test_scale_settings_come_from_the_environment_without_editing_the_catalogue():
    import pytest

    from platform_assets.sources.config import CatalogueError
    from platform_assets.streaming.config import apply_env_overrides

    base = load_streams(load_catalogue(), environ={})
    env = {"STREAM_TOPIC_PARTITIONS": "iot.sensor-readings=12", "STREAM_TOPIC_REPLICATION_FACTOR": "3",
           "STREAM_PARALLELISM": "sensor_readings=4"}
    scaled = apply_env_overrides(base, env)
    assert scaled.topics["iot.sensor-readings"].partitions == 12 and scaled.topics["app.logs"].partitions == 3
    assert {t.replication_factor for t in scaled.topics.values()} == {3}
    assert scaled.streams["sensor_readings"].parallelism == 4 and scaled.streams["app_logs"].parallelism == 1
    for bad in ({"STREAM_PARALLELISM": "sensor_reading=2"}, {"STREAM_TOPIC_PARTITIONS": "0"},
                {"STREAM_PARALLELISM": "two"}):
        with pytest.raises(CatalogueError):
            apply_env_overrides(base, bad)


def _read_twice(plans) -> list[int]:
    seen = [r.partition for p in plans for r in p.ranges]
    return sorted({p for p in seen if seen.count(p) > 1})


def test_a_parallelism_change_never_plans_a_partition_twice_in_one_tick():
    # Three shards became two. Old shard 1's run (partitions 1 and 4) failed before recording;
    # old shards 0 and 2 succeeded. Partition 4 now belongs to new shard 0, partition 1 to shard 1.
    ok_2 = PastRun("ok-2", False, (OffsetRange(2, 0, 100),))
    failed = PastRun("bad-1", True, (OffsetRange(1, 0, 100), OffsetRange(4, 0, 100)))
    ok_0 = PastRun("ok-0", False, (OffsetRange(0, 0, 100), OffsetRange(3, 0, 100)))
    marks = {p: (0, 400) for p in range(5)}
    plans = plan(durable={0: 100, 2: 100, 3: 100}, marks=marks, recent=[ok_2, failed, ok_0])
    assert _read_twice(plans) == []
    assert [p.ranges for p in plans if p.attempt] == [list(failed.ranges)]  # retried whole, unchanged
    assert not any(r.partition in (1, 4) and r.start != 0 for p in plans for r in p.ranges)


def test_a_failure_is_retried_unchanged_after_newer_runs_on_other_partitions():
    # Two shards became one; the other old shard ran again after the failure, and many runs since.
    failed = PastRun("bad", True, (OffsetRange(0, 0, 250),))
    newer = [PastRun(f"ok-{i}", False, (OffsetRange(1, 250 * i, 250 * (i + 1)),)) for i in range(30, 0, -1)]
    one = TWO.model_copy(update={"parallelism": 1})
    plans = plan(one, durable={1: 250 * 31}, marks={0: (0, 1000), 1: (0, 250 * 31)},
                 recent=[*newer, failed], attempts=lambda r: 2)
    assert [(p.ranges, p.attempt) for p in plans] == [([OffsetRange(0, 0, 250)], 2)]
    # Still too many attempts however far back it is: the stream stops and says why.
    stuck = plan(one, durable={1: 250 * 31}, marks={0: (0, 1000), 1: (0, 250 * 31)},
                 recent=[*newer, failed], attempts=lambda r: 5)
    assert not stuck[0].ranges and "failed 5 times" in stuck[0].reason


# -- latency: when a backlog is due, standby runs --------------------------------------------------

def test_a_small_backlog_is_requested_at_the_last_tick_before_its_deadline():
    slow = STREAM.model_copy(update={"trigger": STREAM.trigger.model_copy(update={"min_messages": 1000,
                                                                                  "max_wait_seconds": 5})})
    assert due(slow, 1000, 0.0, 0.0)  # big enough
    assert not due(slow, 10, 0.0, 1.0)  # a tick comes again well before the deadline
    assert due(slow, 10, 0.0, 5.0)  # the next tick (5 s away: the daemon's loop) would be past it
    assert next_tick_estimate(NOW, None) == 0.0 and next_tick_estimate(NOW, NOW - 5) == 5.0
    assert next_tick_estimate(NOW, NOW - 3600) == 30.0  # after a pause, no more than a usual tick


def test_messages_arriving_while_a_batch_is_in_flight_start_waiting_then():
    running = PastRun("r", False, (OffsetRange(0, 0, 50),))
    one = TWO.model_copy(update={"parallelism": 1})
    assert plan(one, marks={0: (0, 50)}, in_flight=[running])[0].backlog_since is None
    assert plan(one, marks={0: (0, 80)}, in_flight=[running])[0].backlog_since == NOW
    assert plan(one, marks={0: (0, 80)}, in_flight=[running], since={0: NOW - 9})[0].backlog_since == NOW - 9


def standby_plan(durable=None, marks=MARKS, in_flight=(), recent=(), standby=(), attempts=lambda r: 0, origin=None):
    return plan_shards(TWO, durable if durable is not None else {p: 50 for p in marks}, marks, origin or {},
                       list(in_flight), list(recent), attempts, NOW, {}, 5.0, list(standby), 2)


def test_a_shards_next_batches_are_standby_runs_two_in_flight_at_most():
    first = standby_plan(durable={})  # no batch yet: the first one is planned with its ranges
    assert all(p.ranges and not p.standby for p in first)
    plans = standby_plan()
    assert [(p.shard, p.standby, p.ranges, p.requested) for p in plans] == [(0, True, [], True), (1, True, [], True)]
    one_each = standby_plan(standby=[(0, 2), (1, 2)])  # one running, the next one stands by
    assert all(p.standby for p in one_each)
    full = standby_plan(standby=[(0, 2), (0, 2), (1, 2)])
    assert not full[0].requested and "2 runs in flight" in full[0].reason and full[1].standby
    # A partition added to the topic starts at its low watermark, in a standby run as in a planned one.
    grown = {**MARKS, 5: (0, 10)}
    assert standby_plan(durable={p: 50 for p in MARKS}, marks=grown)[1].standby
    # One that must start at the cursor's origin (a new stream from the latest offsets) gets a
    # planned batch, after the shard's standby runs.
    latest = standby_plan(durable={p: 50 for p in MARKS}, marks=grown, origin={5: 4}, standby=[(1, 2)])
    assert not latest[1].requested and "standby" in latest[1].reason and latest[0].standby
    planned = standby_plan(durable={p: 50 for p in MARKS}, marks=grown, origin={5: 4})[1]
    assert planned.ranges[-1] == OffsetRange(5, 4, 10)


def test_standby_runs_and_ranged_runs_never_share_a_shard():
    ranged = PastRun("r", False, (OffsetRange(0, 50, 100),))
    plans = standby_plan(in_flight=[ranged])
    assert not plans[0].requested and "batch in flight" in plans[0].reason and plans[1].standby
    # A failed run's ranges (or the intent of the standby run in flight, not recorded yet) are left
    # to the shard's standby run, which redoes an intent exactly: the next standby still starts ...
    failed = PastRun("bad", True, (OffsetRange(1, 50, 80),))
    assert standby_plan(recent=[failed], standby=[(1, 2)])[1].standby
    # ... and with none in flight they are retried unchanged, ranged, before anything else.
    assert standby_plan(recent=[failed])[1].ranges == list(failed.ranges)
    # A standby of another parallelism may take any partition of its old shard: those wait.
    other = standby_plan(standby=[(0, 3)])  # old shard 0 of 3: partitions 0 and 3
    assert not other[0].requested and not other[1].requested and "parallelism 3" in other[0].reason


def test_a_standby_run_takes_a_pending_intent_exactly_else_the_whole_backlog():
    marks = {0: (0, 500), 2: (0, 300)}
    assert standby_ranges(STREAM, {0: 100, 2: 300}, marks, []) == [OffsetRange(0, 100, 500)]
    pending = [OffsetRange(2, 250, 280)]  # a failed run named it: redone as it was, nothing else
    assert standby_ranges(STREAM, {0: 100, 2: 250}, marks, pending) == pending
