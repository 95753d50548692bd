"""Integration fixtures: the real PostgreSQL, MariaDB and demo REST API, with databases of the test's own.

`make test` starts the services (deploy/local/services.sh); each test session creates fresh
databases and a fresh lake under a temporary folder, points the platform's settings at them, and
drops them afterwards, so tests never touch the demo's data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from platform_assets.settings import PROJECT_ROOT, load_local_defaults

START = dt.date(2026, 11, 1)
DAYS = 7  # the demo fleet itself: small sources need its size to stay under their bad-row limits
# PostgreSQL databases each session makes for itself: warehouse, operational source, Dagster instance.
PG_DATABASES = ("WAREHOUSE_DB", "OPS_POSTGRES_DB", "DAGSTER_PG_DB")


@dataclass
class PlatformUnderTest:
    data: object
    lake_root: Path
    files_root: Path
    env: dict


def _require(what: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError:
        pytest.fail(f"{what} is not reachable at {host}:{port}: start the services with `make services-up`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60, verify=True) -> None:
    """Until ``url`` answers 200, failing fast with the log's tail if the server process dies."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{url} not ready within {timeout:.0f} s:\n" + log.read_text()[-3000:]
        time.sleep(0.5)


def pg_connect(dbname: str | None = None, **overrides):
    """A connection to the local PostgreSQL as the platform's user (libpq settings from the environment)."""
    import psycopg2

    return psycopg2.connect(host=os.environ["WAREHOUSE_HOST"], port=os.environ["WAREHOUSE_PORT"],
                            user=os.environ["WAREHOUSE_USER"], password=os.environ["WAREHOUSE_PASSWORD"],
                            dbname=dbname or os.environ["WAREHOUSE_DB"], **overrides)


def _pg_admin(sql: str) -> None:
    conn = pg_connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _mysql_admin(sql: str) -> None:
    import pymysql

    conn = pymysql.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
                           user=os.environ["MYSQL_USER"], password=os.environ["MYSQL_PASSWORD"])
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _start_api(data_dir: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "platform_assets.demo_data.rest_api", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data_dir)],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"demo REST API exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("demo REST API did not answer /health within 30 s")


@contextlib.contextmanager
def own_dagster_home(tmp_path_factory):
    """A DAGSTER_HOME with the local instance file, on a PostgreSQL database of its own (made, then
    dropped); ``DAGSTER_PG_DB`` points at it meanwhile, so this process reads what servers write."""
    db = f"t_dagster_{uuid.uuid4().hex[:8]}"
    _pg_admin(f'CREATE DATABASE "{db}"')
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(PROJECT_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    saved = os.environ.get("DAGSTER_PG_DB")
    os.environ["DAGSTER_PG_DB"] = db
    try:
        yield home, db
    finally:
        os.environ.pop("DAGSTER_PG_DB") if saved is None else os.environ.__setitem__("DAGSTER_PG_DB", saved)
        _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _drop_document_database(name: str) -> None:
    import pymongo

    client = pymongo.MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture(scope="session")
def platform(tmp_path_factory) -> PlatformUnderTest:
    from platform_assets.demo_data import write
    from platform_assets.demo_data.generate import generate_fleet

    load_local_defaults()
    _require("PostgreSQL", os.environ["WAREHOUSE_HOST"], os.environ["WAREHOUSE_PORT"])
    _require("MariaDB", os.environ["MYSQL_HOST"], os.environ["MYSQL_PORT"])
    _require("The document store", "127.0.0.1", os.environ["DOCUMENTS_PORT"])
    suffix = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("platform")
    env = {
        "WAREHOUSE_DB": f"t_wh_{suffix}", "OPS_POSTGRES_DB": f"t_ops_{suffix}", "MYSQL_DB": f"t_plant_{suffix}",
        "DAGSTER_PG_DB": f"t_dagster_{suffix}", "MONGODB_DATABASE": f"t_docs_{suffix}",
        "LAKE_ROOT": str(root / "lake"), "SOURCE_FILES_ROOT": str(root / "files"),
    }
    for key in PG_DATABASES:
        _pg_admin(f'CREATE DATABASE "{env[key]}"')
    _mysql_admin(f"CREATE DATABASE `{env['MYSQL_DB']}`")
    saved = {k: os.environ.get(k) for k in [*env, "DEMO_API_URL"]}
    os.environ.update(env)

    data = generate_fleet(start_date=START, days=DAYS)
    write.write_files(data, root / "files")
    write.write_api_data(data, root / "api")
    write.seed_postgres(data, {"host": os.environ["OPS_POSTGRES_HOST"], "port": int(os.environ["OPS_POSTGRES_PORT"]),
                               "user": os.environ["OPS_POSTGRES_USER"], "password": os.environ["OPS_POSTGRES_PASSWORD"],
                               "dbname": env["OPS_POSTGRES_DB"]})
    write.seed_mysql(data, {"host": os.environ["MYSQL_HOST"], "port": int(os.environ["MYSQL_PORT"]),
                            "user": os.environ["MYSQL_USER"], "password": os.environ["MYSQL_PASSWORD"],
                            "database": env["MYSQL_DB"]})
    port = free_port()
    api = _start_api(root / "api", port)
    os.environ["DEMO_API_URL"] = f"http://127.0.0.1:{port}"
    try:
        yield PlatformUnderTest(data=data, lake_root=root / "lake", files_root=root / "files", env=env)
    finally:
        api.terminate()
        api.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for key in PG_DATABASES:
            _pg_admin(f'DROP DATABASE IF EXISTS "{env[key]}" WITH (FORCE)')
        _mysql_admin(f"DROP DATABASE IF EXISTS `{env['MYSQL_DB']}`")
        _drop_document_database(env["MONGODB_DATABASE"])


@pytest.fixture(scope="session")
def warehouse(platform):
    from resources import build_resources

    return build_resources(resolved=True)["warehouse"]


@pytest.fixture(scope="session")
def batch_run(platform):
    """The whole batch path materialised once over the demo week (shared by batch and ML tests)."""
    from tests.integration.pipeline import failure_messages, run_assets

    result = run_assets(START, START + dt.timedelta(days=DAYS - 1))
    assert result.success, failure_messages(result)
    return result


@pytest.fixture(scope="session")
def ml_env(batch_run):
    """MLflow registry/experiment prefixes and a Redis database of this session's own."""
    import dagster as dg

    from resources import build_resources

    prefix = f"t{uuid.uuid4().hex[:6]}_"
    env = {"MLFLOW_REGISTRY_PREFIX": prefix, "MLFLOW_EXPERIMENT_PREFIX": f"test-{prefix}", "REDIS_DB": "15"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    configured = build_resources(resolved=True)
    mlflow = configured["mlflow"]
    online = configured["online_store"]
    online.client().flushdb()
    try:
        yield {"prefix": prefix, "mlflow": mlflow, "online": online, "instance": dg.DagsterInstance.ephemeral()}
    finally:
        client = mlflow.client()
        for m in client.search_registered_models(filter_string=f"name LIKE '{prefix}%'"):
            client.delete_registered_model(m.name)
        online.client().flushdb()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="session")
def first_training(ml_env):
    """ml_pipeline once: features, six candidates, gates, champions, online store, BentoML models and Bento."""
    from tests.integration.pipeline import run_ml

    result = run_ml(ml_env)
    assert result.success, [e.event_specific_data.error.to_string() for e in result.all_events
                            if e.event_type_value == "STEP_FAILURE"]
    return result
