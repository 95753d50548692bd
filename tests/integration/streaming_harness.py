"""Drive the streaming definitions like the daemon does: the real sensor, the real job, real topics.

Shared by the streaming integration tests and the streaming benchmark. Topics get a suffix of
their own, so runs never see each other's messages.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd
import pyarrow.dataset as ds

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.assets import build_streaming_definitions
from platform_assets.streaming.config import StreamCatalogue
from platform_assets.streaming.produce import FleetStream, produce
from resources import build_resources
from sensors.kafka_streams import build_stream_sensor

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

    def execute_parallel(self, requests: list[dg.RunRequest]) -> list[dg.ExecuteInProcessResult]:
        """The runs of one tick at the same time, as N pods would run them (one thread each)."""
        with ThreadPoolExecutor(max_workers=max(1, len(requests))) as pool:
            return list(pool.map(self.execute, requests))

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
            for result in self.execute_parallel(res.run_requests):
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


def send(h: Harness, count: int, malformed=0.0, anomalies=0.0, seed=1, clock=None) -> dict:
    source = FleetStream(STREAM, machines=4, seed=seed, malformed=malformed, anomalies=anomalies, clock=clock)
    return produce(h.kafka, h.topic(), source, rate=1e6, count=count, duration=None, progress=False)


