"""Streaming benchmark: the platform's micro-batch path against the raw limit, and its latency.

In one run, on the same events:

1. **raw limit**: confluent-kafka consumes every message of a topic and pyarrow writes them as
   Parquet (JSON decoded into columns, one file per partition); no validation, no Dagster;
2. **platform, throughput**: the stream's micro-batch job (contract validation, dead letters, lake
   files, window partials, anomaly detection, one warehouse transaction, offset commit), executed
   in-process over the same offsets in batches of ``--batch`` messages;
3. **platform, latency**: a real ``dagster-daemon`` runs the stream sensor, which launches a run per
   micro-batch while a producer sends at a steady ``--rate`` for ``--seconds``; the latency of a
   message is from its event time (set when produced) to the warehouse commit of its batch;
4. **continuous mode**: the stream's consumer as one Dagster run (in this process, on a PostgreSQL
   instance like the demo's), over a backlog of the same size (throughput), then at a steady
   ``--rate`` and at 1,000 msg/s (latency, measured as in 3); each run is stopped by an interrupt,
   as a termination from the UI would.

Parts 3 and 4 run with predictions on the stream (a small champion registered under a registry
prefix of the benchmark's own, online features in a Redis database of its own) and anomalies in the
data, and also measure produce → alert (each alert's message on the alerts topic against its
reading's event time) and produce → prediction (the prediction message that carried each reading's
new features, against the reading's event time), p50/p95/max, with how many were accounted for.
A profile of batches of 1,000 messages (1 s at 1,000 msg/s) says where a batch's time goes.

Each part uses fresh topics, a fresh warehouse database and a fresh lake; all are removed at the end.

    .venv/bin/python tests/benchmarks/bench_streaming.py [--messages 100000] [--batch 20000]
        [--rate 200] [--seconds 60]

The last line of stdout is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
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
warnings.filterwarnings("ignore")

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from platform_assets.settings import load_local_defaults
from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.config import load_streams
from platform_assets.streaming.produce import FleetStream, produce
from platform_assets.streaming.topics import ensure_topics
from resources.kafka import OffsetRange
from tests.integration.conftest import _pg_admin
from tests.integration.streaming_harness import STREAM, Harness, renamed, with_predictions_topic


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def raw_limit(kafka, topic: str, total: int, out: Path) -> float:
    """Seconds to consume ``total`` messages and write them as Parquet, one file per partition."""
    started = time.perf_counter()
    consumer = kafka.consumer(group_id=f"platform.bench-raw-{uuid.uuid4().hex[:6]}")  # ACLs: platform.*
    consumer.subscribe([topic])
    rows: dict[int, list[dict]] = {}
    seen = 0
    while seen < total:
        for msg in consumer.consume(num_messages=10_000, timeout=1.0):
            if msg.error():
                continue
            seen += 1
            try:
                doc = json.loads(msg.value())
            except ValueError:
                continue  # the raw path just skips what it cannot decode
            if isinstance(doc, dict):
                rows.setdefault(msg.partition(), []).append(doc)
    consumer.close()
    out.mkdir(parents=True, exist_ok=True)
    for part, docs in rows.items():
        pq.write_table(pa.Table.from_pylist(docs), out / f"p{part}.parquet")
    return time.perf_counter() - started


def platform_throughput(h: Harness, batch: int) -> tuple[float, int]:
    """Seconds for the micro-batch job to ingest the whole topic in batches of about ``batch``."""
    marks = h.kafka.watermarks(h.topic())
    job = h.defs.resolve_job_def(f"stream_{STREAM}_job")
    per_part = max(1, batch // len(marks))
    position = {p: low for p, (low, _) in marks.items()}
    runs, started = 0, time.perf_counter()
    while any(position[p] < high for p, (_, high) in marks.items()):
        ranges = [OffsetRange(p, position[p], min(high, position[p] + per_part))
                  for p, (_, high) in marks.items() if position[p] < high]
        config = {"ops": {h.asset_names[STREAM]: {"config": {"ranges": [r._asdict() for r in ranges]}}}}
        result = job.execute_in_process(run_config=config, instance=h.instance, raise_on_error=True,
                                        tags={"stream": STREAM})
        assert result.success
        for r in ranges:
            position[r.partition] = r.end
        runs += 1
    return time.perf_counter() - started, runs


def latency_under_load(streams, env: dict, rate: float, seconds: float, home: Path) -> dict:
    """Run dagster-daemon on the workspace while producing at ``rate``; latencies from the warehouse."""
    home.mkdir(parents=True, exist_ok=True)
    catalogue = home / "streams.yaml"
    catalogue.write_text(yaml.safe_dump(json.loads(streams.model_dump_json())))
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "local" / "dagster.yaml").read_text())
    env = {**env, "LAKE_ROOT": str(home / "lake")}  # a lake of its own: only this part's messages
    os.environ["LAKE_ROOT"] = env["LAKE_ROOT"]
    denv = {**os.environ, **env, "DAGSTER_HOME": str(home), "PLATFORM_STREAMS_FILE": str(catalogue)}
    daemon_log = open(home / "daemon.log", "wb")  # noqa: SIM115 (open while the daemon runs)
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                              cwd=ROOT, env=denv, stdout=daemon_log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # a group of its own: its code server goes with it
    h = Harness(streams)
    try:
        # Warm-up: wait for the daemon's first micro-batch before the timed window.
        produce(h.kafka, h.topic(), FleetStream(STREAM, seed=1), rate=1e6, count=50, duration=None, progress=False)
        deadline = time.monotonic() + 180
        while not _batches(env, h.topic()).get("n"):
            assert daemon.poll() is None, (home / "daemon.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the daemon launched no micro-batch within 180 s"
            time.sleep(1)
        t0 = pd.Timestamp.now(tz="UTC")
        log(f"  producing at {rate:g} msg/s for {seconds:g} s while the daemon runs the sensor")
        tally = produce(h.kafka, h.topic(), FleetStream(STREAM, seed=2), rate=rate, count=None, duration=seconds,
                        progress=False)
        deadline = time.monotonic() + 300
        while sum(high for _, high in h.kafka.watermarks(h.topic()).values()) > (_batches(env, h.topic()).get("end") or 0):
            assert time.monotonic() < deadline, ("backlog not drained within 300 s of the end of production:\n"
                                                 + (home / "daemon.log").read_text()[-4000:])
            time.sleep(1)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
        time.sleep(2)  # the code server's own shutdown
        with contextlib.suppress(ProcessLookupError):  # whatever of the group is left
            os.killpg(daemon.pid, signal.SIGKILL)
        daemon_log.close()
    lat = _latencies(env, Path(env["LAKE_ROOT"]), t0, h.topic())
    runs = _batches(env, h.topic(), since=t0)["runs"]
    return {"rate": rate, "seconds": seconds, "produced": tally["delivered"], "runs": runs,
            "latency_p50_s": round(float(np.percentile(lat, 50)), 2), "latency_p95_s": round(float(np.percentile(lat, 95)), 2),
            "latency_max_s": round(float(lat.max()), 2), "messages_measured": len(lat),
            **_signal_latencies(env, h, Path(env["LAKE_ROOT"]), t0)}


def _warehouse(env):
    import psycopg2

    return psycopg2.connect(host=os.environ["WAREHOUSE_HOST"], port=os.environ["WAREHOUSE_PORT"],
                            user=os.environ["WAREHOUSE_USER"], password=os.environ["WAREHOUSE_PASSWORD"],
                            dbname=env["WAREHOUSE_DB"])


def _batches(env, topic: str, since=None) -> dict:
    conn = _warehouse(env)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('streaming.batches')")
            if cur.fetchone()[0] is None:
                return {}
            cur.execute("SELECT count(*), coalesce(sum(end_offset - start_offset), 0), count(DISTINCT run_id) "
                        "FROM streaming.batches WHERE topic = %s AND written_at >= coalesce(%s, '-infinity'::timestamptz)",
                        (topic, since.to_pydatetime() if since is not None else None))
            n, msgs, runs = cur.fetchone()
            cur.execute("SELECT coalesce(sum(m), 0) FROM (SELECT max(end_offset) m FROM streaming.batches "
                        "WHERE topic = %s GROUP BY partition) x", (topic,))
            end = cur.fetchone()[0]
            return {"n": n, "messages": int(msgs), "runs": runs, "end": int(end)}
    finally:
        conn.close()


def _latencies(env, lake_root: Path, since: pd.Timestamp, topic: str) -> np.ndarray:
    """Event time → commit time of the batch that made each message durable, in seconds."""
    import pyarrow.dataset as ds

    conn = _warehouse(env)
    try:
        batches = pd.read_sql("SELECT partition, start_offset, end_offset, written_at FROM streaming.batches "
                              "WHERE topic = %(topic)s", conn, params={"topic": topic})
    finally:
        conn.close()
    lake = ds.dataset(lake_root / "stream" / STREAM, format="parquet", partitioning="hive") \
        .to_table(columns=["ts", "_partition", "_offset"]).to_pandas()
    lake = lake[lake["ts"] >= since]
    out = []
    for b in batches.itertuples():
        rows = lake[(lake["_partition"] == b.partition) & (lake["_offset"] >= b.start_offset) & (lake["_offset"] < b.end_offset)]
        out.append((pd.Timestamp(b.written_at) - rows["ts"]).dt.total_seconds().to_numpy())
    return np.concatenate(out) if out else np.array([np.nan])


def _stats(values: np.ndarray, prefix: str) -> dict:
    if not len(values):
        return {f"{prefix}_measured": 0}
    return {f"{prefix}_p50_s": round(float(np.percentile(values, 50)), 3),
            f"{prefix}_p95_s": round(float(np.percentile(values, 95)), 3),
            f"{prefix}_max_s": round(float(values.max()), 3), f"{prefix}_measured": len(values)}


def _topic_times(h: Harness, topic: str, field: str) -> dict[str, pd.Timestamp]:
    """``field`` of each message's JSON value → the message's timestamp (set when produced)."""
    marks = h.kafka.watermarks(topic)
    ranges = [OffsetRange(p, low, high) for p, (low, high) in marks.items() if high > low]
    out = {}
    for m in h.kafka.read_ranges(topic, ranges) if ranges else []:
        doc = json.loads(m.value)
        out[str(doc.get(field))] = pd.Timestamp(m.timestamp_ms, unit="ms", tz="UTC")
    return out


def _signal_latencies(env, h: Harness, lake_root: Path, since: pd.Timestamp) -> dict:
    """Produce → alert (per alert) and produce → prediction (per reading whose features a prediction
    carried), from the topics' message times, with how many of the recorded ones were found there."""
    import pyarrow.dataset as ds

    topic = h.topic()
    conn = _warehouse(env)
    try:
        alerts = pd.read_sql("SELECT alert_id, signal, event_time FROM streaming.alerts WHERE topic = %(t)s "
                             "AND event_time >= %(s)s", conn, params={"t": topic, "s": since.to_pydatetime()})
        preds = pd.read_sql("SELECT prediction_id, key, partition, \"offset\" FROM streaming.predictions "
                            "WHERE topic = %(t)s AND event_time >= %(s)s", conn,
                            params={"t": topic, "s": since.to_pydatetime()}) \
            if pd.read_sql("SELECT to_regclass('streaming.predictions') AS t", conn)["t"].iloc[0] else pd.DataFrame()
        batches = pd.read_sql("SELECT partition, start_offset, end_offset FROM streaming.batches WHERE topic = %(t)s",
                              conn, params={"t": topic})
    finally:
        conn.close()
    out = {"alerts_recorded": len(alerts), "predictions_recorded": len(preds)}
    sent = _topic_times(h, h.streams.alerts_topic, "alert_id")
    found = alerts[alerts["alert_id"].isin(sent)]
    out["alerts_on_topic"] = len(found)
    out |= _stats(np.array([(sent[a] - pd.Timestamp(t)).total_seconds()
                            for a, t in zip(found["alert_id"], found["event_time"])]), "alert")
    if len(preds) and h.streams.predictions_topic:
        published = _topic_times(h, h.streams.predictions_topic, "prediction_id")
        preds = preds[preds["prediction_id"].isin(published)].copy()
        out["predictions_on_topic"] = len(preds)
        preds["published"] = preds["prediction_id"].map(published)
        lake = ds.dataset(lake_root / "stream" / STREAM, format="parquet", partitioning="hive") \
            .to_table(columns=["ts", "machine_id", "_partition", "_offset"]).to_pandas()
        lake = lake[lake["ts"] >= since]
        # Each reading → its batch (the range holding its offset) → that batch's prediction of its machine.
        b = batches.sort_values("start_offset")
        lake = lake.sort_values("_offset")
        lake = pd.merge_asof(lake, b.rename(columns={"partition": "_partition"}), left_on="_offset",
                             right_on="start_offset", by="_partition")
        preds = pd.merge_asof(preds.sort_values("offset"), b, left_on="offset", right_on="start_offset", by="partition")
        joined = lake.merge(preds[["key", "partition", "start_offset", "published"]],
                            left_on=["machine_id", "_partition", "start_offset"],
                            right_on=["key", "partition", "start_offset"])
        out["readings_with_prediction"] = len(joined)
        out["readings_landed"] = len(lake)
        out |= _stats((joined["published"] - joined["ts"]).dt.total_seconds().to_numpy(), "prediction")
    return out


