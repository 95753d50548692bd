"""Predictions on the stream, against the real broker, PostgreSQL, Redis and MLflow.

Readings of four machines over 26 hours go through the stream's batch protocol (``process_batch``,
as the continuous consumer and the micro-batch asset call it) with a predictor:

- training and serving agree: after every batch, each machine's online row in Redis equals the
  batch feature set's row for the same machine and hour, computed the batch way (the embedded
  engine's hourly marts, then ``machine_hourly_features``) from the readings landed so far;
- no champion: the batch lands and its metadata says why nothing was scored;
- a champion promoted while the stream runs is picked up; every prediction and model alert is
  recorded with its batch and traces to a landed reading (topic, partition, offset) and to the
  model version that made it, also on the predictions topic.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from platform_assets.batch import aggregates
from platform_assets.ml.features import machine_hourly_features
from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.assets import stream_keys, stream_predictor
from platform_assets.streaming.batch import StreamTarget, batch_metadata, process_batch
from platform_assets.streaming.config import StreamCatalogue, load_streams
from platform_assets.streaming.topics import ensure_topics
from resources import build_resources
from resources.engine import ProcessingEngine
from resources.kafka import OffsetRange
from resources.spark import SparkResource
from resources.stream_store import SCHEMA, StreamStore, partials_table
from tests.integration.streaming_harness import STREAM, drop_topics, renamed, with_predictions_topic

pytestmark = [pytest.mark.integration]
MODEL = "failure_within_24h"
BASE = pd.Timestamp("2026-11-02 00:00", tz="UTC")
MACHINES = ["M001", "M002", "M003", "M004"]
HOURS, EVERY_MIN = 26, 10
TOL = 1e-9


def readings() -> pd.DataFrame:
    """Every machine every 10 minutes, drifting, so hourly means, lags and deviations all move."""
    rng = np.random.default_rng(3)
    times = pd.date_range(BASE, periods=HOURS * 60 // EVERY_MIN, freq=f"{EVERY_MIN}min")
    rows = [{"machine_id": m, "ts": t, "temperature": round(60 + 3 * i + 0.2 * k + rng.normal(0, 1.5), 2),
             "vibration": round(2 + 0.1 * i + rng.gamma(2, 0.1), 3), "pressure": round(6 + rng.normal(0, 0.2), 3),
             "rpm": round(1500 + rng.normal(0, 20), 1), "power": round(100 + 5 * i + rng.normal(0, 3), 2)}
            for k, t in enumerate(times) for i, m in enumerate(MACHINES)]
    return pd.DataFrame(rows)


def context_frames() -> dict[str, pd.DataFrame]:
    """The slow inputs the batch feature asset reads, as the batch pipeline leaves them in the lake."""
    machines = pd.DataFrame({"machine_id": MACHINES, "site_id": ["S1", "S1", "S2", "S2"],
                             "model": ["A", "B", "A", "C"], "rated_power_kw": [150.0, 180.0, 150.0, 200.0],
                             "install_date": pd.to_datetime(["2020-01-01", "2021-06-01", "2019-03-15", "2022-02-02"])})
    maintenance = pd.DataFrame({"machine_id": ["M001", "M002", "M001"],
                                "performed_at": [BASE - pd.Timedelta(days=2), BASE + pd.Timedelta(hours=5, minutes=7),
                                                 BASE + pd.Timedelta(hours=20, minutes=30)]})
    failures = pd.DataFrame({"machine_id": ["M003", "M004"],
                             "failure_time": [BASE - pd.Timedelta(days=3), BASE + pd.Timedelta(hours=12, minutes=41)]})
    return {"machines": machines, "maintenance": maintenance, "failures": failures}


def batch_feature_set(landed: pd.DataFrame, ctx: dict[str, pd.DataFrame], engine: ProcessingEngine) -> pd.DataFrame:
    """The batch way: processed readings → the engine's machine_hourly mart → the feature set."""
    processed = landed.merge(ctx["machines"][["machine_id", "site_id"]], on="machine_id")
    processed = processed.assign(date=processed["ts"].dt.date, outlier_columns="",
                                 ts=pd.to_datetime(processed["ts"], utc=True).astype("datetime64[us, UTC]"))
    processed = processed[["machine_id", "site_id", "date", "ts", "temperature", "vibration", "pressure", "rpm",
                           "power", "outlier_columns"]]
    hourly = engine.to_pandas(aggregates.machine_hourly(engine.from_arrow(
        pa.Table.from_pandas(processed, preserve_index=False))))
    hourly["hour"] = pd.to_datetime(hourly["hour"], utc=True)
    return machine_hourly_features(hourly, ctx["machines"], ctx["maintenance"], ctx["failures"])


