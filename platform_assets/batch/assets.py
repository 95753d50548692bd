"""The batch path: clean lake tables → processed lake tables → warehouse marts.

PySpark DataFrame code on the processing engine (``resources/engine.py``: DuckDB through SQLFrame
on one machine, Spark beyond it), which reads and writes the lake (Parquet with Hive-style
``date=`` folders) through ``resources.spark_lake``, so the same assets run on a local lake, a
cluster and an object store. Each lake partition is read once per run; each asset's metadata and
check counts come from one aggregation over its persisted result. The marts leave the engine as
small pandas frames and are loaded by the warehouse IO manager. Every engine step claims a slot in
the ``spark`` pool: one engine application per slot.
"""


import posixpath

import dagster as dg
import pandas as pd

from platform_assets.batch import aggregates, cleaning
from platform_assets.metadata import frame_metadata
from platform_assets.policies import IO_RETRY, SINGLE_RUN_BACKFILL, SPARK_POOL
from platform_assets.sources.config import Catalogue
from platform_assets.sources.factory import clean_key
from resources.engine import ProcessingEngine
from resources.lake import LakeResource
from resources.lake_io_manager import days_in
from resources.spark_lake import read_days, read_snapshot, write_days

PROCESSED_READINGS = dg.AssetKey(["lake", "processed", "sensor_readings"])
PROCESSED_MACHINES = dg.AssetKey(["lake", "processed", "machines"])
READING_KEY = ["machine_id", "ts"]
PARTITION_META = {"partition_column": "date"}


def machine_register(machines: pd.DataFrame, sites: pd.DataFrame) -> pd.DataFrame:
    """One row per machine (the last record wins), with its site's name and region."""
    machines = machines.drop_duplicates("machine_id", keep="last")
    sites = sites.drop_duplicates("site_id", keep="last").rename(columns={"name": "site_name"})
    return machines.merge(sites[["site_id", "site_name", "region", "country", "timezone"]], on="site_id", how="left")


def _lake_dir(key: dg.AssetKey) -> str:
    return posixpath.join(*key.path[1:])


def _read_days(engine: ProcessingEngine, lake: LakeResource, key: dg.AssetKey, days):
    return read_days(engine, lake, _lake_dir(key), days)


def _read_snapshot(engine: ProcessingEngine, lake: LakeResource, key: dg.AssetKey):
    return read_snapshot(engine, lake, posixpath.join(_lake_dir(key), "data.parquet"))


