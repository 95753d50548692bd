"""Batch benchmark: what does the platform cost over a plain single-process pandas computation?

The platform (raw zone, contract and quarantine, the processing engine's steps, warehouse load,
blocking checks, Dagster orchestration) is run end to end on the seeded demo data at a few volumes,
once per processing engine (``--engines duckdb,spark``: the same transformation code on DuckDB
through SQLFrame, and on Spark at ``SPARK_MASTER``), next to a baseline that
computes the same sensor marts from the same CSV files with pyarrow/pandas in one process. The
baseline does less work (no raw zone, no quarantine, no app logs, no warehouse load, no checks),
so platform/baseline is an upper bound of the platform's overhead, not a like-for-like race. The
baseline's hourly reading count must equal the platform's ``sum(readings)`` in
``marts.machine_hourly_stats``: a benchmark whose two sides compute different things is worthless.

Every scale gets fresh PostgreSQL and MariaDB databases, its own document-store database, lake and demo REST API,
set up as tests/integration/conftest.py does (its helpers are reused), and dropped afterwards.

    .venv/bin/python tests/benchmarks/bench_batch.py [--rows N] [--scales 1,10] [--engines duckdb,spark]
                                                     [--days 7] [--keep] [--warmup] [--exclude-groups documents]

Progress goes to stderr; the summary to stdout, whose last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
for key, value in {"SPARK_LOCAL_IP": "127.0.0.1", "DAGSTER_DISABLE_TELEMETRY": "1",
                   "MLFLOW_DISABLE_TELEMETRY": "true", "BENTOML_DO_NOT_TRACK": "true"}.items():
    os.environ.setdefault(key, value)
warnings.filterwarnings("ignore")

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from dagster._core.events import DagsterEventType

from platform_assets.definitions import defs
from platform_assets.demo_data import write
from platform_assets.demo_data.generate import generate_fleet
from platform_assets.settings import load_local_defaults
from platform_assets.sources.config import load_catalogue
from resources import build_resources
from resources.spark import SparkResource
from tests.integration.conftest import _drop_document_database, _mysql_admin, _pg_admin, _start_api, free_port
from tests.integration.pipeline import RANGE_END, RANGE_START, failure_messages

START = dt.date(2026, 11, 1)  # generate_fleet's default start = the catalogue's first partition
DEMO_MACHINES, DEMO_INTERVAL_MIN = 24, 5  # generate_fleet defaults: 24 * 288 readings a day
CONTRACT = load_catalogue().sources["sensor_readings"].contract
NUMERIC = [c for c, s in CONTRACT.columns.items() if s.type == "float"]
LIMITS = {c: (s.min, s.max) for c, s in CONTRACT.columns.items() if s.min is not None or s.max is not None}
# The steps the processing engine runs (the PySpark-API assets, kind "spark" whichever engine runs them).
ENGINE_STEPS = {a.node_def.name for a in defs.assets
                if any("spark" in spec.kinds for spec in getattr(a, "specs", ()))}
ENGINES = ("duckdb", "spark")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- environment of one scale

@contextlib.contextmanager
def fresh_platform(data, root: Path, keep: bool):
    """Own databases, files, lake and REST API; the settings point at them while inside."""
    suffix = uuid.uuid4().hex[:8]
    env = {"WAREHOUSE_DB": f"b_wh_{suffix}", "OPS_POSTGRES_DB": f"b_ops_{suffix}", "MYSQL_DB": f"b_plant_{suffix}",
           "MONGODB_DATABASE": f"b_docs_{suffix}",
           "LAKE_ROOT": str(root / "lake"), "SOURCE_FILES_ROOT": str(root / "files")}
    saved = {k: os.environ.get(k) for k in [*env, "DEMO_API_URL"]}
    created, api = [], None
    try:
        for key in ("WAREHOUSE_DB", "OPS_POSTGRES_DB"):
            _pg_admin(f'CREATE DATABASE "{env[key]}"')  # connects to the default warehouse DB
            created.append(key)
        _mysql_admin(f"CREATE DATABASE `{env['MYSQL_DB']}`")
        created.append("MYSQL_DB")
        write.write_files(data, root / "files")
        write.write_api_data(data, root / "api")
        write.seed_postgres(data, pg_params(env["OPS_POSTGRES_DB"]))
        write.seed_mysql(data, mysql_params(env["MYSQL_DB"]))
        port = free_port()
        api = _start_api(root / "api", port)
        os.environ.update(env, DEMO_API_URL=f"http://127.0.0.1:{port}")
        yield env
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=10)
        for k, v in saved.items():  # back to the defaults before dropping: never drop the DB we are in
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if keep:
            log(f"  kept databases {', '.join(env[k] for k in created)}, document database {env['MONGODB_DATABASE']}")
        else:
            _drop_document_database(env["MONGODB_DATABASE"])
            for key in created:
                if key == "MYSQL_DB":
                    _mysql_admin(f"DROP DATABASE IF EXISTS `{env[key]}`")
                else:
                    drop_pg_database(env[key])


def drop_pg_database(name: str, attempts: int = 10) -> None:
    """Drop a scale's PostgreSQL database, waiting out sessions FORCE may not end (an autovacuum worker
    after a large load); a database still there is named, not allowed to lose the scale's figures."""
    import psycopg2

    for attempt in range(attempts):
        try:
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg2.Error as exc:
            if attempt == attempts - 1:
                log(f"  WARNING: could not drop database {name} ({exc}); drop it by hand")
                return
            time.sleep(3)


