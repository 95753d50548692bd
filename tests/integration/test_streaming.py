"""The streaming path against the real Kafka-protocol broker and PostgreSQL.

Each test module gets topics of its own (the catalogue's names with a random suffix) and the
warehouse database of the integration session, and drives the real sensor and the real job.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pandas as pd
import pytest

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.assets import group_id
from platform_assets.streaming.config import load_streams
from platform_assets.streaming.topics import ensure_topics
from resources.kafka import OffsetRange
from resources.stream_store import StreamStore
from sensors.kafka_streams import STANDBY_TAG
from tests.integration.streaming_harness import (
    STREAM,
    Harness,
    _failure,
    drop_topics,
    lake_offsets,
    renamed,
    send,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture()
def harness(platform, tmp_path, monkeypatch):
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))  # a lake of this test's own
    streams = renamed(load_streams(load_catalogue()), uuid.uuid4().hex[:8])
    h = Harness(streams)
    h.lake_root = tmp_path / "lake"
    ensure_topics(h.kafka.admin(), streams.topics)
    yield h
    drop_topics(h.kafka.admin(), streams.topics)


def test_every_valid_message_lands_exactly_once_despite_a_failed_batch(harness, platform, monkeypatch):
    tally = send(harness, 3000, malformed=0.02)
    assert tally["delivered"] == 3000
    request = harness.tick().run_requests[0]

    with monkeypatch.context() as patch:
        patch.setattr(StreamStore, "record_batch", lambda self, **kw: (_ for _ in ()).throw(RuntimeError("injected")))
        failed = harness.execute(request)
    assert not failed.success and "injected" in _failure(failed)
    assert len(lake_offsets(harness)) > 0  # files were written before the failure...

    send(harness, 1000, malformed=0.02, seed=2)  # more arrives meanwhile
    retry = harness.tick().run_requests[0]
    assert retry.run_config == request.run_config and retry.run_key == request.run_key + "#retry-1"
    assert harness.execute(retry).success
    harness.drain()

    offsets = lake_offsets(harness)
    assert not offsets.duplicated().any()  # ...and the retry replaced them
    dead = harness.resources["warehouse"].query(
        "SELECT count(*) AS n FROM streaming.dead_letters WHERE topic = %s", (harness.topic(),))["n"].iloc[0]
    marks = harness.kafka.watermarks(harness.topic())
    produced = sum(high for _, high in marks.values())
    assert produced == 4000
    assert len(offsets) + dead == produced  # every message is in the lake or a dead letter, once
    used = {p: high for p, (_, high) in marks.items() if high > 0}
    committed = harness.kafka.committed(group_id(STREAM), harness.topic())
    assert {p: committed[p] for p in used} == used  # committed once durable, up to the end


def test_failure_after_the_data_is_durable_moves_on_without_duplicates(harness, platform, monkeypatch):
    send(harness, 500)
    request = harness.next_request()
    with monkeypatch.context() as patch:
        patch.setattr(type(harness.kafka), "commit", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("commit lost")))
        assert not harness.execute(request).success
    send(harness, 500, seed=3)
    nxt = harness.next_request()
    assert nxt.run_key != request.run_key and "#retry" not in nxt.run_key
    assert harness.execute(nxt).success
    offsets = lake_offsets(harness)
    assert len(offsets) == 1000 and not offsets.duplicated().any()


def test_malformed_messages_are_dead_lettered_with_bytes_and_reason(harness, platform):
    tally = send(harness, 2000, malformed=0.05)
    harness.drain()
    dead = harness.resources["warehouse"].query(
        "SELECT partition, \"offset\", reason, raw FROM streaming.dead_letters WHERE topic = %s", (harness.topic(),))
    assert len(dead) == tally["malformed"] > 0
    assert dead["reason"].str.len().min() > 0
    raw = {bytes(r) for r in dead["raw"]}
    assert raw <= {b'{"machine_id": "M001", "ts": ', b"not json at all", b'["a", "list"]',
                   b'{"machine_id": "M001", "temperature": 20.0}'}
    assert len(lake_offsets(harness)) == 2000 - tally["malformed"]


def test_windows_are_exact_and_anomalies_become_traceable_alerts(harness, platform):
    clock_state = {"t": pd.Timestamp("2026-11-27 08:00", tz="UTC")}

    def clock():
        clock_state["t"] += pd.Timedelta(seconds=5)
        return clock_state["t"]

    send(harness, 2400, clock=clock, seed=4)  # 200 minutes of history for 4 machines
    harness.drain()
    send(harness, 400, anomalies=0.02, clock=clock, seed=5)
    harness.drain()
    wh = harness.resources["warehouse"]
    alerts = wh.query("SELECT * FROM streaming.alerts WHERE topic = %s", (harness.topic(),))
    assert len(alerts) > 0 and (alerts["zscore"].abs() > 4).all()
    # Every alert points at the source message that caused it.
    one = alerts.iloc[0]
    source = OffsetRange(int(one["partition"]), int(one["offset"]), int(one["offset"]) + 1)
    msg = harness.kafka.read_ranges(harness.topic(), [source])[0]
    assert json.loads(msg.value)[one["signal"]] == pytest.approx(one["value"])
    # The alerts topic carries them too (at least once, keyed by alert id).
    alert_marks = harness.kafka.watermarks(harness.streams.alerts_topic)
    assert sum(h for _, h in alert_marks.values()) >= len(alerts)
    # Windows add up to the messages in the lake.
    events = wh.query("SELECT sum(events) AS n FROM streaming.sensor_readings_minute_stats s "
                      "JOIN (SELECT DISTINCT machine_id FROM streaming.sensor_readings_minute_partials) m USING (machine_id) "
                      "WHERE window_start >= '2026-11-27 08:00+00' AND window_start < '2026-11-27 12:00+00'")["n"].iloc[0]
    assert int(events) >= 2800


def test_sensor_waits_for_size_or_age_and_reports_lag(harness):
    assert harness.tick().skip_message.startswith("no backlog")
    send(harness, 10)  # below min_messages
    first = harness.tick()
    assert not first.run_requests and "10 messages waiting" in first.skip_message
    since = json.loads(first.cursor)["backlog_since"]["0"]  # per shard; one shard here
    assert since is not None
    lag = first.asset_events[0].metadata["consumer_lag"].value
    assert lag == 10
    time.sleep(harness.streams.streams[STREAM].trigger.max_wait_seconds + 0.2)
    second = harness.tick()
    assert len(second.run_requests) == 1 and json.loads(second.cursor)["backlog_since"] == {"0": None}


def test_missing_topic_gives_a_clear_skip(platform):
    streams = renamed(load_streams(load_catalogue()), "never-created-" + uuid.uuid4().hex[:6])
    h = Harness(streams)
    result = h.tick()
    assert not result.run_requests and "does not exist" in result.skip_message


# -- standby runs: the shard's backlog taken when the run's turn comes -----------------------------
def _batches(h) -> pd.DataFrame:
    return h.resources["warehouse"].query(
        "SELECT partition, start_offset, end_offset, run_id FROM streaming.batches WHERE topic = %s "
        "ORDER BY partition, start_offset", (h.topic(),))


def test_a_standby_run_waits_for_its_turn_then_takes_the_whole_backlog(harness, platform):
    from tests.integration.streaming_harness import assert_exactly_once

    send(harness, 300)
    first = harness.next_request()
    assert first.run_config["ops"][harness.asset_names[STREAM]]["config"]["ranges"]  # a first batch: planned
    assert harness.execute(first).success
    send(harness, 200, seed=2)
    standby = harness.next_request()
    assert standby.tags[STANDBY_TAG] == "true"
    assert standby.run_config["ops"][harness.asset_names[STREAM]]["config"]["ranges"] == []
    send(harness, 100, seed=3)  # arrives after the request, before the run's turn: taken too

    # The batch before it still holds the shard (its lock): the standby run waits, then goes.
    store = StreamStore(warehouse=harness.resources["warehouse"])
    partitions = list(harness.kafka.watermarks(harness.topic()))
    held, release = threading.Event(), threading.Event()

    def hold():
        with store.partitions_lock(harness.topic(), partitions):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30)
    threading.Timer(2.0, release.set).start()
    started = time.monotonic()
    result = harness.execute(standby)
    holder.join()
    assert result.success and time.monotonic() - started >= 2.0
    batches = _batches(harness)
    taken = batches[batches["run_id"] == result.run_id]
    assert int((taken["end_offset"] - taken["start_offset"]).sum()) == 300  # 200 + the 100 sent later
    assert_exactly_once(harness)

    # Nothing left when a standby run's turn comes: it succeeds and records nothing.
    send(harness, 50, seed=4)
    late = harness.next_request()
    assert harness.execute(late).success
    before = len(_batches(harness))
    idle = harness.execute(late)
    assert idle.success and len(_batches(harness)) == before and not idle.get_asset_materialization_events()
    assert_exactly_once(harness)


def test_a_standby_run_that_failed_after_naming_its_ranges_is_redone_exactly(harness, platform, monkeypatch):
    from tests.integration.streaming_harness import assert_exactly_once

    send(harness, 300)
    assert harness.execute(harness.next_request()).success
    send(harness, 400, malformed=0.02, seed=2)
    standby = harness.next_request()
    with monkeypatch.context() as patch:
        patch.setattr(StreamStore, "record_batch", lambda self, **kw: (_ for _ in ()).throw(RuntimeError("injected")))
        failed = harness.execute(standby)
    assert not failed.success and "injected" in _failure(failed)
    named = StreamStore(warehouse=harness.resources["warehouse"]).pending_intents(
        harness.topic(), list(harness.kafka.watermarks(harness.topic())))
    assert sum(r.end - r.start for r in named) == 400

    send(harness, 100, seed=3)  # more arrives: the redo still covers exactly what was named
    redo = harness.next_request()
    planned = [OffsetRange(**r) for r in redo.run_config["ops"][harness.asset_names[STREAM]]["config"]["ranges"]]
    assert sorted(planned) == sorted(named)
    assert harness.execute(redo).success
    harness.drain()
    assert_exactly_once(harness)