def build_batch_assets(catalogue: Catalogue, partitions: dg.PartitionsDefinition) -> list:
    readings_contract = catalogue.sources["sensor_readings"].contract
    limits = {c: (s.min, s.max) for c, s in readings_contract.columns.items() if s.min is not None or s.max is not None}

    @dg.asset(
        key=PROCESSED_MACHINES,
        ins={"machines": dg.AssetIn(clean_key("machines")), "sites": dg.AssetIn(clean_key("sites"))},
        io_manager_key="lake_io_manager",
        group_name="processed",
        kinds={"pandas", "parquet"},
        automation_condition=dg.AutomationCondition.eager(),
        description="The machine register joined with its sites, one row per machine.",
    )
    def processed_machines(machines: pd.DataFrame, sites: pd.DataFrame) -> pd.DataFrame:
        return machine_register(machines, sites)

    @dg.asset(
        key=["warehouse", "marts", "dim_machines"],
        ins={"register": dg.AssetIn(PROCESSED_MACHINES)},
        io_manager_key="warehouse_io_manager",
        group_name="warehouse",
        kinds={"postgres"},
        retry_policy=IO_RETRY,
        automation_condition=dg.AutomationCondition.eager(),
        description="Machine dimension for BI: the processed register, published to the warehouse.",
    )
    def dim_machines(register: pd.DataFrame) -> pd.DataFrame:
        return register

    @dg.asset_check(asset=dim_machines, blocking=True, description="One row per machine_id.")
    def dim_machines_unique(register: pd.DataFrame) -> dg.AssetCheckResult:
        dupes = int(register["machine_id"].duplicated().sum())
        return dg.AssetCheckResult(passed=dupes == 0, metadata={"duplicates": dupes})

    @dg.asset(
        key=PROCESSED_READINGS,
        deps=[clean_key("sensor_readings"), PROCESSED_MACHINES],
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN_BACKFILL,
        group_name="processed",
        kinds={"spark", "parquet"},
        pool=SPARK_POOL,
        check_specs=[
            dg.AssetCheckSpec("key_unique", asset=PROCESSED_READINGS, blocking=True,
                              description="One row per (machine_id, ts)."),
            dg.AssetCheckSpec("rows_reconcile_with_clean", asset=PROCESSED_READINGS, blocking=True,
                              description="Processed rows = distinct keys in the clean table."),
            dg.AssetCheckSpec("values_in_range", asset=PROCESSED_READINGS,
                              description="No value outside the contract's physical limits remains."),
        ],
        automation_condition=dg.AutomationCondition.eager(),
        description="Sensor readings deduplicated on (machine_id, ts), outliers nulled and flagged, "
                    "joined with machine and site metadata.",
    )
    def processed_sensor_readings(context: dg.AssetExecutionContext, engine: ProcessingEngine, lake: LakeResource):
        days = days_in(context.partition_time_window)
        clean = engine.persist(_read_days(engine, lake, clean_key("sensor_readings"), days))
        register = _read_snapshot(engine, lake, PROCESSED_MACHINES)
        deduped = cleaning.dedupe_on_key(clean, READING_KEY)
        out = engine.persist(cleaning.enrich(cleaning.null_outliers(deduped, limits), register))
        uri = write_days(engine, lake, out, _lake_dir(PROCESSED_READINGS), days)

        before = engine.first_row(cleaning.key_counts(clean, READING_KEY))
        after = engine.first_row(cleaning.processed_counts(out, READING_KEY, limits))
        preview = engine.to_pandas(out.limit(5))
        engine.unpersist(out, clean)
        rows = after["rows"]
        yield dg.MaterializeResult(
            metadata={
                **frame_metadata(preview),
                "dagster/row_count": rows,
                "clean_rows": before["rows"],
                "duplicates_removed": before["rows"] - rows,
                "outlier_readings": after["outliers"],
                "readings_of_unregistered_machines": after["unknown_machine"],
                "path": dg.MetadataValue.path(uri),
                "engine": engine.name,
            }
        )
        yield dg.AssetCheckResult(check_name="key_unique", passed=rows == after["distinct_keys"],
                                  metadata={"rows": rows, "distinct_keys": after["distinct_keys"]})
        yield dg.AssetCheckResult(check_name="rows_reconcile_with_clean", passed=rows == before["distinct_keys"],
                                  metadata={"processed_rows": rows, "clean_distinct_keys": before["distinct_keys"]})
        yield dg.AssetCheckResult(check_name="values_in_range", passed=after["out_of_range"] == 0,
                                  severity=dg.AssetCheckSeverity.WARN,
                                  metadata={"out_of_range": after["out_of_range"]})

    eager = dg.AutomationCondition.eager()
    hourly_key = dg.AssetKey(["warehouse", "marts", "machine_hourly_stats"])

    @dg.multi_asset(
        name="sensor_aggregates",
        outs={
            "machine_hourly_stats": dg.AssetOut(key=hourly_key, metadata=PARTITION_META, io_manager_key="warehouse_io_manager",
                                                automation_condition=eager, kinds={"spark", "postgres"},
                                                description="Per machine per hour: counts, means, extremes, energy."),
            "machine_daily_stats": dg.AssetOut(key=["warehouse", "marts", "machine_daily_stats"], metadata=PARTITION_META, io_manager_key="warehouse_io_manager",
                                               automation_condition=eager, kinds={"spark", "postgres"},
                                                description="Per machine per day, with failures and maintenance."),
            "site_daily_stats": dg.AssetOut(key=["warehouse", "marts", "site_daily_stats"], metadata=PARTITION_META, io_manager_key="warehouse_io_manager",
                                            automation_condition=eager, kinds={"spark", "postgres"},
                                                description="Per site per day."),
        },
        deps=[PROCESSED_READINGS, PROCESSED_MACHINES, clean_key("failures"), clean_key("maintenance")],
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN_BACKFILL,
        retry_policy=IO_RETRY,
        group_name="warehouse",
        pool=SPARK_POOL,
        check_specs=[dg.AssetCheckSpec("readings_reconcile", asset=hourly_key, blocking=True,
                                       description="Sum of hourly readings = processed rows in the window.")],
    )
    def sensor_aggregates(context: dg.AssetExecutionContext, engine: ProcessingEngine, lake: LakeResource):
        days = days_in(context.partition_time_window)
        readings = engine.persist(_read_days(engine, lake, PROCESSED_READINGS, days))
        register = _read_snapshot(engine, lake, PROCESSED_MACHINES)
        failures = aggregates.on_days(_read_snapshot(engine, lake, clean_key("failures")), "failure_time", days)
        maintenance = _read_days(engine, lake, clean_key("maintenance"), days)
        hourly = engine.persist(aggregates.machine_hourly(readings))
        daily = engine.persist(aggregates.machine_daily(hourly, readings, failures, maintenance))
        site = aggregates.site_daily(daily, register)
        frames = {
            "machine_hourly_stats": engine.to_pandas(hourly.orderBy("hour", "machine_id")),
            "machine_daily_stats": engine.to_pandas(daily.orderBy("date", "machine_id")),
            "site_daily_stats": engine.to_pandas(site.orderBy("date", "site_id")),
        }
        processed_rows = engine.first_row(aggregates.row_count(readings))["rows"]
        engine.unpersist(daily, hourly, readings)
        for name, frame in frames.items():
            yield dg.Output(frame, output_name=name, metadata={"engine": engine.name})
        hourly_total = int(frames["machine_hourly_stats"]["readings"].sum())
        yield dg.AssetCheckResult(check_name="readings_reconcile", asset_key=hourly_key,
                                  passed=hourly_total == processed_rows,
                                  metadata={"hourly_readings": hourly_total, "processed_rows": processed_rows})

    @dg.asset(
        key=["warehouse", "marts", "app_log_daily_stats"],
        deps=[clean_key("app_logs")],
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN_BACKFILL,
        retry_policy=IO_RETRY,
        metadata=PARTITION_META,
        io_manager_key="warehouse_io_manager",
        group_name="warehouse",
        kinds={"spark", "postgres"},
        pool=SPARK_POOL,
        automation_condition=dg.AutomationCondition.eager(),
        description="Application log events per day, service and level, with p95 latency from the nested context.",
    )
    def app_log_daily_stats(context: dg.AssetExecutionContext, engine: ProcessingEngine,
                            lake: LakeResource) -> pd.DataFrame:
        days = days_in(context.partition_time_window)
        logs = _read_days(engine, lake, clean_key("app_logs"), days)
        return engine.to_pandas(aggregates.app_log_daily(logs).orderBy("date", "service", "level"))

    return [processed_machines, dim_machines, dim_machines_unique, processed_sensor_readings,
            sensor_aggregates, app_log_daily_stats]