def pg_params(db: str) -> dict:
    e = os.environ
    return {"host": e["OPS_POSTGRES_HOST"], "port": int(e["OPS_POSTGRES_PORT"]), "user": e["OPS_POSTGRES_USER"],
            "password": e["OPS_POSTGRES_PASSWORD"], "dbname": db}


def mysql_params(db: str) -> dict:
    e = os.environ
    return {"host": e["MYSQL_HOST"], "port": int(e["MYSQL_PORT"]), "user": e["MYSQL_USER"],
            "password": e["MYSQL_PASSWORD"], "database": db}


# ---------------------------------------------------------------- the platform

def pipeline_selection(exclude_groups: set[str]) -> list[dg.AssetKey] | None:
    """data_pipeline's assets without those of ``exclude_groups`` (None: all of them)."""
    if not exclude_groups:
        return None
    layer = defs.resolve_job_def("data_pipeline").asset_layer
    return [k for k in layer.executable_asset_keys if layer.asset_graph.get(k).group_name not in exclude_groups]


def run_platform(days: list[dt.date], exclude_groups: set[str] = frozenset()) -> tuple[float, dict[str, float]]:
    """data_pipeline over every day in one in-process run: wall seconds and seconds per step."""
    instance = dg.DagsterInstance.ephemeral()
    run_id = str(uuid.uuid4())
    started = time.perf_counter()
    result = defs.resolve_job_def("data_pipeline").execute_in_process(
        instance=instance, run_id=run_id, raise_on_error=False, asset_selection=pipeline_selection(exclude_groups),
        tags={RANGE_START: days[0].isoformat(), RANGE_END: days[-1].isoformat()},
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    wall = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"data_pipeline failed:\n{failure_messages(result)}")
    began, steps = {}, {}
    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
    for entry in instance.all_logs(run_id, of_type=kinds):
        event = entry.dagster_event
        if event.event_type == DagsterEventType.STEP_START:
            began[event.step_key] = entry.timestamp
        else:
            steps[event.step_key] = round(entry.timestamp - began[event.step_key], 2)
    return wall, dict(sorted(steps.items(), key=lambda kv: -kv[1]))


def platform_marts() -> dict[str, int]:
    warehouse = build_resources(resolved=True)["warehouse"]
    row = warehouse.query(
        "SELECT (SELECT sum(readings) FROM marts.machine_hourly_stats) AS readings,"
        " (SELECT count(*) FROM marts.machine_hourly_stats) AS hourly,"
        " (SELECT count(*) FROM marts.machine_daily_stats) AS daily,"
        " (SELECT count(*) FROM marts.site_daily_stats) AS site").iloc[0]
    return {k: int(v) for k, v in row.items()}


# ---------------------------------------------------------------- the baseline

