"""The same engine assets on Spark on a real standalone cluster (master + worker from deploy/local/spark-cluster.sh).

The cluster run happens in a subprocess: a Spark session is process-global (``getOrCreate``), and
the rest of the test session keeps its local one, so a subprocess is the only way to get a fresh
driver attached to the cluster without stopping Spark under other tests' feet. It is also what a
deployment does: the same code, configured only by ``PROCESSING_ENGINE=spark`` and ``SPARK_MASTER``.
It runs the engine assets (processed readings and the engine's marts) over a copy of the session's
lake into a warehouse database of its own, and the results must equal the local run's (made by the
local default engine, DuckDB).

    python -m tests.integration.test_spark_cluster START END   # the subprocess's entry point
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

from platform_assets.settings import PROJECT_ROOT
from tests.integration.conftest import DAYS, START

pytestmark = [pytest.mark.integration, pytest.mark.slow]
END = START + dt.timedelta(days=DAYS - 1)
SCRIPT = PROJECT_ROOT / "deploy" / "local" / "spark-cluster.sh"
SPARK_MARTS = ["machine_hourly_stats", "machine_daily_stats", "site_daily_stats", "app_log_daily_stats"]
APP_NAME = "dagster-ml-platform"  # SparkResource's default application name


def warehouse_for(db: str):
    from resources.warehouse import WarehouseResource

    e = os.environ
    return WarehouseResource(host=e["WAREHOUSE_HOST"], port=int(e["WAREHOUSE_PORT"]), user=e["WAREHOUSE_USER"],
                             password=e["WAREHOUSE_PASSWORD"], database=db)


@dataclasses.dataclass(eq=False)
class MartDigest:
    """A table's row count, a checksum of its exact columns and its float columns, rows in one order.

    Equal when counts and checksums are equal and the floats agree to 1e-9 (relative): summation
    order differs between engines and partitionings, so the last bits may too, and rounding before
    a checksum would still flip where a value sits on a rounding boundary.
    """

    rows: int
    checksum: str
    floats: np.ndarray

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MartDigest) and (self.rows, self.checksum) == (other.rows, other.checksum)
                and self.floats.shape == other.floats.shape
                and bool(np.allclose(self.floats, other.floats, rtol=1e-9, atol=1e-12, equal_nan=True)))

    def __getitem__(self, i: int):  # digest[0]: the row count
        return (self.rows, self.checksum)[i]


def mart_digest(warehouse, table: str, schema: str = "marts") -> MartDigest:
    frame = warehouse.query(f'SELECT * FROM "{schema}"."{table}"')
    floats = list(frame.select_dtypes("float").columns)
    exact = [c for c in frame.columns if c not in floats]
    frame = frame.sort_values(exact + floats, ignore_index=True)
    checksum = hashlib.sha256(frame[exact].to_csv(index=False).encode()).hexdigest()[:16]
    return MartDigest(len(frame), checksum, frame[floats].to_numpy(dtype=float))


def _sh(action: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], check=False, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.integration.conftest import free_port

    state = tmp_path_factory.mktemp("spark-cluster")
    ports = [free_port() for _ in range(4)]
    env = {"SPARK_CLUSTER_PORT": str(ports[0]), "SPARK_CLUSTER_WEBUI_PORT": str(ports[1]),
           "SPARK_CLUSTER_WORKER_PORT": str(ports[2]), "SPARK_CLUSTER_WORKER_WEBUI_PORT": str(ports[3]),
           "SPARK_CLUSTER_DIR": str(state), "PYSPARK_PYTHON": sys.executable}
    up = _sh("up", env)
    assert up.returncode == 0, up.stdout + up.stderr
    pids = [int((state / f"{n}.pid").read_text()) for n in ("master", "worker")]
    try:
        yield {"master": f"spark://127.0.0.1:{ports[0]}", "json": f"http://127.0.0.1:{ports[1]}/json/",
               "env": env, "state": state, "pids": pids}
    finally:
        down = _sh("down", env)
        assert down.returncode == 0, down.stdout + down.stderr
        left = subprocess.run(["ps", "-eo", "pgid=,stat="], check=False, capture_output=True, text=True).stdout.split("\n")
        orphans = [line for line in left if line.split() and int(line.split()[0]) in pids
                   and not line.split()[1].startswith("Z")]
        assert not orphans, f"processes left in the cluster's process groups: {orphans}"


@pytest.fixture(scope="module")
def cluster_run(cluster, batch_run, platform, tmp_path_factory):
    """The Spark assets on the cluster, over a copy of the local run's lake, into a fresh warehouse DB."""
    from tests.integration.conftest import _pg_admin

    lake = tmp_path_factory.mktemp("cluster-lake") / "lake"
    shutil.copytree(platform.lake_root, lake, ignore=shutil.ignore_patterns("raw"))
    shutil.rmtree(lake / "processed" / "sensor_readings")  # the cluster must write it, not inherit it
    db = f"t_wh_cluster_{uuid.uuid4().hex[:8]}"
    _pg_admin(f'CREATE DATABASE "{db}"')
    env = {**os.environ, "PROCESSING_ENGINE": "spark", "SPARK_MASTER": cluster["master"], "LAKE_ROOT": str(lake),
           "WAREHOUSE_DB": db,
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("SPARK_LAKE_ACCESS", None)  # a local lake: auto means direct, the executors read the files
    try:
        proc = subprocess.run([sys.executable, "-m", "tests.integration.test_spark_cluster", str(START), str(END)],
                              cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        yield {"report": report, "lake": lake, "warehouse": warehouse_for(db)}
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_the_application_ran_on_the_cluster(cluster, cluster_run):
    import requests

    assert cluster_run["report"]["master"] == cluster["master"]
    state = requests.get(cluster["json"], timeout=5).json()
    apps = {a["name"]: a["state"] for a in state["completedapps"] + state["activeapps"]}
    assert apps.get(APP_NAME) == "FINISHED", apps
    assert [w["state"] for w in state["workers"]] == ["ALIVE"]


def test_cluster_results_equal_local_mode(cluster_run, platform, warehouse):
    import pyarrow.dataset as ds

    def processed_rows(root):
        return ds.dataset(root / "processed" / "sensor_readings", format="parquet", partitioning="hive").count_rows()

    assert cluster_run["report"]["materialised"] == sorted(
        ["lake/processed/sensor_readings", *(f"warehouse/marts/{m}" for m in SPARK_MARTS)])
    assert processed_rows(cluster_run["lake"]) == processed_rows(platform.lake_root) > 0
    for mart in SPARK_MARTS:
        on_cluster, local = mart_digest(cluster_run["warehouse"], mart), mart_digest(warehouse, mart)
        assert on_cluster == local and local[0] > 0, mart


def main(start: str, end: str) -> None:
    """Subprocess entry: the engine assets for start..end as configured by the environment; one JSON line."""
    import dagster as dg
    from pyspark.sql import SparkSession

    from tests.integration.pipeline import failure_messages, run_assets

    selection = [dg.AssetKey(["lake", "processed", "sensor_readings"]),
                 *(dg.AssetKey(["warehouse", "marts", m]) for m in SPARK_MARTS)]
    result = run_assets(dt.date.fromisoformat(start), dt.date.fromisoformat(end), selection=selection)
    if not result.success:
        sys.exit(f"run failed:\n{failure_messages(result)}")
    session = SparkSession.getActiveSession() or SparkSession._instantiatedSession
    master = session.sparkContext.master if session else None
    if session:
        session.stop()
    materialised = sorted({e.asset_key.to_user_string() for e in result.get_asset_materialization_events()})
    print(json.dumps({"master": master, "materialised": materialised}), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    main(*sys.argv[1:3])
