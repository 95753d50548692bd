"""Every way into the lake reads and writes the same data in the same layout: Spark's two
lake-access modes and the DuckDB engine (tiny frames)."""

import datetime as dt

import pandas as pd
import pyarrow as pa
import pytest

from resources.engine import ProcessingEngine
from resources.lake import LakeResource
from resources.lake_io_manager import PART_FILE
from resources.spark import SparkResource
from resources.spark_lake import read_days, read_snapshot, write_days

D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)


def spark_engine(mode: str) -> ProcessingEngine:
    return ProcessingEngine(kind="spark", spark=SparkResource(lake_access=mode))


@pytest.fixture
def lake(tmp_path):
    lake = LakeResource(root=str(tmp_path / "lake"))
    for day, values in ((D1, [1.0, 2.0]), (D2, [3.0])):
        ts = pd.to_datetime([f"{day}T00:0{i}:00Z" for i in range(len(values))], utc=True).astype("datetime64[us, UTC]")
        frame = pd.DataFrame({"machine_id": ["M1"] * len(values), "ts": ts, "value": values})
        lake.write_parquet(f"clean/r/date={day}/{PART_FILE}", pa.Table.from_pandas(frame, preserve_index=False))
    lake.write_parquet("clean/s/data.parquet", pa.table({"machine_id": ["M1"], "site": ["S1"]}))
    return lake


def rows(df):
    return sorted(tuple(r) for r in df.collect())


@pytest.mark.slow  # a local Spark session
def test_arrow_mode_reads_what_direct_mode_reads(spark, lake):
    direct, arrow = spark_engine("direct"), spark_engine("arrow")
    d, a = read_days(direct, lake, "clean/r", [D1, D2]), read_days(arrow, lake, "clean/r", [D1, D2])
    assert d.schema == a.schema and d.columns[-1] == "date"
    assert rows(d) == rows(a) and len(rows(a)) == 3
    assert rows(read_snapshot(direct, lake, "clean/s/data.parquet")) == rows(
        read_snapshot(arrow, lake, "clean/s/data.parquet"))
    with pytest.raises(FileNotFoundError, match="date=2026-11-03"):
        read_days(arrow, lake, "clean/r", [D3])


@pytest.mark.slow
def test_duckdb_reads_what_spark_reads(spark, lake):
    duck = ProcessingEngine(kind="duckdb", spark=SparkResource())
    assert duck.lake_access_mode(lake_is_local=True) == "arrow"
    d, s = read_days(duck, lake, "clean/r", [D1, D2]), read_days(spark_engine("direct"), lake, "clean/r", [D1, D2])
    assert d.columns == s.columns == ["machine_id", "ts", "value", "date"]
    assert rows(d) == rows(s) and len(rows(d)) == 3
    duck.release()


def test_duckdb_writes_one_file_per_day_and_replaces_the_window(lake):
    duck = ProcessingEngine(kind="duckdb", spark=SparkResource())
    frame = read_days(duck, lake, "clean/r", [D1, D2])
    write_days(duck, lake, frame, "processed/r", [D1, D2, D3])
    assert lake.list_files("processed/r/date=2026-11-01") == [f"processed/r/date=2026-11-01/{PART_FILE}"]
    written = lake.read_parquet(f"processed/r/date=2026-11-01/{PART_FILE}")
    assert written.num_rows == 2 and str(written.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert lake.read_parquet(f"processed/r/date=2026-11-03/{PART_FILE}").num_rows == 0
    assert rows(read_days(duck, lake, "processed/r", [D1, D2])) == rows(frame)
    with pytest.raises(ValueError, match="outside the run's partitions"):
        write_days(duck, lake, frame, "processed/r", [D1])
    duck.release()


@pytest.mark.slow
def test_arrow_mode_writes_one_file_per_day_and_replaces_the_window(spark, lake):
    arrow = spark_engine("arrow")
    frame = read_days(arrow, lake, "clean/r", [D1, D2])
    write_days(arrow, lake, frame, "processed/r", [D1, D2, D3])
    assert lake.list_files("processed/r/date=2026-11-01") == [f"processed/r/date=2026-11-01/{PART_FILE}"]
    assert lake.read_parquet(f"processed/r/date=2026-11-03/{PART_FILE}").num_rows == 0  # a day without rows
    back = read_days(spark_engine("direct"), lake, "processed/r", [D1, D2, D3])
    assert rows(back) == rows(frame)
    # A rerun of one day replaces that day only.
    write_days(arrow, lake, frame.where("date = '2026-11-02'"), "processed/r", [D2])
    assert len(rows(read_days(arrow, lake, "processed/r", [D1, D2]))) == 3
    with pytest.raises(ValueError, match="outside the run's partitions"):
        write_days(arrow, lake, frame, "processed/r", [D1])
