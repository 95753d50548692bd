"""SIGKILL of a warehouse-load run, then the rerun: no partial table, and partitions equal to a clean run.

The run is the REAL ``warehouse/marts/app_log_daily_stats`` asset over three daily partitions
(tests/faults/warehouse_proc.py, a process of its own) reading clean app logs from a lake of the
test's own, on this package's own PostgreSQL. The load (``WarehouseResource._write``) is one
transaction: delete the partitions' window, COPY the new rows, commit. To kill it mid-load every
time, the test puts a row trigger on the table that waits on an advisory lock the test holds: the
run is then past its DELETE and inside its COPY when it is killed.

What must hold: right after the kill the table holds the previous version of every partition, whole
(row counts and checksums per partition); the rerun replaces it; and its partitions equal, row for
row, those of a clean run (the table dropped, the same input loaded again).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from platform_assets.settings import PROJECT_ROOT
from resources import build_resources
from tests.integration.streaming_harness import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]
DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
TABLE = "marts.app_log_daily_stats"
HOLD = 815_015  # the advisory lock the trigger waits on
RECOVERY_BOUND_S = 120.0  # from the kill to the rerun's success: a new process, imports and the run included
ROLLBACK_BOUND_S = 10.0  # from the kill to the table's previous version, whole, for every reader
CHECKSUMS = f"""SELECT date::text AS date, count(*) AS n, md5(string_agg(t::text, '|' ORDER BY t::text)) AS md5
                FROM {TABLE} t GROUP BY date ORDER BY date"""


def write_clean_logs(lake: Path, version: int) -> None:
    """Clean app logs (the clean layer's columns) for DAYS; ``version`` changes the rows."""
    services, levels = ["api", "ingest", "scheduler"], ["INFO", "WARN", "ERROR", "DEBUG"]
    for d, day in enumerate(DAYS):
        n = 2000 + 300 * version + 100 * d
        start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
        table = pa.table({
            "ts": pa.array([start + dt.timedelta(seconds=20 * i) for i in range(n)], pa.timestamp("us", "UTC")),
            "service": [services[(i + version) % 3] for i in range(n)],
            "level": [levels[(i * 7 + version) % 4] for i in range(n)],
            "message": [f"event {i}" for i in range(n)],
            "machine_id": [f"M{(i * 13 + version) % 40:03d}" for i in range(n)],
            "context": [json.dumps({"latency_ms": (i * 37 + version) % 900}) for i in range(n)],
        })
        folder = lake / "clean" / "app_logs" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "part-0.parquet")


def start_load(log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.faults.warehouse_proc", DAYS[0], DAYS[-1]],
                            cwd=PROJECT_ROOT, env=dict(os.environ), stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def load(log: Path) -> float:
    """A whole run of the load; its seconds."""
    started = time.monotonic()
    proc = start_load(log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    return time.monotonic() - started


def checksums(wh) -> pd.DataFrame:
    return wh.query(CHECKSUMS)


def test_sigkill_of_a_warehouse_load_run_then_the_rerun(private_env, tmp_path):
    from tests.faults.test_service_restarts import pg_connect

    lake, log = Path(os.environ["LAKE_ROOT"]), tmp_path / "load.log"
    wh = build_resources(resolved=True)["warehouse"]
    write_clean_logs(lake, version=1)
    load(log)
    before = checksums(wh)
    assert list(before["date"]) == DAYS

    write_clean_logs(lake, version=2)  # new input: the killed run was replacing every partition
    holder = pg_connect(wh)
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (HOLD,))
        cur.execute(f"""CREATE OR REPLACE FUNCTION public.faults_hold() RETURNS trigger LANGUAGE plpgsql AS
                        $$ BEGIN PERFORM pg_advisory_xact_lock_shared({HOLD}); RETURN NEW; END $$;
                        CREATE TRIGGER faults_hold BEFORE INSERT ON {TABLE}
                        FOR EACH ROW EXECUTE FUNCTION public.faults_hold()""")
    try:
        proc = start_load(log)
        wait_for("the load inside its COPY (past its DELETE)", lambda: wh.query(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
            (HOLD,))["n"][0] > 0, timeout=180, every=0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (HOLD,))
    # Its server session finds the client gone and rolls the transaction back.
    wait_for("the killed load's transaction rolled back", lambda: wh.query(
        "SELECT count(*) AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE c.relname = 'app_log_daily_stats' AND l.pid <> pg_backend_pid()")["n"][0] == 0, timeout=30, every=0.1)
    after_kill = checksums(wh)
    rolled_back = time.monotonic() - killed
    pd.testing.assert_frame_equal(after_kill, before)  # the previous version of each partition, whole
    with holder.cursor() as cur:
        cur.execute(f"DROP TRIGGER faults_hold ON {TABLE}; DROP FUNCTION public.faults_hold()")
    holder.close()

    load(log)  # the rerun (the retry policy or the next schedule tick)
    recovery = time.monotonic() - killed
    rerun = checksums(wh)
    assert not rerun.equals(before)  # it did replace the partitions

    dropper = pg_connect(wh)
    with dropper.cursor() as cur:
        cur.execute(f"DROP TABLE {TABLE}")
    dropper.close()
    load(log)  # a clean run of the same input
    clean = checksums(wh)
    pd.testing.assert_frame_equal(rerun, clean)  # row counts and checksums per partition
    print(f"\nSIGKILL of a warehouse-load run inside its COPY: the previous version of all {len(DAYS)} partitions "
          f"whole {rolled_back:.1f} s after the kill; the rerun done {recovery:.1f} s after the kill; partitions "
          f"equal to a clean run: {dict(zip(clean['date'], clean['n']))} rows")
    assert rolled_back < ROLLBACK_BOUND_S
    assert recovery < RECOVERY_BOUND_S