def _query(connect, params: dict, sql: str) -> pd.DataFrame:
    conn = connect(**params)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])
    finally:
        conn.close()


def run_baseline(files_root: Path, days: list[dt.date], env: dict) -> dict[str, pd.DataFrame]:
    """The sensor marts in plain pandas, from the same daily CSVs and source tables."""
    import psycopg2
    import pymysql

    # Readings: every column as text, then the contract in its simplest form.
    types = {c: pa.string() for c in CONTRACT.columns}
    opts = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True, null_values=[""])
    df = pa.concat_tables([pacsv.read_csv(files_root / "sensor_readings" / f"{d}.csv", convert_options=opts)
                           for d in days]).to_pandas()
    ok = df["machine_id"].notna()
    for c in NUMERIC:
        value = pd.to_numeric(df[c], errors="coerce")
        ok &= value.notna() | df[c].isna()  # a non-numeric text breaks the contract: the row goes
        df[c] = value
    df["ts"] = pd.to_datetime(df["ts"], errors="coerce", utc=True, format="ISO8601")
    df = df[ok & df["ts"].notna()]
    df = df.assign(date=df["ts"].dt.floor("D"), hour=df["ts"].dt.floor("h"))
    df = df[df["date"].dt.date.isin(set(days))].drop_duplicates(["machine_id", "ts"])
    outlier = np.zeros(len(df), dtype=bool)
    for c, (low, high) in LIMITS.items():
        bad = ((df[c] < low) if low is not None else False) | ((df[c] > high) if high is not None else False)
        df.loc[bad, c] = np.nan
        outlier |= bad.to_numpy()
    df["outlier"] = outlier.astype(int)

    # Machines from the same PostgreSQL table: required values present, the last record per id wins.
    machines = _query(psycopg2.connect, pg_params(env["OPS_POSTGRES_DB"]),
                      "SELECT machine_id, site_id, model FROM public.machines")
    machines = machines.dropna().drop_duplicates("machine_id", keep="last")[["machine_id", "site_id"]]
    df = df.merge(machines, on="machine_id", how="left")

    hourly = df.groupby(["date", "hour", "machine_id", "site_id"], dropna=False).agg(
        readings=("ts", "size"), avg_temperature=("temperature", "mean"), min_temperature=("temperature", "min"),
        max_temperature=("temperature", "max"), avg_vibration=("vibration", "mean"),
        max_vibration=("vibration", "max"), avg_pressure=("pressure", "mean"), avg_rpm=("rpm", "mean"),
        avg_power_kw=("power", "mean"), outlier_readings=("outlier", "sum"),
    ).reset_index()
    hourly["energy_kwh"] = hourly["avg_power_kw"]

    daily = hourly.groupby(["date", "machine_id", "site_id"], dropna=False).agg(
        readings=("readings", "sum"), avg_temperature=("avg_temperature", "mean"),
        max_temperature=("max_temperature", "max"), avg_vibration=("avg_vibration", "mean"),
        energy_kwh=("energy_kwh", "sum"), hours_reporting=("hour", "nunique"),
        outlier_readings=("outlier_readings", "sum"),
    ).reset_index()
    p95 = df.groupby(["date", "machine_id"])["vibration"].quantile(0.95).rename("p95_vibration").reset_index()
    failures = pq.read_table(files_root / "failures.parquet").to_pandas()
    failures = failures.dropna(subset=["failure_id", "machine_id", "failure_time", "component"])
    failures["date"] = failures["failure_time"].dt.floor("D")
    fails = failures.groupby(["date", "machine_id"]).agg(
        failures=("failure_id", "size"), downtime_hours=("downtime_hours", "sum")).reset_index()
    maint = _query(pymysql.connect, mysql_params(env["MYSQL_DB"]),
                   "SELECT record_id, machine_id, performed_at, kind, duration_hours FROM maintenance_records")
    maint = maint.dropna(subset=["machine_id", "performed_at", "kind"])
    maint["date"] = pd.to_datetime(maint["performed_at"], utc=True).dt.floor("D")
    maint = maint.groupby(["date", "machine_id"]).agg(
        maintenance_events=("record_id", "size"), maintenance_hours=("duration_hours", "sum")).reset_index()
    for extra in (p95, fails, maint):
        daily = daily.merge(extra, on=["date", "machine_id"], how="left")
    extras = ["failures", "downtime_hours", "maintenance_events", "maintenance_hours"]
    daily[extras] = daily[extras].fillna(0)

    site = daily.groupby(["date", "site_id"], dropna=False).agg(
        machines_reporting=("machine_id", "nunique"), readings=("readings", "sum"),
        avg_temperature=("avg_temperature", "mean"), energy_kwh=("energy_kwh", "sum"),
        failures=("failures", "sum"), downtime_hours=("downtime_hours", "sum"),
    ).reset_index()
    return {"hourly": hourly, "daily": daily, "site": site}


