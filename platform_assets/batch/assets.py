"""The Spark batch path: clean lake tables → processed lake tables → warehouse marts.

Spark reads and writes the lake (Parquet with Hive-style ``date=`` folders) through
``resources.spark_lake``, directly or through Arrow as the lake-access mode says, so the same
assets run on a local lake, a cluster and an object store. The marts leave Spark as small pandas
frames through Arrow and are loaded by the warehouse IO manager. Every Spark step claims a slot in
the ``spark`` pool: one Spark application per slot.
"""


import posixpath

import dagster as dg
import pandas as pd

from platform_assets.batch import aggregates, cleaning
from platform_assets.metadata import frame_metadata
from platform_assets.policies import IO_RETRY, SINGLE_RUN_BACKFILL, SPARK_POOL
from platform_assets.sources.config import Catalogue
from platform_assets.sources.factory import clean_key
from resources.lake import LakeResource
from resources.lake_io_manager import days_in
from resources.spark import SparkResource
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


def _read_days(spark: SparkResource, lake: LakeResource, key: dg.AssetKey, days):
    return read_days(spark, lake, _lake_dir(key), days)


def _read_snapshot(spark: SparkResource, lake: LakeResource, key: dg.AssetKey):
    return read_snapshot(spark, lake, posixpath.join(_lake_dir(key), "data.parquet"))


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
    def processed_sensor_readings(context: dg.AssetExecutionContext, spark: SparkResource, lake: LakeResource):
        from pyspark.sql import functions as F

        days = days_in(context.partition_time_window)
        clean = _read_days(spark, lake, clean_key("sensor_readings"), days)
        register = _read_snapshot(spark, lake, PROCESSED_MACHINES)
        deduped = cleaning.dedupe_on_key(clean, READING_KEY)
        out = cleaning.enrich(cleaning.null_outliers(deduped, limits), register).cache()
        uri = write_days(spark, lake, out, _lake_dir(PROCESSED_READINGS), days)

        clean_rows = clean.count()
        distinct_keys = clean.select(*READING_KEY).distinct().count()
        rows = out.count()
        unique_keys = out.select(*READING_KEY).distinct().count()
        outliers = out.where(F.col("outlier_columns") != "").count()
        out_of_range = out.where(cleaning.outside_limits(limits)).count()
        unknown_machine = out.where(F.col("site_id").isNull()).count()
        preview = out.limit(5).toPandas()
        out.unpersist()
        yield dg.MaterializeResult(
            metadata={
                **frame_metadata(preview),
                "dagster/row_count": rows,
                "clean_rows": clean_rows,
                "duplicates_removed": clean_rows - rows,
                "outlier_readings": outliers,
                "readings_of_unregistered_machines": unknown_machine,
                "path": dg.MetadataValue.path(uri),
            }
        )
        yield dg.AssetCheckResult(check_name="key_unique", passed=rows == unique_keys,
                                  metadata={"rows": rows, "distinct_keys": unique_keys})
        yield dg.AssetCheckResult(check_name="rows_reconcile_with_clean", passed=rows == distinct_keys,
                                  metadata={"processed_rows": rows, "clean_distinct_keys": distinct_keys})
        yield dg.AssetCheckResult(check_name="values_in_range", passed=out_of_range == 0,
                                  severity=dg.AssetCheckSeverity.WARN, metadata={"out_of_range": out_of_range})

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
    def sensor_aggregates(context: dg.AssetExecutionContext, spark: SparkResource, lake: LakeResource):
        from pyspark.sql import functions as F

        days = days_in(context.partition_time_window)
        readings = _read_days(spark, lake, PROCESSED_READINGS, days).cache()
        register = _read_snapshot(spark, lake, PROCESSED_MACHINES)
        failures = _read_snapshot(spark, lake, clean_key("failures")).where(
            F.to_date("failure_time").isin(days)
        )
        maintenance = _read_days(spark, lake, clean_key("maintenance"), days)
        hourly = aggregates.machine_hourly(readings).cache()
        daily = aggregates.machine_daily(hourly, readings, failures, maintenance).cache()
        site = aggregates.site_daily(daily, register)
        frames = {
            "machine_hourly_stats": hourly.orderBy("hour", "machine_id").toPandas(),
            "machine_daily_stats": daily.orderBy("date", "machine_id").toPandas(),
            "site_daily_stats": site.orderBy("date", "site_id").toPandas(),
        }
        processed_rows = readings.count()
        for frame in (hourly, daily, readings):
            frame.unpersist()
        for name, frame in frames.items():
            yield dg.Output(frame, output_name=name)
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
    def app_log_daily_stats(context: dg.AssetExecutionContext, spark: SparkResource, lake: LakeResource) -> pd.DataFrame:
        days = days_in(context.partition_time_window)
        logs = _read_days(spark, lake, clean_key("app_logs"), days)
        return aggregates.app_log_daily(logs).orderBy("date", "service", "level").toPandas()

    return [processed_machines, dim_machines, dim_machines_unique, processed_sensor_readings,
            sensor_aggregates, app_log_daily_stats]
