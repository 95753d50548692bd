"""Hourly compaction of a stream's lake, against the real broker, PostgreSQL and a lake folder.

While a writer thread keeps landing batches (with late readings into hours already compacted, and
one batch that fails after writing its files and is redone), compaction rewrites the same hours
again and again and a reader reads them: the reader never sees a row twice or misses a durable one,
and at the end each hour is one file holding exactly the durable offsets, rows unchanged, with the
offset ranges it covers in its metadata. The Dagster asset compacts a closed hour and refuses an open one.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from platform_assets.sources.config import load_catalogue
from platform_assets.streaming import compaction
from platform_assets.streaming.assets import build_compaction_asset, stream_keys
from platform_assets.streaming.batch import StreamTarget, process_batch
from platform_assets.streaming.config import Compaction, StreamCatalogue, load_streams
from platform_assets.streaming.microbatch import OFFSET, PARTITION
from platform_assets.streaming.topics import ensure_topics
from resources import build_resources
from resources.kafka import OffsetRange
from resources.stream_store import StreamStore
from tests.integration.streaming_harness import STREAM, drop_topics, renamed

pytestmark = [pytest.mark.integration]
BASE = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=4)
HOURS = [BASE + pd.Timedelta(hours=i) for i in range(3)]


@pytest.fixture()
def lake_stream(platform, tmp_path, monkeypatch):
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    res = build_resources(resolved=True)
    base = renamed(load_streams(load_catalogue(), environ={}), uuid.uuid4().hex[:8])
    stream = base.streams[STREAM].model_copy(update={"anomalies": None, "compaction": Compaction(
        start=f"{BASE - pd.Timedelta(days=1):%Y-%m-%d-%H:00}", grace_minutes=10)})
    streams = StreamCatalogue(topics={stream.topic: base.topics[stream.topic], base.alerts_topic: base.topics[base.alerts_topic]},
                              alerts_topic=base.alerts_topic, streams={STREAM: stream})
    ensure_topics(res["kafka"].admin(), streams.topics)
    target = StreamTarget(STREAM, stream, streams, streams.contract(STREAM, load_catalogue()), stream_keys(STREAM, stream))
    yield {"res": res, "target": target, "store": StreamStore(warehouse=res["warehouse"])}
    drop_topics(res["kafka"].admin(), streams.topics)


def produce(s, n: int, rng) -> None:
    """Readings of four machines at random times in the three hours (late ones included)."""
    kafka, topic = s["res"]["kafka"], s["target"].stream.topic
    msgs = []
    for _ in range(n):
        m = f"M{int(rng.integers(1, 5)):03d}"
        ts = HOURS[int(rng.integers(0, 3))] + pd.Timedelta(seconds=int(rng.integers(0, 3600)))
        msgs.append((m.encode(), json.dumps({"machine_id": m, "ts": ts.isoformat(), "temperature": 60.0,
                                             "vibration": 2.0, "pressure": 6.0, "rpm": 1500.0, "power": 100.0}).encode()))
    kafka.produce(topic, msgs)


class FailOnce(StreamStore):
    """A store whose next transaction fails: the batch's files stay behind, unrecorded, until redone."""

    def record_batch(self, **kwargs):
        raise ConnectionError("warehouse lost mid-batch (test)")


def land(s, fail: bool = False) -> None:
    kafka, topic, store = s["res"]["kafka"], s["target"].stream.topic, s["store"]
    durable = store.durable_ends(topic)
    ranges = [OffsetRange(p, durable.get(p, 0), high) for p, (_, high) in kafka.watermarks(topic).items()
              if high > durable.get(p, 0)]
    if ranges:
        used = FailOnce(warehouse=store.warehouse) if fail else store
        process_batch(s["target"], kafka.read_ranges(topic, ranges), ranges, kafka=kafka, lake=s["res"]["lake"],
                      stream_store=used, commit=lambda offsets: None, run_id="test")


def durable_offsets(s) -> set[tuple[int, int]]:
    return {(p, o) for p, start, end in s["store"].recorded_ranges(s["target"].stream.topic) for o in range(start, end)}


def lake_keys(s) -> pd.DataFrame:
    table = compaction.read_stream(s["res"]["lake"], s["target"].lake_base)
    return table.select([PARTITION, OFFSET]).to_pandas() if table is not None else pd.DataFrame(columns=[PARTITION, OFFSET])