@pytest.fixture(scope="module")
def scored(platform, tmp_path_factory):
    """A stream with predictions on topics, a lake, a Redis database and a registry prefix of its own."""
    suffix = uuid.uuid4().hex[:8]
    # Redis database 12: no other test module writes there (test_serving uses 14, the contract test 13,
    # the ML fixtures 15), so only this stream's consumers write these machines' rows.
    env = {"LAKE_ROOT": str(tmp_path_factory.mktemp("pred") / "lake"), "REDIS_DB": "12",
           "MLFLOW_REGISTRY_PREFIX": f"s{suffix}_", "MLFLOW_EXPERIMENT_PREFIX": f"test-s{suffix}"}
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    res = build_resources(resolved=True)
    kafka, lake, online, mlflow = res["kafka"], res["lake"], res["online_store"], res["mlflow"]
    base = renamed(load_streams(load_catalogue(), environ={}), suffix, mode="continuous", predictions=True)
    stream = base.streams[STREAM].model_copy(update={"predictions": base.streams[STREAM].predictions.model_copy(
        update={"reload_seconds": 0.2, "threshold": 0.6})})
    base = with_predictions_topic(kafka, base)
    predictions_topic = base.predictions_topic
    topics = {t: base.topics[t] for t in (stream.topic, base.alerts_topic, predictions_topic)}
    streams = StreamCatalogue(topics=topics, alerts_topic=base.alerts_topic,
                              predictions_topic=predictions_topic, streams={STREAM: stream})
    ensure_topics(kafka.admin(), streams.topics)
    online.client().flushdb()
    # The minute partials are kept per stream name, and this suite's other modules run streams named
    # sensor_readings too (on topics of their own): this module's machines start with no history.
    with res["warehouse"].connect() as conn, conn.cursor() as cur:
        table = f"{SCHEMA}.{partials_table(STREAM)}"
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if cur.fetchone()[0]:
            cur.execute(f"DELETE FROM {table} WHERE machine_id = ANY(%s)", (MACHINES,))
        conn.commit()
    ctx = context_frames()
    lake.write_parquet("processed/machines/data.parquet", pa.Table.from_pandas(ctx["machines"], preserve_index=False))
    lake.write_parquet("clean/failures/data.parquet", pa.Table.from_pandas(ctx["failures"], preserve_index=False))
    for day, rows in ctx["maintenance"].groupby(ctx["maintenance"]["performed_at"].dt.date):
        lake.write_parquet(posixpath.join("clean/maintenance", f"date={day}", "part-0.parquet"),
                           pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False))
    frame = readings()
    kafka.produce(stream.topic, ((r["machine_id"].encode(), json.dumps({**r, "ts": r["ts"].isoformat()}).encode())
                                 for r in frame.to_dict("records")))
    target = StreamTarget(STREAM, stream, streams, streams.contract(STREAM, load_catalogue()), stream_keys(STREAM, stream))
    yield {"res": res, "streams": streams, "target": target, "ctx": ctx, "readings": frame,
           "store": StreamStore(warehouse=res["warehouse"]), "engine": ProcessingEngine(
               kind="duckdb", spark=SparkResource(master="local[1]", lake_access="auto"))}
    client = mlflow.client()
    for m in client.search_registered_models(filter_string=f"name LIKE 's{suffix}_%'"):
        client.delete_registered_model(m.name)
    online.client().flushdb()
    drop_topics(kafka.admin(), streams.topics)
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def predictor_for(s):
    r = s["res"]
    return stream_predictor(s["target"], kafka=r["kafka"], lake=r["lake"], stream_store=s["store"],
                            mlflow=r["mlflow"], online_store=r["online_store"])


