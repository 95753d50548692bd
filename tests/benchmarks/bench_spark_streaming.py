"""Continuous mode on both engines, side by side: the Python consumer and Spark Structured Streaming.

Both run the same ``process_batch`` (validation, dead letters, lake files, windows, anomalies, one
warehouse transaction per batch), in this process as the stream's run would, each on a warehouse
database and a lake of its own:

1. **backlog**: ``--messages`` readings already on a topic; seconds until every offset is durable,
   and until the first batch is (start-up: Spark's query planning, the Python consumer's assign);
2. **latency**: a producer at a steady ``--rate`` for ``--seconds``, started once the consumer is
   up; a reading's latency is from its event time (set when produced) to the commit of its batch.

Spark's session is started before the timings (a deployment's run pays it once, ~15 s here).
Run it under the shared lock (Spark is CPU-heavy on 2 cores):

    flock /tmp/platform-bench.lock .venv/bin/python tests/benchmarks/bench_spark_streaming.py \
        [--messages 50000] [--rate 1000] [--seconds 30] [--max-wait 1] [--max-messages 20000]

The last line of stdout is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
warnings.filterwarnings("ignore")

import dagster as dg
import pandas as pd

from platform_assets.settings import load_local_defaults
from platform_assets.sources.config import load_catalogue
from platform_assets.streaming import continuous, spark_engine
from platform_assets.streaming.assets import group_id, stream_keys, topic_key
from platform_assets.streaming.batch import StreamTarget
from platform_assets.streaming.config import StreamCatalogue, load_streams
from platform_assets.streaming.produce import FleetStream, produce
from platform_assets.streaming.topics import ensure_topics
from resources import build_resources
from resources.stream_store import StreamStore
from tests.benchmarks.bench_streaming import _latencies, _stats
from tests.integration.conftest import _pg_admin
from tests.integration.streaming_harness import STREAM, drop_topics, renamed

ENGINES = ("python", "spark")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def catalogue(suffix: str, max_wait: float, max_messages: int) -> StreamCatalogue:
    base = renamed(load_streams(load_catalogue(), environ={}), suffix, mode="continuous")
    stream = base.streams[STREAM].model_copy(update={"max_wait": max_wait, "max_messages": max_messages})
    return StreamCatalogue(topics={t: base.topics[t] for t in (stream.topic, base.alerts_topic)},
                           alerts_topic=base.alerts_topic, streams={STREAM: stream})


def fresh_place(name: str, tmp: Path, databases: list[str]) -> dict:
    """A warehouse database and a lake of their own, made current for build_resources."""
    db = f"bench_spark_{name}_{uuid.uuid4().hex[:6]}"
    _pg_admin(f'CREATE DATABASE "{db}"')
    databases.append(db)
    env = {"WAREHOUSE_DB": db, "LAKE_ROOT": str(tmp / f"lake-{name}")}
    os.environ.update(env)
    return env


def run(engine: str, streams: StreamCatalogue, until: int, on_start=lambda: None) -> dict:
    """Consume shard 0 on ``engine`` until ``until`` offsets are durable; seconds to start and to finish."""
    resources = build_resources(resolved=True)
    stream = streams.streams[STREAM]
    target = StreamTarget(STREAM, stream, streams, streams.contract(STREAM, load_catalogue()),
                          stream_keys(STREAM, stream))
    store = StreamStore(warehouse=resources["warehouse"])
    marks = {"first": None, "started": False}
    begin = time.monotonic()

    def stop() -> bool:  # called once per loop by both consumers, after they have started
        if not marks["started"]:
            marks["started"] = True
            on_start()
        durable = sum(store.durable_ends(stream.topic).values())
        if durable and marks["first"] is None:
            marks["first"] = time.monotonic() - begin
        return durable >= until

    common = {"kafka": resources["kafka"], "lake": resources["lake"], "stream_store": resources["stream_store"],
              "group": group_id(STREAM), "topic_key": topic_key(stream.topic), "stop": stop}
    if engine == "spark":
        events = list(spark_engine.consume(dg.build_op_context(), target, 0, 1, spark=resources["spark"], **common))
    else:
        events = list(continuous.consume(dg.build_op_context(), target, 0, 1, **common))
    batches = [e for e in events if isinstance(e, dg.AssetMaterialization) and e.asset_key.path[0] == "lake"]
    return {"seconds": round(time.monotonic() - begin, 2), "first_batch_s": round(marks["first"] or 0.0, 2),
            "batches": len(batches)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-wait", type=float, default=1.0)
    parser.add_argument("--max-messages", type=int, default=20_000)
    args = parser.parse_args()
    load_local_defaults()
    saved = {k: os.environ.get(k) for k in ("WAREHOUSE_DB", "LAKE_ROOT")}
    tmp = Path(tempfile.mkdtemp(prefix="bench-spark-stream-"))
    suffix = uuid.uuid4().hex[:8]
    databases: list[str] = []
    kafka = build_resources(resolved=True)["kafka"]
    topics: dict = {}
    out: dict = {"messages": args.messages, "rate": args.rate, "seconds": args.seconds,
                 "max_wait": args.max_wait, "max_messages": args.max_messages}
    try:
        t = time.monotonic()
        build_resources(resolved=True)["spark"].session.range(1).count()
        out["spark_session_start_s"] = round(time.monotonic() - t, 2)

        backlog = catalogue(f"bsb-{suffix}", args.max_wait, args.max_messages)
        topics |= backlog.topics
        ensure_topics(kafka.admin(), backlog.topics)
        log(f"backlog: producing {args.messages} readings")
        produce(kafka, backlog.streams[STREAM].topic, FleetStream(STREAM, seed=3, malformed=0.01), rate=1e6,
                count=args.messages, duration=None, progress=False)
        for engine in ENGINES:
            fresh_place(f"{engine}-backlog", tmp, databases)
            log(f"{engine}: backlog")
            res = run(engine, backlog, args.messages)
            res["events_per_s"] = round(args.messages / res["seconds"])
            out[f"{engine}_backlog"] = res

        for engine in ENGINES:
            streams = catalogue(f"bsl{engine[0]}-{suffix}", args.max_wait, args.max_messages)
            topics |= streams.topics
            ensure_topics(kafka.admin(), streams.topics)
            env = fresh_place(f"{engine}-latency", tmp, databases)
            total = int(args.rate * args.seconds)
            since = pd.Timestamp.now(tz="UTC")
            producer = threading.Thread(target=produce, daemon=True, args=(
                kafka, streams.streams[STREAM].topic, FleetStream(STREAM, seed=5), args.rate, total, None),
                kwargs={"progress": False})
            log(f"{engine}: {args.rate:g} msg/s for {args.seconds:g} s")
            res = run(engine, streams, total, on_start=producer.start)
            producer.join()
            lat = _latencies(env, Path(env["LAKE_ROOT"]), since, streams.streams[STREAM].topic)
            out[f"{engine}_latency"] = {**res, **_stats(lat, "latency")}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if topics:
            drop_topics(kafka.admin(), topics)
        for db in databases:
            _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)

    for engine in ENGINES:
        b, lat = out[f"{engine}_backlog"], out[f"{engine}_latency"]
        print(f"{engine:<7} backlog {args.messages:,} in {b['seconds']:>7} s ({b['events_per_s']:>7,} events/s, "
              f"first batch after {b['first_batch_s']} s); @ {args.rate:g} msg/s latency p50 "
              f"{lat.get('latency_p50_s')} s, p95 {lat.get('latency_p95_s')} s, max {lat.get('latency_max_s')} s")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
