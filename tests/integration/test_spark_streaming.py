"""Spark Structured Streaming as the continuous engine, against the real broker (SASL_SSL) and PostgreSQL.

The same messages go through both engines, each into a warehouse database and a lake of its own:
the lake rows, dead letters, windows and alerts must be identical, and both must tile the topic
exactly once. Then engines take turns on one stream: each start resumes from the durable table,
so what the other engine recorded in between is never read again (Spark's checkpoint is not the truth).
Last, ``engine: spark`` in the catalogue runs the stream's Dagster job on Spark, in a process of its
own that is interrupted as a termination from the UI would (SIGINT).

    python -m tests.integration.test_spark_streaming CATALOGUE_JSON   # that process's entry point
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import dagster as dg
import pandas as pd
import pyarrow.dataset as ds
import pytest

from platform_assets.settings import PROJECT_ROOT
from platform_assets.sources.config import load_catalogue
from platform_assets.streaming import continuous, spark_engine
from platform_assets.streaming.assets import group_id, stream_keys, topic_key
from platform_assets.streaming.batch import StreamTarget
from platform_assets.streaming.config import StreamCatalogue
from platform_assets.streaming.topics import ensure_topics
from resources import build_resources
from resources.stream_store import StreamStore, stats_view
from tests.integration.conftest import _pg_admin
from tests.integration.streaming_harness import (
    STREAM,
    Harness,
    assert_exactly_once,
    drop_topics,
    send,
    streaming_definitions,
)
from tests.integration.test_streaming_continuous import continuous_catalogue, kill_in_second_batch

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture()
def stream(platform, tmp_path, monkeypatch):
    """The sensor readings stream on topics of its own; ``use(name)`` points the process at a fresh
    warehouse database and lake (the stream store is per database) and returns a Harness on them."""
    h0 = Harness(continuous_catalogue(max_wait=0.5, max_messages=1500))
    ensure_topics(h0.kafka.admin(), h0.streams.topics)
    databases = []

    def use(name: str) -> Harness:
        db = f"t_wh_spark_{name}_{uuid.uuid4().hex[:6]}"
        _pg_admin(f'CREATE DATABASE "{db}"')
        databases.append(db)
        monkeypatch.setenv("WAREHOUSE_DB", db)
        monkeypatch.setenv("LAKE_ROOT", str(tmp_path / f"lake_{name}"))
        h = Harness(h0.streams)
        h.lake_root = tmp_path / f"lake_{name}"
        return h

    yield h0, use
    monkeypatch.undo()  # back on the session's database before dropping this test's
    drop_topics(h0.kafka.admin(), h0.streams.topics)
    for db in databases:
        _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def consume(h: Harness, engine: str, until: int) -> list:
    """Run shard 0 of ``h``'s stream in this process on ``engine`` until ``until`` offsets are durable."""
    resources = build_resources(resolved=True)  # this engine's database and lake
    stream = h.streams.streams[STREAM]
    target = StreamTarget(STREAM, stream, h.streams, h.streams.contract(STREAM, load_catalogue()),
                          stream_keys(STREAM, stream))
    store = StreamStore(warehouse=resources["warehouse"])
    stop = lambda: sum(store.durable_ends(stream.topic).values()) >= until
    common = {"kafka": resources["kafka"], "lake": resources["lake"], "stream_store": resources["stream_store"],
              "group": group_id(STREAM), "topic_key": topic_key(stream.topic), "stop": stop}
    if engine == "spark":
        return list(spark_engine.consume(dg.build_op_context(), target, 0, 1, spark=resources["spark"], **common))
    return list(continuous.consume(dg.build_op_context(), target, 0, 1, **common))


def lake_rows(h: Harness) -> pd.DataFrame:
    table = ds.dataset(h.lake_root / "stream" / STREAM, format="parquet", partitioning="hive").to_table()
    frame = table.to_pandas()
    return frame[sorted(frame.columns)].sort_values(["_partition", "_offset"]).reset_index(drop=True)


def outputs(h: Harness) -> dict[str, pd.DataFrame]:
    wh, topic = h.resources["warehouse"], h.topic()
    return {
        "lake": lake_rows(h),
        "dead_letters": wh.query('SELECT partition, "offset", key, raw, reason, kafka_ts FROM streaming.dead_letters '
                                 'WHERE topic = %s ORDER BY 1, 2', (topic,)),
        "windows": wh.query(f"SELECT * FROM streaming.{stats_view(STREAM)} ORDER BY 1, 2"),
        "alerts": wh.query("SELECT * FROM streaming.alerts WHERE topic = %s ORDER BY 1", (topic,))
                  .drop(columns=["run_id", "detected_at"]),
    }