def run_batches(s, predictor, chunks: int, upto: float = 1.0, after_each=None):
    """Process the topic from its durable end up to ``upto`` of each partition, in ``chunks`` batches."""
    kafka, topic = s["res"]["kafka"], s["target"].stream.topic
    durable = s["store"].durable_ends(topic)
    bounds = {p: (durable.get(p, 0), int(high * upto)) for p, (_, high) in kafka.watermarks(topic).items()}
    out = []
    for i in range(chunks):
        cut = lambda start, stop, k: start + (stop - start) * k // chunks
        ranges = [OffsetRange(p, cut(a, b, i), cut(a, b, i + 1)) for p, (a, b) in bounds.items()]
        ranges = [r for r in ranges if r.end > r.start]
        batch = process_batch(s["target"], kafka.read_ranges(topic, ranges), ranges, kafka=kafka, lake=s["res"]["lake"],
                              stream_store=s["store"], commit=lambda offsets: None, run_id=f"test-{i}",
                              predictor=predictor)
        out.append(batch)
        if after_each:
            after_each(batch)
    return out


def landed(s) -> pd.DataFrame:
    """The stream's lake rows so far (what the batch feature set would read)."""
    import pyarrow.dataset as ds

    path = s["res"]["lake"].path("stream", STREAM)
    return ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pandas()


def ensure_champion(s) -> str:
    """The current champion's version (one is fitted when this test runs alone)."""
    mlflow = s["res"]["mlflow"]
    current = mlflow.champion(mlflow.registered_name(MODEL))
    return str(current.version) if current is not None else fit_champion(s, flip=False)


