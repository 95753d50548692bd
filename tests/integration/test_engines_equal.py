"""Both processing engines over the same lake produce the same processed table, marts and counts.

The session's batch run (``batch_run``) used the local default, DuckDB. Here the engine assets run
again with ``PROCESSING_ENGINE=spark`` (``local[2]``, in this process) over a copy of that run's lake
into a warehouse database of their own; row counts and checksums must be equal table by table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import uuid

import dagster as dg
import pytest

from tests.integration.conftest import DAYS, START
from tests.integration.test_spark_cluster import SPARK_MARTS, mart_digest, warehouse_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
END = START + dt.timedelta(days=DAYS - 1)
PROCESSED = dg.AssetKey(["lake", "processed", "sensor_readings"])
ENGINE_ASSETS = [PROCESSED, *(dg.AssetKey(["warehouse", "marts", m]) for m in SPARK_MARTS)]
COUNTS = ["dagster/row_count", "clean_rows", "duplicates_removed", "outlier_readings",
          "readings_of_unregistered_machines"]


def lake_digest(root) -> tuple[int, str]:
    """Row count and checksum of the processed readings, however the engine split them into files
    and stored the instants (Spark's direct writes use Parquet's INT96, read back without a zone)."""
    import pyarrow.dataset as ds

    frame = ds.dataset(root / "processed" / "sensor_readings", format="parquet", partitioning="hive").to_table()
    frame = frame.to_pandas()
    for col in frame.select_dtypes(["datetime", "datetimetz"]).columns:
        ts = frame[col].dt.tz_convert("UTC").dt.tz_localize(None) if frame[col].dt.tz else frame[col]
        frame[col] = ts.astype("datetime64[us]")
    frame = frame[sorted(frame.columns)]
    floats = frame.select_dtypes("float").columns
    frame[floats] = frame[floats].round(6)
    frame = frame.sort_values(["machine_id", "ts"], ignore_index=True)
    return len(frame), hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def spark_run(batch_run, platform, tmp_path_factory):
    from tests.integration.conftest import _pg_admin
    from tests.integration.pipeline import failure_messages, run_assets

    lake = tmp_path_factory.mktemp("spark-engine-lake") / "lake"
    shutil.copytree(platform.lake_root, lake, ignore=shutil.ignore_patterns("raw"))
    shutil.rmtree(lake / "processed" / "sensor_readings")  # Spark must write it, not inherit it
    db = f"t_wh_spark_{uuid.uuid4().hex[:8]}"
    _pg_admin(f'CREATE DATABASE "{db}"')
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in {"PROCESSING_ENGINE": "spark", "SPARK_MASTER": "local[2]", "SPARK_LAKE_ACCESS": "auto",
                               "LAKE_ROOT": str(lake), "WAREHOUSE_DB": db}.items():
                mp.setenv(key, value)
            result = run_assets(START, END, selection=ENGINE_ASSETS)
        assert result.success, failure_messages(result)
        yield {"result": result, "lake": lake, "warehouse": warehouse_for(db)}
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_each_run_names_its_engine(batch_run, spark_run):
    from tests.integration.pipeline import metadata

    assert metadata(batch_run, PROCESSED)["engine"] == "duckdb"  # the local default (services.env)
    assert metadata(spark_run["result"], PROCESSED)["engine"] == "spark"
    materialised = {e.asset_key for e in spark_run["result"].get_asset_materialization_events()}
    assert materialised == set(ENGINE_ASSETS)


def test_processed_readings_are_equal(spark_run, platform):
    on_spark, on_duckdb = lake_digest(spark_run["lake"]), lake_digest(platform.lake_root)
    assert on_spark == on_duckdb and on_duckdb[0] > 0


def test_marts_are_equal(spark_run, warehouse):
    for mart in SPARK_MARTS:
        on_spark, on_duckdb = mart_digest(spark_run["warehouse"], mart), mart_digest(warehouse, mart)
        assert on_spark == on_duckdb and on_duckdb[0] > 0, mart


def test_metadata_counts_and_checks_are_equal(batch_run, spark_run):
    from tests.integration.pipeline import check_results, metadata

    duck, spark = metadata(batch_run, PROCESSED), metadata(spark_run["result"], PROCESSED)
    assert {k: duck[k] for k in COUNTS} == {k: spark[k] for k in COUNTS}
    assert duck["duplicates_removed"] > 0 and duck["outlier_readings"] > 0
    engine_checks = {k: v for k, v in check_results(batch_run).items()
                     if k[0] in {a.to_user_string() for a in ENGINE_ASSETS}}
    assert engine_checks and engine_checks == check_results(spark_run["result"])