def test_compaction_loses_and_duplicates_nothing_while_the_stream_writes(lake_stream):
    s = lake_stream
    lake, base, store = s["res"]["lake"], s["target"].lake_base, s["store"]
    rng = np.random.default_rng(5)
    errors: list[BaseException] = []

    def writer():
        try:
            for i in range(12):
                produce(s, 150, rng)
                if i == 4:
                    with pytest.raises(ConnectionError):
                        land(s, fail=True)  # files written, nothing recorded: compaction must leave them
                land(s)  # (the same ranges again after the failure: their files are replaced)
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    compactions = []

    def compactor():
        try:
            while thread.is_alive():
                for d in compaction.hour_dirs(lake, base):
                    done = compaction.compact_hour(lake, d, store.recorded_ranges(s["target"].stream.topic))
                    compactions.extend([done.file] if done.file else [])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    other = threading.Thread(target=compactor)
    other.start()
    reads = 0
    while thread.is_alive() or other.is_alive():  # the reader, meanwhile
        before = durable_offsets(s)
        keys = lake_keys(s)
        assert not keys.duplicated().any(), "a reader saw a row twice"
        assert before <= set(zip(keys[PARTITION], keys[OFFSET])), "a reader missed a durable row"
        reads += 1
    thread.join()
    other.join()
    assert not errors, errors
    assert len(compactions) >= 3 and reads >= 3

    everything = compaction.read_stream(lake, base).to_pandas().sort_values([PARTITION, OFFSET]).reset_index(drop=True)
    for d in compaction.hour_dirs(lake, base):
        compaction.compact_hour(lake, d, store.recorded_ranges(s["target"].stream.topic))
    after = compaction.read_stream(lake, base).to_pandas().sort_values([PARTITION, OFFSET]).reset_index(drop=True)
    pd.testing.assert_frame_equal(after, everything)  # never a row changed
    marks = s["res"]["kafka"].watermarks(s["target"].stream.topic)
    assert set(zip(after[PARTITION], after[OFFSET])) == {(p, o) for p, (_, h) in marks.items() for o in range(h)}
    assert len(after) == sum(h for _, h in marks.values())
    dirs = compaction.hour_dirs(lake, base)
    assert len(dirs) == 3
    for d in dirs:
        files = lake.list_files(d)
        assert len(files) == 1 and files[0].split("/")[-1].startswith(compaction.COMPACTED_PREFIX), files
        meta = pq.read_schema(lake.path(files[0])).metadata
        ranges = json.loads(meta[compaction.RANGES_KEY])
        rows = pq.read_table(lake.path(files[0]), columns=[PARTITION, OFFSET]).to_pandas()
        assert sum(r["end"] - r["start"] for r in ranges) == len(rows)
        assert all(((rows[PARTITION] == r["partition"]) & rows[OFFSET].between(r["start"], r["end"] - 1)).sum()
                   == r["end"] - r["start"] for r in ranges)


def test_the_asset_compacts_a_closed_hour_and_refuses_an_open_one(lake_stream):
    s = lake_stream
    rng = np.random.default_rng(9)
    for _ in range(3):
        produce(s, 100, rng)
        land(s)
    stream = s["target"].stream
    asset = build_compaction_asset(STREAM, stream)
    resources = {"lake": s["res"]["lake"], "stream_store": s["store"]}
    closed = f"{HOURS[1]:%Y-%m-%d-%H:00}"
    before = compaction.read_hour(s["res"]["lake"], compaction.hour_dir(s["target"].lake_base, HOURS[1]))
    result = dg.materialize([asset], partition_key=closed, resources=resources)
    md = result.asset_materializations_for_node(asset.node_def.name)[0].metadata
    assert md["files_replaced"].value >= 3 and md["dagster/row_count"].value == before.num_rows
    assert sum(r["end"] - r["start"] for r in md["offset_ranges"].value) == before.num_rows
    # The latest hour partition has ended, but with an hour of grace it is still open.
    patient = build_compaction_asset(STREAM, stream.model_copy(update={"compaction": stream.compaction.model_copy(
        update={"grace_minutes": 60})}))
    latest = f"{pd.Timestamp.now(tz='UTC').floor('h') - pd.Timedelta(hours=1):%Y-%m-%d-%H:00}"
    failed = dg.materialize([patient], partition_key=latest, resources=resources, raise_on_error=False)
    assert not failed.success
    assert "still open" in str(failed.get_step_failure_events()[0].event_specific_data.error.message)
