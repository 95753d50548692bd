"""Where Spark finds the lake: absolute local locations, s3a for object stores, and the access mode."""

import os

import pytest

from resources.lake import LakeResource
from resources.spark import LAKE_ACCESS_ENV, SparkResource


def test_local_uri_is_absolute_so_executors_elsewhere_find_it(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    lake = LakeResource(root="data/lake")
    assert lake.is_local
    assert lake.uri("clean", "x") == str(tmp_path / "data" / "lake" / "clean" / "x")
    assert lake.path("clean", "x") == "data/lake/clean/x"  # pyarrow itself keeps the configured path
    assert LakeResource(root="file:///srv/lake/").uri("raw") == "/srv/lake/raw"


def test_object_store_uri_is_s3a_without_pyarrow_options():
    lake = LakeResource(root="s3://bucket/lake?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1")
    assert not lake.is_local
    assert lake.uri("processed", "sensor_readings") == "s3a://bucket/lake/processed/sensor_readings"


@pytest.mark.parametrize(("setting", "env", "local", "expected"), [
    (None, None, True, "direct"),
    (None, None, False, "arrow"),
    ("auto", "direct", False, "arrow"),  # the resource's own setting wins over the environment
    (None, "direct", False, "direct"),  # a cluster with hadoop-aws reads s3a itself
    (None, " Arrow ", True, "arrow"),
    ("arrow", None, True, "arrow"),
])
def test_lake_access_mode(monkeypatch, setting, env, local, expected):
    if env is None:
        monkeypatch.delenv(LAKE_ACCESS_ENV, raising=False)
    else:
        monkeypatch.setenv(LAKE_ACCESS_ENV, env)
    assert SparkResource(lake_access=setting).lake_access_mode(lake_is_local=local) == expected


def test_unknown_lake_access_mode_names_the_setting(monkeypatch):
    monkeypatch.setenv(LAKE_ACCESS_ENV, "hdfs")
    with pytest.raises(ValueError, match=LAKE_ACCESS_ENV):
        SparkResource().lake_access_mode(lake_is_local=True)
    assert os.environ[LAKE_ACCESS_ENV] == "hdfs"


@pytest.mark.parametrize(("setting", "env", "expected"), [
    (None, None, "duckdb"),  # the embedded engine unless told otherwise
    (None, "Spark", "spark"),
    ("duckdb", "spark", "duckdb"),  # the resource's own setting wins over the environment
])
def test_processing_engine_choice(monkeypatch, setting, env, expected):
    from resources.engine import ENGINE_ENV, ProcessingEngine

    if env is None:
        monkeypatch.delenv(ENGINE_ENV, raising=False)
    else:
        monkeypatch.setenv(ENGINE_ENV, env)
    engine = ProcessingEngine(kind=setting, spark=SparkResource(lake_access="direct"))
    assert engine.name == expected
    # DuckDB reads the lake through pyarrow always; Spark as its lake-access mode says.
    assert engine.lake_access_mode(lake_is_local=True) == ("arrow" if expected == "duckdb" else "direct")


def test_unknown_processing_engine_names_the_setting(monkeypatch):
    from resources.engine import ENGINE_ENV, ProcessingEngine

    monkeypatch.setenv(ENGINE_ENV, "polars")
    with pytest.raises(ValueError, match=f"{ENGINE_ENV}.*duckdb, spark.*'polars'"):
        _ = ProcessingEngine(spark=SparkResource()).name


def test_duckdb_persist_stores_a_table_until_released():
    import pyarrow as pa

    from resources.engine import ProcessingEngine

    engine = ProcessingEngine(kind="duckdb", spark=SparkResource())
    conn = engine.session._conn
    tables = lambda: set(conn.execute("SELECT table_name FROM duckdb_tables()").fetchall())
    before = tables()
    base = engine.from_arrow(pa.table({"x": [1, 2, 3]}))
    kept = engine.persist(base.where("x > 1"))
    assert engine.persist(base) is base  # already a table: nothing to store
    assert len(tables() - before) == 2 and kept.count() == 2
    engine.unpersist(kept)
    assert len(tables() - before) == 1 and base.count() == 3
    engine.release()
    assert tables() == before