def register_champion(mlflow) -> str:
    """A small failure classifier on the feature set's columns, promoted champion: its version."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from platform_assets.ml.features import SIGNALS, machine_hourly_features

    rng = np.random.default_rng(0)
    hours = pd.date_range("2026-11-01", periods=48, freq="h", tz="UTC")
    hourly = pd.DataFrame([{"machine_id": f"M{m:03d}", "hour": t, **{s: rng.normal(60, 10) for s in SIGNALS}}
                           for m in range(1, 25) for t in hours])
    empty = pd.DataFrame(columns=["machine_id", "model", "rated_power_kw", "install_date"])
    features = machine_hourly_features(hourly, empty, pd.DataFrame(columns=["machine_id", "performed_at"]),
                                       pd.DataFrame(columns=["machine_id", "failure_time"]))
    cols = [c for c in features.columns if c not in ("machine_id", "as_of", "source_cutoff", "model",
                                                     "failure_within_24h", "hours_to_failure")]
    y = (features["avg_temperature"] > features["avg_temperature"].quantile(0.8)).astype(int)
    pipeline = make_pipeline(SimpleImputer(keep_empty_features=True), LogisticRegression(max_iter=500))
    pipeline.fit(features[cols], y)
    name = mlflow.registered_name("failure_within_24h")
    version = mlflow.log_sklearn(pipeline, name, features[cols].head(5))
    mlflow.promote(name, version)
    return version


def profile_batches(streams, lake_root: Path, batches: int = 10, size: int = 1000) -> dict:
    """Median seconds per step of a batch of ``size`` messages with predictions (process_batch)."""
    from platform_assets.streaming.assets import stream_keys, stream_predictor
    from platform_assets.streaming.batch import StreamTarget, process_batch
    from resources import build_resources

    os.environ["LAKE_ROOT"] = str(lake_root)
    res = build_resources(resolved=True)
    h = Harness(streams)
    ensure_topics(h.kafka.admin(), streams.topics)
    produce(h.kafka, h.topic(), FleetStream(STREAM, seed=4, anomalies=0.002), rate=1e7, count=batches * size,
            duration=None, progress=False)
    stream = streams.streams[STREAM]
    target = StreamTarget(STREAM, stream, streams, streams.contract(STREAM, load_catalogue()), stream_keys(STREAM, stream))
    predictor = stream_predictor(target, kafka=res["kafka"], lake=res["lake"], stream_store=res["stream_store"],
                                 mlflow=res["mlflow"], online_store=res["online_store"])
    marks = h.kafka.watermarks(h.topic())
    steps, extra = [], []
    for i in range(batches):  # the i-th tenth of every partition: about ``size`` messages
        ranges = [OffsetRange(p, high * i // batches, high * (i + 1) // batches) for p, (_, high) in marks.items()]
        ranges = [r for r in ranges if r.end > r.start]
        batch = process_batch(target, h.kafka.read_ranges(h.topic(), ranges), ranges, kafka=res["kafka"],
                              lake=res["lake"], stream_store=res["stream_store"], commit=lambda o: None,
                              run_id="profile", predictor=predictor)
        if i:  # the first batch loads the champion and the state
            steps.append(batch.seconds)
            extra.append({k: batch.scored.status.get(k, 0.0) for k in ("features_seconds", "score_seconds")})
    out = {k: round(float(np.median([s[k] for s in steps])), 4) for k in steps[0]}
    out |= {k: round(float(np.median([e[k] for e in extra])), 4) for k in extra[0]}
    out["total"] = round(sum(float(np.median([s[k] for s in steps])) for k in steps[0]), 4)
    out["messages_per_batch"] = size
    return out


CPROFILE: Path | None = None  # --cprofile: each continuous run's profile (main thread) goes here


def continuous_run(streams, instance, lake_root: Path, until, started=None) -> float:
    """Seconds the consumer ran as a Dagster run in this process until ``until()`` held; then it is
    interrupted (SIGINT, what a termination delivers) and the run ends canceled."""
    import cProfile

    import dagster as dg

    os.environ["LAKE_ROOT"] = str(lake_root)
    h = Harness(streams)
    job = h.defs.resolve_job_def(f"stream_{STREAM}_job")

    stopped, finished = threading.Event(), threading.Event()

    def watch():
        if started:
            started()
        while not until():
            if finished.is_set():
                return
            time.sleep(0.1)
        stopped.set()
        os.kill(os.getpid(), signal.SIGINT)

    t0 = time.perf_counter()
    threading.Thread(target=watch, daemon=True).start()
    result = None
    profiler = cProfile.Profile() if CPROFILE else None
    if profiler:
        profiler.enable()
    try:
        result = job.execute_in_process(
            run_config={"ops": {h.asset_names[STREAM]: {"config": {"shard": 0, "parallelism": 1}}}},
            instance=instance, raise_on_error=False, tags={"stream": STREAM})
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        pass
    finally:
        finished.set()
        if profiler:
            profiler.disable()
            CPROFILE.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(str(CPROFILE / f"{lake_root.name}.prof"))
    if not stopped.is_set():
        errors = [e.event_specific_data.error.to_string() for e in (result.all_events if result else [])
                  if e.event_type_value == "STEP_FAILURE"]
        raise RuntimeError("the consumer run ended before it was stopped:\n" + "\n".join(errors)[-3000:])
    return time.perf_counter() - t0


def backlog_steps(instance) -> dict:
    """Where the backlog run's time went: its batches (from their materialisations' ``step_seconds``),
    microseconds per message per step, and the seconds outside ``process_batch`` (run start-up, polls,
    materialisation events)."""
    import dagster as dg

    records = instance.fetch_materializations(dg.AssetKey(["lake", "stream", STREAM]), limit=10_000).records
    mats = [r.asset_materialization.metadata for r in records]
    messages = sum(m["messages"].value for m in mats)
    steps: dict[str, float] = {}
    for m in mats:
        for step, secs in m["step_seconds"].value.items():
            steps[step] = steps.get(step, 0.0) + secs
    return {"batches": len(mats), "batch_seconds": round(sum(steps.values()), 3),
            "us_per_message": {k: round(v / max(messages, 1) * 1e6, 1) for k, v in steps.items()}}


def continuous_mode(base, env: dict, suffix: str, messages: int, rates: list[float], seconds: float,
                    home: Path, topics: list[str]) -> dict:
    """Throughput over a backlog, then latency at each steady rate, each on topics of its own."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "local" / "dagster.yaml").read_text())
    out = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        from resources import build_resources

        kafka = build_resources(resolved=True)["kafka"]
        streams = with_predictions_topic(kafka, renamed(base, f"cont-{suffix}", mode="continuous", predictions=True))
        h = Harness(streams)
        topics += list(streams.topics)
        ensure_topics(h.kafka.admin(), streams.topics)
        produce(h.kafka, h.topic(), FleetStream(STREAM, seed=7, malformed=0.01), rate=1e7, count=messages,
                duration=None, progress=False)
        log("continuous: backlog throughput")
        secs = continuous_run(streams, instance, home / "lake-backlog",
                              lambda: (_batches(env, h.topic()).get("end") or 0) >= messages)
        out["throughput"] = {"seconds": round(secs, 3), "events_per_s": round(messages / secs),
                             **backlog_steps(instance)}
        for rate in rates:
            streams = with_predictions_topic(h.kafka, renamed(base, f"cont{int(rate)}-{suffix}", mode="continuous",
                                                              predictions=True))
            h = Harness(streams)
            topics += list(streams.topics)
            ensure_topics(h.kafka.admin(), streams.topics)
            state = {}

            def start_producing(h=h, rate=rate, state=state):
                produce(h.kafka, h.topic(), FleetStream(STREAM, seed=1), rate=1e6, count=50, duration=None,
                        progress=False)
                while (_batches(env, h.topic()).get("end") or 0) < 50:
                    time.sleep(0.1)  # the consumer is up
                state["t0"] = pd.Timestamp.now(tz="UTC")
                log(f"continuous: producing at {rate:g} msg/s for {seconds:g} s")
                state["tally"] = produce(h.kafka, h.topic(), FleetStream(STREAM, seed=2, anomalies=0.002), rate=rate,
                                         count=None, duration=seconds, progress=False)

            def drained(h=h, state=state):
                return "tally" in state and (_batches(env, h.topic()).get("end") or 0) >= 50 + state["tally"]["delivered"]

            producer = threading.Thread(target=start_producing, daemon=True)
            lake = home / f"lake-{int(rate)}"
            continuous_run(streams, instance, lake, drained, started=producer.start)
            lat = _latencies(env, lake, state["t0"], h.topic())
            batches = _batches(env, h.topic(), since=state["t0"])
            out[f"latency_at_{int(rate)}"] = {
                "rate": rate, "seconds": seconds, "produced": state["tally"]["delivered"], "batches": batches["n"],
                "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
                "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
                "latency_max_s": round(float(lat.max()), 3), "messages_measured": len(lat),
                **_signal_latencies(env, h, lake, state["t0"])}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--continuous-rates", default="200,1000", help="steady rates for continuous mode")
    parser.add_argument("--parts", default="micro_batch,continuous",
                        help="modes to measure, comma-separated (micro_batch, continuous); the raw consumer always runs")
    parser.add_argument("--cprofile", type=Path, help="write a cProfile of each continuous run (consumer thread) here")
    args = parser.parse_args()
    global CPROFILE
    CPROFILE = args.cprofile
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"micro_batch", "continuous"}
    if unknown or not parts:
        parser.error(f"--parts takes micro_batch and/or continuous, not {sorted(unknown) or 'nothing'}")
    load_local_defaults()
    suffix = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    # Databases of its own, the Dagster instance's too: its daemon must not share the demo's runs.
    env = {"WAREHOUSE_DB": f"bench_stream_{suffix}", "DAGSTER_PG_DB": f"bench_dagster_{suffix}",
           "LAKE_ROOT": str(tmp / "lake"), "REDIS_DB": "13", "MLFLOW_REGISTRY_PREFIX": f"bench{suffix}_",
           "MLFLOW_EXPERIMENT_PREFIX": f"bench-{suffix}"}
    for db in (env["WAREHOUSE_DB"], env["DAGSTER_PG_DB"]):
        _pg_admin(f'CREATE DATABASE "{db}"')
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    topics_to_delete: list[str] = []
    try:
        from resources import build_resources

        base = load_streams(load_catalogue())
        kafka = build_resources(resolved=True)["kafka"]
        log(f"champion: {register_champion(build_resources(resolved=True)['mlflow'])} "
            f"(registry prefix {env['MLFLOW_REGISTRY_PREFIX']})")
        # Every platform part scores the stream with that champion (predictions on, as in the demo).
        streams = with_predictions_topic(kafka, renamed(base, f"bench-{suffix}", predictions=True))
        h = Harness(streams)
        topics_to_delete += list(streams.topics)
        ensure_topics(h.kafka.admin(), streams.topics)
        log(f"producing {args.messages:,} messages to {h.topic()}")
        produce(h.kafka, h.topic(), FleetStream(STREAM, seed=7, malformed=0.01), rate=1e7, count=args.messages,
                duration=None, progress=False)
        log("raw limit: consume + Parquet")
        raw_s = raw_limit(h.kafka, h.topic(), args.messages, tmp / "raw")
        modes: dict = {}
        result = {"benchmark": "streaming", "messages": args.messages,
                  "raw_s": round(raw_s, 3), "raw_events_per_s": round(args.messages / raw_s), "modes": modes}
        if "micro_batch" in parts:
            log("platform: micro-batch job in-process")
            platform_s, runs = platform_throughput(h, args.batch)
            log("platform: latency under a steady rate with the daemon")
            streams2 = with_predictions_topic(h.kafka, renamed(base, f"lat-{suffix}", predictions=True))
            topics_to_delete += list(streams2.topics)
            ensure_topics(h.kafka.admin(), streams2.topics)
            latency = latency_under_load(streams2, env, args.rate, args.seconds, tmp / "dagster")
            result.update({"platform_s": round(platform_s, 3), "platform_events_per_s": round(args.messages / platform_s),
                           "platform_runs": runs, "batch_messages": args.batch,
                           "ratio_raw_over_platform": round(platform_s / raw_s, 2), "latency": latency})
            modes["micro_batch"] = {"ratio_raw_over_platform": round(platform_s / raw_s, 2),
                                    "latency_p95_s": latency["latency_p95_s"], "rate": args.rate,
                                    "alert_p95_s": latency.get("alert_p95_s"),
                                    "prediction_p95_s": latency.get("prediction_p95_s")}
        if "continuous" in parts:
            log("profile: batches of 1,000 messages with predictions")
            prof_streams = with_predictions_topic(kafka, renamed(base, f"prof-{suffix}", mode="continuous",
                                                                 predictions=True))
            topics_to_delete += list(prof_streams.topics)
            profile = profile_batches(prof_streams, tmp / "lake-profile")
            log("continuous mode: one long-running run")
            rates = [float(r) for r in args.continuous_rates.split(",") if r.strip()]
            cont = continuous_mode(base, env, suffix, args.messages, rates, args.seconds, tmp / "continuous",
                                   topics_to_delete)
            cont_ratio = round(cont["throughput"]["seconds"] / raw_s, 2)
            worst = max((v for k, v in cont.items() if k.startswith("latency_at_")), key=lambda v: v["rate"])
            result.update({"continuous": cont, "profile_batch_1000": profile})
            modes["continuous"] = {"ratio_raw_over_platform": cont_ratio, "latency_p95_s": worst["latency_p95_s"],
                                   "rate": worst["rate"], "alert_p95_s": worst.get("alert_p95_s"),
                                   "prediction_p95_s": worst.get("prediction_p95_s"),
                                   "events_per_s": cont["throughput"]["events_per_s"]}
        print(f"raw limit      {result['raw_events_per_s']:>9,} events/s  ({raw_s:.2f} s)")
        signal_rows = []
        if "micro_batch" in modes:
            print(f"platform       {result['platform_events_per_s']:>9,} events/s  ({platform_s:.2f} s, {runs} runs of "
                  f"~{args.batch:,})  = {result['ratio_raw_over_platform']}x the raw time")
            print(f"latency @ {args.rate:g} msg/s for {args.seconds:g} s: p50 {latency['latency_p50_s']} s, "
                  f"p95 {latency['latency_p95_s']} s, max {latency['latency_max_s']} s over {latency['runs']} runs")
            signal_rows.append(("micro-batch", latency))
        if "continuous" in modes:
            print(f"continuous     {cont['throughput']['events_per_s']:>9,} events/s  "
                  f"({cont['throughput']['seconds']:.2f} s, one run)  = {cont_ratio}x the raw time")
            for key, v in cont.items():
                if key.startswith("latency_at_"):
                    print(f"continuous latency @ {v['rate']:g} msg/s: p50 {v['latency_p50_s']} s, p95 {v['latency_p95_s']} s, "
                          f"max {v['latency_max_s']} s over {v['batches']} batches")
                    signal_rows.append((f"continuous @ {v['rate']:g}", v))
        for label, v in signal_rows:
            for what in ("alert", "prediction"):
                if v.get(f"{what}_p50_s") is not None:
                    print(f"{label} produce→{what}: p50 {v[f'{what}_p50_s']} s, p95 {v[f'{what}_p95_s']} s, "
                          f"max {v[f'{what}_max_s']} s ({v[f'{what}_measured']} measured)")
        if "continuous" in modes:
            print(f"batch of {profile['messages_per_batch']} with predictions, median seconds per step: "
                  + ", ".join(f"{k} {v}" for k, v in profile.items() if k != "messages_per_batch"))
        print(json.dumps(result))
        return 0
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        try:
            from resources import build_resources  # the platform's settings: SASL_SSL as its own user

            admin = build_resources(resolved=True)["kafka"].admin()
            for topic, future in admin.delete_topics(sorted(set(topics_to_delete))).items():
                try:
                    future.result(30)
                except Exception as exc:  # noqa: BLE001 - e.g. a topic never created
                    log(f"topic {topic} not deleted: {exc}")
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
            log(f"could not delete topics: {exc}")
        for db in (env["WAREHOUSE_DB"], env["DAGSTER_PG_DB"]):
            _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        try:  # the benchmark's champion and online rows
            os.environ.update({k: env[k] for k in ("REDIS_DB", "MLFLOW_REGISTRY_PREFIX")})
            from resources import build_resources

            res = build_resources(resolved=True)
            client = res["mlflow"].client()
            for m in client.search_registered_models(filter_string=f"name LIKE '{env['MLFLOW_REGISTRY_PREFIX']}%'"):
                client.delete_registered_model(m.name)
            res["online_store"].client().flushdb()
        except Exception as exc:  # noqa: BLE001
            log(f"could not remove the benchmark's model or online rows: {exc}")
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
