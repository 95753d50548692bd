"""The same batch path with the lake on an S3-compatible object store (moto's server on 127.0.0.1).

pyarrow's S3 filesystem reaches it through the standard AWS environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``) and ``LAKE_ROOT=s3://bucket/lake``.
Two runs: the default engine (DuckDB, through pyarrow), and Spark reading and writing ``s3a://``
itself (``PROCESSING_ENGINE=spark``, ``SPARK_LAKE_ACCESS=direct``: hadoop-aws and the AWS SDK
bundle from ``deploy/local/spark``, configured from the same AWS environment). Sources, quarantine
and marts must match the local run's.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import subprocess
import sys
import uuid

import pytest

from platform_assets.sources.config import load_catalogue
from tests.integration.conftest import DAYS, START
from tests.integration.test_spark_cluster import mart_digest, warehouse_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
END = START + dt.timedelta(days=DAYS - 1)
BUCKET, PREFIX, SPARK_PREFIX = "platform-lake", "lake", "lake-spark"
MARTS = ["machine_hourly_stats", "machine_daily_stats", "site_daily_stats", "app_log_daily_stats", "dim_machines"]


@pytest.fixture(scope="module")
def object_store(tmp_path_factory):
    """moto's S3 server on a free port, with the lake's bucket; the env that points pyarrow at it."""
    import boto3

    from tests.integration.conftest import free_port, wait_http

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                                 "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, log, timeout=30)
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=BUCKET)
        yield {"env": env, "s3": s3}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_on_s3(object_store, prefix: str, settings: dict[str, str]):
    """data_pipeline over the demo week with LAKE_ROOT on the object store under ``prefix``, into a
    fresh warehouse DB; yields the result and that warehouse."""
    from tests.integration.conftest import _pg_admin
    from tests.integration.pipeline import failure_messages, run_assets

    db = f"t_wh_s3_{uuid.uuid4().hex[:8]}"
    _pg_admin(f'CREATE DATABASE "{db}"')
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in {**object_store["env"], "LAKE_ROOT": f"s3://{BUCKET}/{prefix}",
                               "WAREHOUSE_DB": db, **settings}.items():
                mp.setenv(key, value)
            result = run_assets(START, END)
        assert result.success, failure_messages(result)
        yield {"result": result, "warehouse": warehouse_for(db)}
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture(scope="module")
def s3_run(object_store, batch_run, platform):
    """The default engine (DuckDB, through pyarrow); Spark's mode ``auto`` would also pick arrow here."""
    yield from run_on_s3(object_store, PREFIX, {"SPARK_LAKE_ACCESS": "auto"})


@pytest.fixture(scope="module")
def s3a_spark_run(object_store, batch_run, platform):
    """Spark on ``s3a://`` itself: its executors read and write the bucket through hadoop-aws."""
    yield from run_on_s3(object_store, SPARK_PREFIX, {"PROCESSING_ENGINE": "spark", "SPARK_LAKE_ACCESS": "direct"})


def bucket_keys(s3, prefix: str = PREFIX) -> set[str]:
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        keys |= {o["Key"][len(prefix) + 1:] for o in page.get("Contents", []) if not o["Key"].endswith("/")}
    return keys


def test_objects_land_in_the_bucket_zone_by_zone(s3_run, object_store, platform):
    s3 = object_store["s3"]
    keys = bucket_keys(s3)
    days = [START + dt.timedelta(days=i) for i in range(DAYS)]
    for day in days:
        assert f"raw/sensor_readings/date={day}/{day}.csv" in keys
        assert f"clean/sensor_readings/date={day}/part-0.parquet" in keys
        assert f"processed/sensor_readings/date={day}/part-0.parquet" in keys
    assert {"processed/machines/data.parquet", "clean/failures/data.parquet",
            "raw/machines/snapshot/public_machines.parquet"} <= keys
    assert not [k for k in keys if k.endswith(".tmp")]
    # The raw zone keeps the source's bytes.
    for day in (START, END):
        body = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/raw/sensor_readings/date={day}/{day}.csv")["Body"].read()
        assert body == (platform.files_root / "sensor_readings" / f"{day}.csv").read_bytes()
    # Every raw object the local run wrote for the catalogue's sources is in the bucket too (other
    # tests of the session add sources of their own to the local lake, so only these are compared).
    sources = set(load_catalogue().sources)
    local = {p.relative_to(platform.lake_root).as_posix() for p in (platform.lake_root / "raw").rglob("*")
             if p.is_file() and p.relative_to(platform.lake_root / "raw").parts[0] in sources}
    assert local and local <= keys


def test_quarantine_and_marts_equal_the_local_run(s3_run, warehouse):
    s3_wh = s3_run["warehouse"]

    for table in load_catalogue().sources:
        count = f'SELECT count(*) AS n FROM quarantine."{table}"'
        assert int(s3_wh.query(count)["n"].iloc[0]) == int(warehouse.query(count)["n"].iloc[0]), table
    for mart in MARTS:
        on_s3, local = mart_digest(s3_wh, mart), mart_digest(warehouse, mart)
        assert on_s3 == local and local[0] > 0, mart


def test_lake_paths_in_metadata_name_the_object_store(s3_run):
    import dagster as dg

    from tests.integration.pipeline import metadata

    meta = metadata(s3_run["result"], dg.AssetKey(["lake", "processed", "sensor_readings"]))
    assert meta["path"] == f"s3a://{BUCKET}/{PREFIX}/processed/sensor_readings"


def test_spark_reads_and_writes_s3a_itself_and_equals_the_local_run(s3a_spark_run, object_store, warehouse):
    import dagster as dg

    from tests.integration.pipeline import metadata

    # Spark's own writer made the engine's lake tables (part-NNNNN-<uuid> files per date= folder),
    # not the Arrow bridge (one part-0.parquet per day).
    keys = bucket_keys(object_store["s3"], SPARK_PREFIX)
    for day in (START, END):
        written = [k for k in keys if k.startswith(f"processed/sensor_readings/date={day}/")]
        assert written and all(posixpath.basename(k).startswith("part-0000") for k in written if k.endswith(".parquet"))
    meta = metadata(s3a_spark_run["result"], dg.AssetKey(["lake", "processed", "sensor_readings"]))
    assert meta["engine"] == "spark" and meta["path"] == f"s3a://{BUCKET}/{SPARK_PREFIX}/processed/sensor_readings"
    s3_wh = s3a_spark_run["warehouse"]
    for mart in MARTS:
        on_s3, local = mart_digest(s3_wh, mart), mart_digest(warehouse, mart)
        assert on_s3 == local and local[0] > 0, mart