# ---------------------------------------------------------------- one scale, and all of them

def bench_scale(scale: float, factor: float, days: list[dt.date], root: Path, keep: bool,
                engines: list[str], exclude_groups: set[str] = frozenset()) -> dict:
    started = time.perf_counter()
    data = generate_fleet(start_date=START, days=len(days), scale=factor)
    rows_in = len(data.sensor_readings)
    log(f"== scale {scale:g}: {rows_in:,} sensor readings, {len(data.machines)} machines "
        f"(generated in {time.perf_counter() - started:.1f}s)")
    runs = {}
    with fresh_platform(data, root, keep) as env:
        started = time.perf_counter()
        base = run_baseline(root / "files", days, env)
        baseline_s = time.perf_counter() - started
        log(f"  baseline {baseline_s:.2f}s")
        for engine in engines:  # the same databases and lake: each run replaces the previous one's output
            os.environ["PROCESSING_ENGINE"] = engine
            try:
                platform_s, steps = run_platform(days, exclude_groups)
            finally:
                os.environ.pop("PROCESSING_ENGINE", None)
            runs[engine] = {"platform_s": round(platform_s, 2), "platform_rows_per_s": round(rows_in / platform_s),
                            "ratio": round(platform_s / baseline_s, 1), "marts": platform_marts(),
                            "engine_steps_s": round(sum(v for k, v in steps.items() if k in ENGINE_STEPS), 2),
                            "steps_s": steps}
            log(f"  platform on {engine} {platform_s:.1f}s")
    base_counts = {"readings": int(base["hourly"]["readings"].sum()), "hourly": len(base["hourly"]),
                   "daily": len(base["daily"]), "site": len(base["site"])}
    for run in runs.values():
        run["reconciled"] = run["marts"]["readings"] == base_counts["readings"]
    return {
        "scale": scale, "sensor_rows": rows_in,
        "baseline_s": round(baseline_s, 3), "baseline_rows_per_s": round(rows_in / baseline_s),
        "baseline_marts": base_counts, "engines": runs,
        "reconciled": all(r["reconciled"] for r in runs.values()),
        "engines_agree": len({json.dumps(r["marts"], sort_keys=True) for r in runs.values()}) == 1,
    }


def print_result(r: dict) -> None:
    print(f"\nscale {r['scale']:g}: {r['sensor_rows']:,} sensor rows in")
    print(f"  baseline      {r['baseline_s']:8.2f} s  {r['baseline_rows_per_s']:>10,} rows/s")
    b = r["baseline_marts"]
    for engine, run in r["engines"].items():
        p = run["marts"]
        print(f"  {engine + ' platform':13} {run['platform_s']:8.2f} s  {run['platform_rows_per_s']:>10,} rows/s  "
              f"ratio {run['ratio']}x  (engine steps {run['engine_steps_s']:.1f} s)  hourly readings "
              f"{p['readings']:,} vs baseline {b['readings']:,} -> {'OK' if run['reconciled'] else 'MISMATCH'}")
    if {"duckdb", "spark"} <= set(r["engines"]):
        d, s = r["engines"]["duckdb"], r["engines"]["spark"]
        print(f"  spark/duckdb: whole pipeline {s['platform_s'] / d['platform_s']:.2f}x, "
              f"engine steps {s['engine_steps_s'] / max(d['engine_steps_s'], 0.01):.2f}x; "
              f"marts {'equal' if r['engines_agree'] else 'DIFFER'} (rows per mart)")
    for engine, run in r["engines"].items():
        total = sum(run["steps_s"].values())
        print(f"  {engine}: {total:.1f} s in {len(run['steps_s'])} steps, {run['platform_s'] - total:.1f} s outside "
              "steps; slowest:")
        for key, secs in list(run["steps_s"].items())[:5]:
            print(f"    {secs:7.2f} s  {key}{'  [engine]' if key in ENGINE_STEPS else ''}")


