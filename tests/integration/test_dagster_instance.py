"""The local Dagster instance on PostgreSQL (deploy/local/dagster.yaml): storage and pools.

Each test module gets a database of its own on the local server; runs go through the same
dagster.yaml the demo uses, so what is asserted here is what `make demo` runs on.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from jobs.run_coordinator import SKIP_QUEUE_TAG
from platform_assets.settings import PROJECT_ROOT
from tests.integration.conftest import own_dagster_home, pg_connect
from tests.integration.pooled_job import MARKS_ENV, POOL

pytestmark = [pytest.mark.integration, pytest.mark.slow]



@pytest.fixture(scope="module")
def pg_home(tmp_path_factory, platform):
    with own_dagster_home(tmp_path_factory) as (home, db):
        yield home, db


def _query(db: str, sql: str, *args) -> list[tuple]:
    conn = pg_connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def test_local_instance_keeps_everything_in_postgres(pg_home):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    home, _ = pg_home
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_instance_storage_verifies_the_server_certificate(pg_home, tmp_path, monkeypatch):
    """Dagster's own connections go through libpq with PGSSLMODE=verify-full: a CA that did not sign
    the server's certificate makes the instance refuse to start."""
    from tests.certificates import self_signed_tls

    home, _ = pg_home
    monkeypatch.setenv("PGSSLROOTCERT", self_signed_tls(tmp_path)["ca"])
    with pytest.raises(Exception) as refused, dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
    causes, exc = [], refused.value
    while exc is not None:  # Dagster wraps the driver's error after its retries
        causes.append(str(exc))
        exc = exc.__cause__
    assert any("certificate verify failed" in c for c in causes), causes


def test_cli_run_of_platform_assets_is_recorded_in_postgres(pg_home):
    """`dagster asset materialize` (a subprocess, multiprocess executor) on the demo's instance config."""
    home, db = pg_home
    before = {run_id for run_id, in _query(db, "SELECT run_id FROM runs")}
    keys = ["lake/raw/machines", "lake/clean/machines", "warehouse/quarantine/machines"]
    proc = subprocess.run(
        [str(Path(PROJECT_ROOT, ".venv", "bin", "dagster")), "asset", "materialize",
         "-m", "platform_assets.definitions", "--select", ",".join(keys)],
        cwd=PROJECT_ROOT, env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True, timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Read back with SQL, not through Dagster: the records are in this database's tables.
    runs = [r for r in _query(db, "SELECT run_id, status FROM runs") if r[0] not in before]
    assert [status for _, status in runs] == ["SUCCESS"]
    materialized = {row[0] for row in _query(
        db, "SELECT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        runs[0][0])}
    assert materialized == {dg.AssetKey.from_user_string(k).to_string() for k in keys}

    with dg.DagsterInstance.from_config(str(home)) as instance:
        for key in keys:
            assert instance.get_latest_materialization_event(dg.AssetKey.from_user_string(key)) is not None


# -- pools: two steps in one pool, run by the multiprocess executor ------------------------------
def _overlap_seconds(home: Path, marks: Path) -> float:
    marks.unlink(missing_ok=True)
    os.environ[MARKS_ENV] = str(marks)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        job = dg.build_reconstructable_job("tests.integration.pooled_job", "pooled_job")
        result = dg.execute_job(job, instance=instance)
        assert result.success
    (_, s1, e1), (_, s2, e2) = [line.split() for line in marks.read_text().splitlines()]
    return min(float(e1), float(e2)) - max(float(s1), float(s2))


def test_pool_limit_serialises_steps_across_processes(pg_home, tmp_path):
    home, _ = pg_home
    # The instance's default limit (1) applies to a pool nobody configured: the steps take turns.
    assert _overlap_seconds(home, tmp_path / "marks") < 0
    # Raised at run time, as `dagster instance concurrency set t_pool 2` does: they run side by side.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 2)
    assert _overlap_seconds(home, tmp_path / "marks") > 0


# -- the run queue: micro-batches skip it, everything else waits in it -----------------------------
def test_micro_batches_skip_the_run_queue_and_other_runs_wait_in_it(pg_home):
    """`dagster job launch` submits through the instance's run coordinator. No daemon runs here, so
    a queued run stays QUEUED; a run tagged like the stream sensor's micro-batches is launched at
    once and finishes."""
    home, _ = pg_home

    def launch(tags: dict) -> None:
        proc = subprocess.run(
            [str(Path(PROJECT_ROOT, ".venv", "bin", "dagster")), "job", "launch", "-m", "tests.integration.queue_job",
             "-j", "quick", "--tags", json.dumps(tags)],
            cwd=PROJECT_ROOT, env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True,
            timeout=180, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_coordinator).__name__ == "StreamFirstRunCoordinator"
        launch({SKIP_QUEUE_TAG: "true", "case": "micro-batch"})
        launch({"case": "other"})
        deadline = time.monotonic() + 120
        while True:
            runs = {r.tags["case"]: r for r in instance.get_runs(dg.RunsFilter(job_name="quick"))}
            if runs["micro-batch"].status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
                break
            assert time.monotonic() < deadline, f"the tagged run never finished: {runs['micro-batch'].status}"
            time.sleep(0.5)
        assert runs["micro-batch"].status == dg.DagsterRunStatus.SUCCESS
        assert runs["other"].status == dg.DagsterRunStatus.QUEUED
        # The queue still applies its limits (concurrency: in deploy/local/dagster.yaml) to queued runs.
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 3
