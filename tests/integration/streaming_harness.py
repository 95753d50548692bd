"""Drive the streaming definitions like the daemon does: the real sensor, the real job, real topics.

Shared by the streaming integration tests and the streaming benchmark. Topics get a suffix of
their own, so runs never see each other's messages.
"""

from __future__ import annotations

import time

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


def send(h: Harness, count: int, malformed=0.0, anomalies=0.0, seed=1, clock=None) -> dict:
    source = FleetStream(STREAM, machines=4, seed=seed, malformed=malformed, anomalies=anomalies, clock=clock)
    return produce(h.kafka, h.topic(), source, rate=1e6, count=count, duration=None, progress=False)




class TlsKafkaProxy:
    """TLS in front of a plaintext Kafka-protocol broker (the local broker cannot serve TLS).

    Requests pass through unchanged; in responses the broker's advertised ``host:port`` (Metadata,
    FindCoordinator) becomes the proxy's, so every later connection of the client goes through TLS
    too. Frames are forwarded whole: the replacement keeps their length.
    """

    def __init__(self, upstream: str, cert: str, key: str):
        import asyncio
        import ssl
        import struct
        import threading

        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.connections = 0
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, context: None)  # failed handshakes are expected in tests
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ctx))
        self.port = server.sockets[0].getsockname()[1]
        self._from = host.encode() + struct.pack(">i", self.upstream[1])
        self._to = host.encode() + struct.pack(">i", self.port)
        self._server = server
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    @property
    def bootstrap(self) -> str:
        return f"{self.upstream[0]}:{self.port}"

    async def _handle(self, c_reader, c_writer):
        import asyncio
        import struct

        self.connections += 1  # called once the TLS handshake has succeeded
        u_reader, u_writer = await asyncio.open_connection(*self.upstream)

        async def requests():
            try:
                while data := await c_reader.read(65536):
                    u_writer.write(data)
                    await u_writer.drain()
            finally:
                u_writer.close()

        async def responses():
            try:
                while True:
                    head = await u_reader.readexactly(4)
                    body = await u_reader.readexactly(struct.unpack(">i", head)[0])
                    c_writer.write(head + body.replace(self._from, self._to))
                    await c_writer.drain()
            finally:
                c_writer.close()

        await asyncio.gather(requests(), responses(), return_exceptions=True)

    def close(self) -> None:
        import asyncio

        async def shutdown():
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
