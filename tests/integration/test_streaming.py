"""The streaming path against the real Kafka-protocol broker and PostgreSQL.

Each test module gets topics of its own (the catalogue's names with a random suffix) and the
warehouse database of the integration session, and drives the real sensor and the real job.
"""

from __future__ import annotations

import json
import time
import uuid

import dagster as dg
import pandas as pd
import pyarrow.dataset as ds
import pytest

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.assets import build_streaming_definitions, group_id
from platform_assets.streaming.config import StreamCatalogue, load_streams
from platform_assets.streaming.produce import FleetStream, produce
from platform_assets.streaming.topics import ensure_topics
from resources import build_resources
from resources.kafka import OffsetRange
from resources.stream_store import StreamStore
from sensors.kafka_streams import build_stream_sensor

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STREAM = "sensor_readings"


def renamed(streams: StreamCatalogue, suffix: str) -> StreamCatalogue:
    new = lambda t: f"{t}.{suffix}"
    return StreamCatalogue(
        topics={new(t): spec for t, spec in streams.topics.items()},
        alerts_topic=new(streams.alerts_topic),
        streams={n: s.model_copy(update={"topic": new(s.topic)}) for n, s in streams.streams.items()},
    )


class Harness:
    def __init__(self, streams: StreamCatalogue):
        self.streams = streams
        sources = load_catalogue()
        specs, assets, jobs = build_streaming_definitions(sources, streams)
        self.asset_names = {n: a.node_def.name for n, a in zip(streams.streams, assets)}
        sensors = [build_stream_sensor(n, s, j.name, a.node_def.name)
                   for (n, s), a, j in zip(streams.streams.items(), assets, jobs)]
        self.defs = dg.Definitions(assets=[*specs, *assets], jobs=jobs, sensors=sensors, resources=build_resources())
        self.repo = self.defs.get_repository_def()
        configured = build_resources()
        self.resources = {k: configured[k].process_config_and_initialize() for k in ("kafka", "warehouse")}
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None

    @property
    def kafka(self):
        return self.resources["kafka"]

    def topic(self, stream=STREAM) -> str:
        return self.streams.streams[stream].topic

    def tick(self, stream=STREAM) -> dg.SensorResult:
        sensor = self.defs.resolve_sensor_def(f"{stream}_stream_sensor")
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor, repository_def=self.repo,
                                     resources=self.repo.get_top_level_resources()) as ctx:
            result = sensor.evaluate_tick(ctx)
        self.cursor = result.cursor
        return result

    def execute(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(request.job_name)
        return job.execute_in_process(run_config=request.run_config, instance=self.instance,
                                      tags={**request.tags, "dagster/run_key": request.run_key}, raise_on_error=False)

    def next_request(self, stream=STREAM) -> dg.RunRequest:
        """Tick until the sensor asks for a run (waiting out max_wait_seconds for a small backlog)."""
        for _ in range(3):
            res = self.tick(stream)
            if res.run_requests:
                return res.run_requests[0]
            time.sleep(self.streams.streams[stream].trigger.max_wait_seconds)
        raise AssertionError(f"no run requested: {res.skip_message}")

    def drain(self, stream=STREAM, max_ticks=10) -> list[dg.ExecuteInProcessResult]:
        """Tick and run until the sensor sees no backlog (waiting out max_wait_seconds when needed)."""
        results = []
        for _ in range(max_ticks):
            res = self.tick(stream)
            if not res.run_requests:
                if res.skip_message and "no backlog" in res.skip_message:
                    return results
                time.sleep(self.streams.streams[stream].trigger.max_wait_seconds)
                continue
            for req in res.run_requests:
                result = self.execute(req)
                assert result.success, _failure(result)
                results.append(result)
        raise AssertionError("stream did not drain")


def _failure(result) -> str:
    return "\n".join(e.event_specific_data.error.to_string() for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE")


@pytest.fixture()
def harness(platform, tmp_path, monkeypatch):
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))  # a lake of this test's own
    streams = renamed(load_streams(load_catalogue()), uuid.uuid4().hex[:8])
    h = Harness(streams)
    h.lake_root = tmp_path / "lake"
    ensure_topics(h.kafka.admin(), streams.topics)
    yield h
    h.kafka.admin().delete_topics(list(streams.topics))


def lake_offsets(h: Harness, stream=STREAM) -> pd.DataFrame:
    path = h.lake_root / "stream" / stream
    if not path.exists():
        return pd.DataFrame(columns=["_partition", "_offset"])
    return ds.dataset(path, format="parquet", partitioning="hive").to_table(columns=["_partition", "_offset"]).to_pandas()


def send(h: Harness, count: int, malformed=0.0, anomalies=0.0, seed=1, clock=None) -> dict:
    source = FleetStream(STREAM, machines=4, seed=seed, malformed=malformed, anomalies=anomalies, clock=clock)
    return produce(h.kafka, h.topic(), source, rate=1e6, count=count, duration=None, progress=False)


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
    since = json.loads(first.cursor)["backlog_since"]
    assert since is not None
    lag = first.asset_events[0].metadata["consumer_lag"].value
    assert lag == 10
    time.sleep(harness.streams.streams[STREAM].trigger.max_wait_seconds + 0.2)
    second = harness.tick()
    assert len(second.run_requests) == 1 and json.loads(second.cursor)["backlog_since"] is None


def test_missing_topic_gives_a_clear_skip(platform):
    streams = renamed(load_streams(load_catalogue()), "never-created-" + uuid.uuid4().hex[:6])
    h = Harness(streams)
    result = h.tick()
    assert not result.run_requests and "does not exist" in result.skip_message