def test_both_engines_write_the_same_lake_rows_dead_letters_windows_and_alerts(stream):
    h0, use = stream
    clock_state = {"t": pd.Timestamp("2026-11-27 08:00", tz="UTC")}

    def clock():  # readings 5 s apart in event time: hours of history, so the anomaly rules can fire
        clock_state["t"] += pd.Timedelta(seconds=5)
        return clock_state["t"]

    sent = [send(h0, 2400, malformed=0.03, clock=clock, seed=4),
            send(h0, 600, malformed=0.03, anomalies=0.03, clock=clock, seed=5)]
    assert sum(s["delivered"] for s in sent) == 3000

    python = use("python")
    events_py = consume(python, "python", until=3000)
    spark = use("spark")
    events_spark = consume(spark, "spark", until=3000)

    for h in (python, spark):
        assert_exactly_once(h)
    got_py, got_spark = outputs(python), outputs(spark)
    assert len(got_py["lake"]) + len(got_py["dead_letters"]) == 3000
    assert len(got_py["dead_letters"]) > 0 and len(got_py["windows"]) > 0 and len(got_py["alerts"]) > 0
    for part in ("lake", "dead_letters", "windows", "alerts"):
        pd.testing.assert_frame_equal(got_spark[part], got_py[part], check_exact=False, rtol=1e-9, obj=part)
    lake_events = [e for e in events_spark if isinstance(e, dg.AssetMaterialization)
                   and e.asset_key == dg.AssetKey(["lake", "stream", STREAM])]
    assert lake_events and all(e.metadata["engine"].value == "spark" for e in lake_events)
    assert sum(e.metadata["messages"].value for e in lake_events) == 3000
    assert any(isinstance(e, dg.AssetMaterialization) for e in events_py)


def test_each_start_resumes_from_the_durable_table_whichever_engine_wrote_last(stream):
    _h0, use = stream
    h = use("turns")
    send(h, 1000, seed=11)
    consume(h, "spark", until=1000)
    send(h, 1000, seed=12)
    consume(h, "python", until=2000)  # recorded by the other engine: Spark must not read these again
    send(h, 1000, seed=13, malformed=0.05)
    consume(h, "spark", until=3000)

    assert_exactly_once(h)
    batches = h.resources["warehouse"].query(
        "SELECT count(*) AS n, sum(end_offset - start_offset) AS offsets FROM streaming.batches WHERE topic = %s",
        (h.topic(),))
    assert int(batches["offsets"].iloc[0]) == 3000


def test_spark_redoes_exactly_the_range_a_killed_python_consumer_left_half_done(stream, monkeypatch):
    _, use = stream
    h = use("redo")
    pending = kill_in_second_batch(h, "after_lake_write", monkeypatch)  # files written, range not recorded
    assert pending
    send(h, 1000, seed=2)
    consume(h, "spark", until=3000)
    assert_exactly_once(h)
    assert StreamStore(warehouse=h.resources["warehouse"]).pending_intents(h.topic(), list(range(6))) == []


def durable_total(h: Harness) -> int:
    return sum(StreamStore(warehouse=h.resources["warehouse"]).durable_ends(h.topic()).values())


def test_engine_spark_in_the_catalogue_runs_the_streams_dagster_job_on_spark(stream):
    _, use = stream
    h = use("job")
    spark_streams = h.streams.model_copy(update={"streams": {
        STREAM: h.streams.streams[STREAM].model_copy(update={"engine": "spark"})}})
    send(h, 2000, malformed=0.02, seed=21)
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.test_spark_streaming",
                             spark_streams.model_dump_json()], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=dict(os.environ), cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 240
        while durable_total(h) < 2000 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert durable_total(h) == 2000, f"not all durable (consumer exit code {proc.poll()})"
        proc.send_signal(signal.SIGINT)  # what terminating the run from the UI does
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    report = json.loads(out.strip().splitlines()[-1])
    assert report["status"] != "SUCCESS"  # a consumer never ends on its own: the interrupt ended it
    assert report["engines"] == ["spark"] and report["messages"] == 2000
    assert_exactly_once(h)


def _run_job(catalogue_json: str) -> None:
    """The subprocess: the stream's job in this process, until interrupted; a JSON report on stdout."""
    streams = StreamCatalogue.model_validate_json(catalogue_json)
    job = streaming_definitions(streams).resolve_job_def(f"stream_{STREAM}_job")
    instance = dg.DagsterInstance.ephemeral()
    with contextlib.suppress(BaseException):  # the interrupt may leave execute_in_process itself
        job.execute_in_process(instance=instance, raise_on_error=False)
    run = instance.get_runs()[0]
    lake = [e.dagster_event.event_specific_data.materialization for e in instance.all_logs(run.run_id)
            if e.dagster_event is not None and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
            and e.dagster_event.asset_key == dg.AssetKey(["lake", "stream", STREAM])]
    print(json.dumps({"status": instance.get_run_by_id(run.run_id).status.value,
                      "engines": sorted({m.metadata["engine"].value for m in lake}),
                      "messages": sum(m.metadata["messages"].value for m in lake)}), flush=True)


if __name__ == "__main__":
    _run_job(sys.argv[1])
