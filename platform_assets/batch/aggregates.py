"""Aggregates for the warehouse: per machine per hour and per day, per site per day, app logs per day.

PySpark DataFrame code run by either processing engine. Written in the subset both compute alike:
exact percentiles (``percentile``, linear interpolation on both; approximate ones differ by engine),
counts of a condition as ``count(when(...))``, and sums of counts cast back to ``long`` (DuckDB sums
integers into 128-bit ones).
"""

from __future__ import annotations

from platform_assets.batch.dataframes import api


def on_days(frame, ts_column: str, days):
    """Rows whose timestamp falls on one of ``days`` (UTC dates)."""
    F, _ = api(frame)
    return frame.where(F.to_date(ts_column).isin(list(days)))


def row_count(frame):
    """One row: ``rows``, the frame's row count (an aggregation, so it folds into a query)."""
    F, _ = api(frame)
    return frame.agg(F.count(F.lit(1)).alias("rows"))


def machine_hourly(readings):
    F, _ = api(readings)
    return (
        readings.withColumn("hour", F.date_trunc("hour", "ts"))
        .groupBy("date", "hour", "machine_id", "site_id")
        .agg(
            F.count(F.lit(1)).alias("readings"),
            F.avg("temperature").alias("avg_temperature"),
            F.min("temperature").alias("min_temperature"),
            F.max("temperature").alias("max_temperature"),
            F.avg("vibration").alias("avg_vibration"),
            F.max("vibration").alias("max_vibration"),
            F.avg("pressure").alias("avg_pressure"),
            F.avg("rpm").alias("avg_rpm"),
            F.avg("power").alias("avg_power_kw"),
            F.count(F.when(F.col("outlier_columns") != "", 1)).alias("outlier_readings"),
        )
        # Mean power over the hour times one hour: energy in kWh.
        .withColumn("energy_kwh", F.col("avg_power_kw"))
    )


def machine_daily(hourly, readings, failures, maintenance):
    F, _ = api(hourly)
    vib = readings.groupBy("date", "machine_id").agg(
        F.percentile("vibration", 0.95).alias("p95_vibration")
    )
    daily = hourly.groupBy("date", "machine_id", "site_id").agg(
        F.sum("readings").cast("long").alias("readings"),
        F.avg("avg_temperature").alias("avg_temperature"),
        F.max("max_temperature").alias("max_temperature"),
        F.avg("avg_vibration").alias("avg_vibration"),
        F.sum("energy_kwh").alias("energy_kwh"),
        F.countDistinct("hour").alias("hours_reporting"),
        F.sum("outlier_readings").cast("long").alias("outlier_readings"),
    )
    fails = failures.groupBy(F.to_date("failure_time").alias("date"), "machine_id").agg(
        F.count(F.lit(1)).alias("failures"), F.sum("downtime_hours").alias("downtime_hours")
    )
    maint = maintenance.groupBy("date", "machine_id").agg(
        F.count(F.lit(1)).alias("maintenance_events"), F.sum("duration_hours").alias("maintenance_hours")
    )
    out = daily.join(vib, ["date", "machine_id"], "left")
    out = out.join(fails, ["date", "machine_id"], "left").join(maint, ["date", "machine_id"], "left")
    return out.fillna(0, subset=["failures", "downtime_hours", "maintenance_events", "maintenance_hours"])


def site_daily(machine_daily_df, machines):
    F, _ = api(machine_daily_df)
    names = machines.select("site_id", "site_name", "region").distinct()
    agg = machine_daily_df.groupBy("date", "site_id").agg(
        F.countDistinct("machine_id").alias("machines_reporting"),
        F.sum("readings").cast("long").alias("readings"),
        F.avg("avg_temperature").alias("avg_temperature"),
        F.sum("energy_kwh").alias("energy_kwh"),
        F.sum("failures").cast("long").alias("failures"),
        F.sum("downtime_hours").alias("downtime_hours"),
    )
    return agg.join(names, "site_id", "left")


def app_log_daily(logs):
    F, _ = api(logs)
    latency = F.get_json_object("context", "$.latency_ms").cast("double")
    return logs.groupBy("date", "service", "level").agg(
        F.count(F.lit(1)).alias("events"),
        F.percentile(latency, 0.95).alias("p95_latency_ms"),
        F.countDistinct("machine_id").alias("machines"),
    )