def demo_days(parser: argparse.ArgumentParser, count: int) -> list[dt.date]:
    """The first ``count`` days of the demo's week, or a parser error when the catalogue cannot hold them."""
    window = load_catalogue().partitions
    max_days = (window.end_date - window.start_date).days if window.end_date else 10_000
    if not 1 <= count <= max_days or window.start_date != START:
        parser.error(f"--days must be 1..{max_days}: the catalogue's partitions are the demo's week")
    return [START + dt.timedelta(days=i) for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help="sensor readings at scale 1 (default: the demo volume)")
    parser.add_argument("--scales", default="1,10", help="multiples of the base volume, comma-separated")
    parser.add_argument("--engines", default="duckdb,spark", help="processing engines to run, comma-separated")
    parser.add_argument("--days", type=int, default=7,
                        help="days from 2026-11-01 (fewer than 7 can push the demo's small sources over their bad-row limit)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder and the databases")
    parser.add_argument("--exclude-groups", default="",
                        help="asset groups of data_pipeline to leave out, comma-separated (e.g. documents: the "
                             "document-store load, whose cost is the store's, not the batch path's)")
    parser.add_argument("--warmup", action="store_true",
                        help="run the first scale once untimed, so no timed run pays the JVM's first-query warm-up")
    args = parser.parse_args()

    load_local_defaults()
    days = demo_days(parser, args.days)
    demo_rows = DEMO_MACHINES * args.days * 1440 // DEMO_INTERVAL_MIN
    base = args.rows / demo_rows if args.rows else 1.0  # generate_fleet's scale multiplies machines
    scales = [int(s) if float(s).is_integer() else float(s) for s in args.scales.split(",")]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or set(engines) - set(ENGINES):
        parser.error(f"--engines: one or more of {', '.join(ENGINES)}")
    exclude_groups = {g.strip() for g in args.exclude_groups.split(",") if g.strip()}
    if exclude_groups:
        print(f"data_pipeline WITHOUT the asset group(s) {', '.join(sorted(exclude_groups))} (--exclude-groups)")

    spark_startup_s = None
    if "spark" in engines:
        started = time.perf_counter()
        session = SparkResource(master=os.environ["SPARK_MASTER"]).session  # same settings as the platform's
        spark_startup_s = round(time.perf_counter() - started, 2)
        session.sparkContext.setLogLevel("ERROR")
        print(f"Spark session start-up ({os.environ['SPARK_MASTER']}): {spark_startup_s:.1f} s, paid once here; "
              "the platform runs below reuse that session in-process (SparkSession.getOrCreate)"
              + ("" if args.warmup else "; the first run still pays the JVM's first-query warm-up (see --warmup)"))
    print("Baseline = pyarrow CSV + pandas in one process, sensor marts only: no raw zone, no quarantine, "
          "no app logs, no warehouse load, no checks, no orchestration. The ratio is an upper bound of the overhead.")

    root = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    results = []
    try:
        if args.warmup:
            log("== warm-up run (not timed)")
            bench_scale(scales[0], base * scales[0], days, root / "warmup", keep=False, engines=engines,
                        exclude_groups=exclude_groups)
        for i, scale in enumerate(scales):
            results.append(bench_scale(scale, base * scale, days, root / f"scale_{i}", args.keep, engines,
                                       exclude_groups))
            print_result(results[-1])
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"benchmark": "batch", "days": args.days, "warmup": args.warmup, "engines": engines,
                      "excluded_groups": sorted(exclude_groups),
                      "results": results, "spark_startup_s": spark_startup_s}), flush=True)
    return 0 if all(r["reconciled"] and r["engines_agree"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
