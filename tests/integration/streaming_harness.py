"""Drive the streaming definitions like the daemon does: the real sensor, the real job, real topics.

Shared by the streaming integration tests and the streaming benchmark. Topics get a suffix of
their own, so runs never see each other's messages.
"""

from __future__ import annotations

import contextlib
import time

import dagster as dg
import pandas as pd
import pyarrow.dataset as ds

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.assets import build_streaming_definitions, group_id
from platform_assets.streaming.config import StreamCatalogue
from platform_assets.streaming.produce import FleetStream, produce
from resources import build_resources
from sensors.kafka_streams import build_stream_sensor

STREAM = "sensor_readings"


def renamed(streams: StreamCatalogue, suffix: str, mode: str = "micro_batch",
            predictions: bool = False) -> StreamCatalogue:
    """The catalogue on topics of its own (``suffix``), every stream in ``mode`` whatever the
    committed catalogue says (the micro-batch tests drive the sensor and the job run by run).
    Predictions on the stream (Redis, MLflow) only when asked for, and no hourly compaction (its
    automation would run beside the test): the tests that need them add them."""
    new = lambda t: f"{t}.{suffix}"
    unused = None if predictions else streams.predictions_topic
    return StreamCatalogue(
        topics={new(t): spec for t, spec in streams.topics.items() if t != unused},
        alerts_topic=new(streams.alerts_topic),
        predictions_topic=new(streams.predictions_topic) if streams.predictions_topic and predictions else None,
        streams={n: s.model_copy(update={"topic": new(s.topic), "mode": mode, "compaction": None,
                                         "predictions": s.predictions if predictions else None})
                 for n, s in streams.streams.items()},
    )


def wait_for(what: str, check, timeout: float = 120.0, every: float = 0.5):
    """``check()``'s first truthy value, polled every ``every`` seconds; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)


def with_predictions_topic(kafka, streams: StreamCatalogue) -> StreamCatalogue:
    """``streams`` (from ``renamed(..., predictions=True)``) with its predictions topic created. The
    broker's ACLs allow it (``services.sh up`` provisions every catalogue topic's prefix, also when
    the broker already runs); a refusal here is a provisioning bug, not something to work around."""
    from platform_assets.streaming.topics import ensure_topics

    ensure_topics(kafka.admin(), {streams.predictions_topic: streams.topics[streams.predictions_topic]})
    return streams


def streaming_definitions(streams: StreamCatalogue) -> dg.Definitions:
    """The streaming part of platform_assets/definitions.py: topic specs, stream assets, jobs, sensors."""
    specs, assets, jobs = build_streaming_definitions(load_catalogue(), streams)
    sensors = [build_stream_sensor(n, s, j.name, a.node_def.name)
               for (n, s), a, j in zip(streams.streams.items(), assets, jobs)]
    return dg.Definitions(assets=[*specs, *assets], jobs=jobs, sensors=sensors, resources=build_resources())


class Harness:
    def __init__(self, streams: StreamCatalogue):
        self.streams = streams
        self.defs = streaming_definitions(streams)
        self.asset_names = {n: f"stream_{n}" for n in streams.streams}
        self.repo = self.defs.get_repository_def()
        configured = build_resources(resolved=True)
        self.resources = {k: configured[k] for k in ("kafka", "warehouse")}
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

    def execute_all(self, requests: list[dg.RunRequest]) -> list[dg.ExecuteInProcessResult]:
        """The runs of one tick (one per shard), one after the other: in-process Dagster runs are
        not thread-safe (threads deadlock in its log manager), so concurrency itself is the
        daemon's or Kubernetes' job; what a test checks is that the shards' runs are independent."""
        return [self.execute(r) for r in requests]

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
                if res.skip_message == "no backlog":  # every shard caught up
                    return results
                time.sleep(self.streams.streams[stream].trigger.max_wait_seconds)
                continue
            for result in self.execute_all(res.run_requests):
                assert result.success, _failure(result)
                results.append(result)
        raise AssertionError("stream did not drain")


def _failure(result) -> str:
    return "\n".join(e.event_specific_data.error.to_string() for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE")


def lake_offsets(h: Harness, stream=STREAM) -> pd.DataFrame:
    path = h.lake_root / "stream" / stream
    if not path.exists():
        return pd.DataFrame(columns=["_partition", "_offset"])
    return ds.dataset(path, format="parquet", partitioning="hive").to_table(columns=["_partition", "_offset"]).to_pandas()


def assert_exactly_once(h: Harness) -> dict[int, tuple[int, int]]:
    """Every produced message once in the lake or among the dead letters, `streaming.batches` tiling
    each partition from 0 to its high watermark, and the consumer group committed up to the end."""
    marks = h.kafka.watermarks(h.topic())
    offsets = lake_offsets(h)
    assert not offsets.duplicated().any()
    wh = h.resources["warehouse"]
    dead = wh.query('SELECT partition, "offset" FROM streaming.dead_letters WHERE topic = %s', (h.topic(),))
    landed = {(int(p), int(o)) for p, o in zip(offsets["_partition"], offsets["_offset"])}
    landed_dead = {(int(p), int(o)) for p, o in zip(dead["partition"], dead["offset"])}
    assert not landed & landed_dead
    assert landed | landed_dead == {(p, o) for p, (_, high) in marks.items() for o in range(high)}
    batches = wh.query("SELECT partition, start_offset, end_offset FROM streaming.batches WHERE topic = %s "
                       "ORDER BY partition, start_offset", (h.topic(),))
    for p, (_, high) in marks.items():
        rows = batches[batches["partition"] == p]
        ends = [0, *rows["end_offset"].tolist()]
        assert rows["start_offset"].tolist() == ends[:-1] and ends[-1] == high, (p, rows)  # tiles [0, high)
    used = {p: high for p, (_, high) in marks.items() if high > 0}
    committed = h.kafka.committed(group_id(STREAM), h.topic())
    assert {p: committed[p] for p in used} == used
    return marks


def send(h: Harness, count: int, malformed=0.0, anomalies=0.0, seed=1, clock=None) -> dict:
    source = FleetStream(STREAM, machines=4, seed=seed, malformed=malformed, anomalies=anomalies, clock=clock)
    return produce(h.kafka, h.topic(), source, rate=1e6, count=count, duration=None, progress=False)


def drop_topics(admin, topics) -> None:
    """Delete topics and wait for the broker's answers: a delete still in flight when its client is
    garbage-collected can abort the interpreter (confluent-kafka)."""
    for future in admin.delete_topics(list(topics)).values():
        with contextlib.suppress(Exception):  # a topic already gone is fine at cleanup
            future.result(15)