def fit_champion(s, flip: bool) -> str:
    """A small classifier on the batch feature set, registered and promoted: its version."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    features = batch_feature_set(s["readings"], s["ctx"], s["engine"])
    cols = [c for c in features.columns if c not in ("machine_id", "as_of", "source_cutoff", "model",
                                                     "failure_within_24h", "hours_to_failure")]
    y = (features["avg_temperature"] > features["avg_temperature"].median()).astype(int)
    pipeline = make_pipeline(SimpleImputer(keep_empty_features=True), LogisticRegression(max_iter=500))
    pipeline.fit(features[cols], 1 - y if flip else y)
    mlflow = s["res"]["mlflow"]
    name = mlflow.registered_name(MODEL)
    version = mlflow.log_sklearn(pipeline, name, features[cols].head(5))
    mlflow.promote(name, version)
    return version


def test_online_features_equal_the_batch_feature_set_after_every_batch(scored):
    s = scored
    online, fs = s["res"]["online_store"], "machine_hourly"
    compared = []

    def compare(batch):
        expected = batch_feature_set(landed(s), s["ctx"], s["engine"])
        expected = expected.sort_values("as_of").groupby("machine_id").tail(1).set_index("machine_id")
        got = online.read_with_meta(fs, MACHINES)
        for m in sorted(batch.valid["machine_id"].unique()):
            row, want = got[m]["row"], expected.loc[m]
            assert got[m]["writer"] == "stream" and pd.Timestamp(row["as_of"]) == want["as_of"], \
                (m, got[m]["source"], got[m]["updated_at"], s["target"].stream.topic)
            for col, value in want.items():
                if col in ("failure_within_24h", "hours_to_failure"):
                    continue
                if isinstance(value, (float, np.floating, int, np.integer)) and not isinstance(value, bool):
                    assert (pd.isna(row[col]) and pd.isna(value)) or row[col] == pytest.approx(float(value), rel=TOL,
                                                                                               abs=TOL), (m, col)
                else:
                    assert str(row[col]) == str(value), (m, col)
            compared.append((m, want["as_of"]))

    # The first half in five batches with one predictor (its state in memory), then a new predictor
    # (a restarted consumer: the state re-read from the warehouse) for the rest.
    run_batches(s, predictor_for(s), chunks=5, upto=0.5, after_each=compare)
    run_batches(s, predictor_for(s), chunks=4, after_each=compare)
    assert len({a for _, a in compared}) >= 8  # rows of many different hours, mid-hour and complete


def test_no_champion_lands_data_and_says_so_then_a_promoted_champion_scores(scored):
    s = scored
    wh, topic = s["res"]["warehouse"], s["target"].stream.topic
    more = readings().assign(ts=lambda f: f["ts"] + pd.Timedelta(hours=HOURS))  # the next 26 hours
    s["res"]["kafka"].produce(topic, ((r["machine_id"].encode(), json.dumps({**r, "ts": r["ts"].isoformat()}).encode())
                                      for r in more.to_dict("records")))
    predictor = predictor_for(s)
    first = run_batches(s, predictor, chunks=1, upto=0.7)[0]
    md = batch_metadata(s["target"], first, s["res"]["lake"])
    assert md["lake"]["messages"] > 0 and "no champion yet" in md["lake"]["predictions_status"]
    assert md["predictions"]["dagster/row_count"] == 0

    v1 = fit_champion(s, flip=False)
    time.sleep(0.3)  # past reload_seconds: the next batch checks the alias
    with_v1 = run_batches(s, predictor, chunks=2, upto=0.85)
    v2 = fit_champion(s, flip=True)
    time.sleep(0.3)
    with_v2 = run_batches(s, predictor, chunks=2)
    versions = [b.scored.status.get("model_version") for b in (*with_v1, *with_v2)]
    assert versions == [v1, v1, v2, v2]

    preds = wh.query("SELECT * FROM streaming.predictions WHERE topic = %s", (topic,))
    made = pd.concat([b.scored.predictions for b in (*with_v1, *with_v2)], ignore_index=True)
    assert len(preds) == len(made) and set(preds["prediction_id"]) == set(made["prediction_id"])
    # Traceable: each prediction's (partition, offset) is a landed reading of its machine and time.
    lake = landed(s).set_index(["_partition", "_offset"])
    for p in preds.itertuples():
        src = lake.loc[(p.partition, p.offset)]
        assert src["machine_id"] == p.key and pd.Timestamp(src["ts"]) == pd.Timestamp(p.event_time)
    assert set(preds["model_version"]) == {v1, v2}
    assert (preds["alert"] == (preds["score"] > 0.6)).all() and preds["alert"].any()
    alerts = wh.query("SELECT * FROM streaming.alerts WHERE topic = %s AND signal = %s", (topic, f"model:{MODEL}"))
    flagged = preds[preds["alert"]]
    assert sorted(zip(alerts["partition"], alerts["offset"], alerts["model_version"])) == \
        sorted(zip(flagged["partition"], flagged["offset"], flagged["model_version"]))
    # The predictions topic carries each recorded prediction, keyed by its id.
    kafka = s["res"]["kafka"]
    ptopic = s["streams"].predictions_topic
    sent = kafka.read_ranges(ptopic, [OffsetRange(p, 0, high) for p, (_, high) in kafka.watermarks(ptopic).items()
                                      if high])
    on_topic = {m.key.decode(): json.loads(m.value) for m in sent}
    assert set(on_topic) == set(preds["prediction_id"])
    one = preds.iloc[0]
    assert on_topic[one["prediction_id"]]["model_version"] == one["model_version"]
    assert on_topic[one["prediction_id"]]["offset"] == one["offset"]


def test_a_micro_batch_run_scores_its_batch_and_reports_it_in_the_ui(scored):
    """The micro-batch asset (one Dagster run per batch, planned by the sensor) scores with the champion
    too, and its materialisation of the predictions asset names the model version and ranges."""
    from tests.integration.streaming_harness import Harness

    s = scored
    kafka = s["res"]["kafka"]
    streams = with_predictions_topic(kafka, renamed(load_streams(load_catalogue(), environ={}), uuid.uuid4().hex[:8],
                                                    predictions=True))
    h = Harness(streams)
    ensure_topics(kafka.admin(), streams.topics)
    try:
        frame = readings().assign(ts=lambda f: f["ts"] + pd.Timedelta(hours=3 * HOURS))
        kafka.produce(h.topic(), ((r["machine_id"].encode(), json.dumps({**r, "ts": r["ts"].isoformat()}).encode())
                                  for r in frame.to_dict("records")))
        champion = ensure_champion(s)
        results = h.drain()
        assert results
        key = stream_keys(STREAM, streams.streams[STREAM])["predictions"]
        mats = [m for r in results for m in r.asset_materializations_for_node(h.asset_names[STREAM])
                if m.asset_key == key]
        assert mats and all(m.metadata["model_version"].value == str(champion) for m in mats)
        assert sum(m.metadata["dagster/row_count"].value for m in mats) > 0
        assert all(m.metadata["offset_ranges"].value for m in mats)
    finally:
        drop_topics(kafka.admin(), streams.topics)


def test_a_predictions_topic_that_refuses_writes_costs_freshness_never_data(scored):
    """Publishing comes after the transaction: a broker refusing the predictions topic (here one the
    platform user has no ACL for) leaves the batch durable, its predictions recorded and Redis
    updated, and says so in the metadata; the consumer carries on."""
    s = scored
    kafka, topic = s["res"]["kafka"], s["target"].stream.topic
    refused = s["streams"].model_copy(update={"predictions_topic": f"zz-no-acl.{uuid.uuid4().hex[:6]}"})
    target = s["target"]._replace(streams=refused)
    more = readings().assign(ts=lambda f: f["ts"] + pd.Timedelta(hours=5 * HOURS))
    kafka.produce(topic, ((r["machine_id"].encode(), json.dumps({**r, "ts": r["ts"].isoformat()}).encode())
                          for r in more.head(40).to_dict("records")))
    durable = s["store"].durable_ends(topic)
    ranges = [OffsetRange(p, durable.get(p, 0), high) for p, (_, high) in kafka.watermarks(topic).items()
              if high > durable.get(p, 0)]
    predictor = stream_predictor(target, kafka=kafka, lake=s["res"]["lake"], stream_store=s["store"],
                                 mlflow=s["res"]["mlflow"], online_store=s["res"]["online_store"])
    batch = process_batch(target, kafka.read_ranges(topic, ranges), ranges, kafka=kafka, lake=s["res"]["lake"],
                          stream_store=s["store"], commit=lambda offsets: None, run_id="refused",
                          predictor=predictor)
    assert "publish_error" in batch.scored.status and len(batch.scored.predictions)
    assert s["store"].durable_ends(topic) == {**durable, **{r.partition: r.end for r in ranges}}
    recorded = s["res"]["warehouse"].query("SELECT prediction_id FROM streaming.predictions WHERE run_id = %s",
                                           ("refused",))
    assert set(recorded["prediction_id"]) == set(batch.scored.predictions["prediction_id"])
    rows = s["res"]["online_store"].read_with_meta("machine_hourly", MACHINES)
    assert {rows[m]["updated_at"] for m in batch.scored.sources} == {batch.scored.updated_at.isoformat()}
    md = batch_metadata(target, batch, s["res"]["lake"])
    assert "TOPIC_AUTHORIZATION" in md["lake"]["predictions_status"] or "undelivered" in md["lake"]["predictions_status"]


def test_the_continuous_consumer_scores_each_batch_and_reports_it(scored):
    """The long-running consumer's loop with a predictor: each batch with readings yields a materialisation
    of the predictions asset naming the champion's version (what the UI shows per batch)."""
    import dagster as dg

    from platform_assets.streaming import continuous
    from platform_assets.streaming.assets import group_id, topic_key

    s = scored
    kafka, store = s["res"]["kafka"], s["store"]
    streams = with_predictions_topic(kafka, renamed(load_streams(load_catalogue(), environ={}), uuid.uuid4().hex[:8],
                                                    mode="continuous", predictions=True))
    stream = streams.streams[STREAM].model_copy(update={"max_wait": 0.3})
    streams = streams.model_copy(update={"streams": {STREAM: stream}})
    ensure_topics(kafka.admin(), streams.topics)
    target = StreamTarget(STREAM, stream, streams, streams.contract(STREAM, load_catalogue()), stream_keys(STREAM, stream))
    champion = ensure_champion(s)
    try:
        frame = readings().assign(ts=lambda f: f["ts"] + pd.Timedelta(hours=7 * HOURS)).head(200)
        kafka.produce(stream.topic, ((r["machine_id"].encode(), json.dumps({**r, "ts": r["ts"].isoformat()}).encode())
                                     for r in frame.to_dict("records")))
        produced = sum(h for _, h in kafka.watermarks(stream.topic).values())
        events = list(continuous.consume(
            dg.build_op_context(), target, 0, 1, kafka=kafka, lake=s["res"]["lake"], stream_store=store,
            group=group_id(STREAM), topic_key=topic_key(stream.topic), predictor=predictor_for({**s, "target": target}),
            stop=lambda: sum(store.durable_ends(stream.topic).values()) >= produced))
        scored_events = [e for e in events if e.asset_key == target.keys["predictions"]]
        assert scored_events and {e.metadata["model_version"].value for e in scored_events} == {champion}
        assert sum(e.metadata["dagster/row_count"].value for e in scored_events) >= len(MACHINES)
    finally:
        drop_topics(kafka.admin(), streams.topics)
