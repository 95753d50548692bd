"""Spark cleaning and aggregation rules on tiny frames."""

import datetime as dt

import pandas as pd
import pytest

from platform_assets.batch import aggregates, cleaning
from platform_assets.batch.assets import machine_register

pytestmark = pytest.mark.slow  # a local Spark session

T0 = pd.Timestamp("2026-11-01 10:00", tz="UTC")
D = dt.date(2026, 11, 1)


def readings(spark, rows):
    frame = pd.DataFrame(rows, columns=["machine_id", "ts", "temperature", "vibration", "date"])
    return spark.createDataFrame(frame)


def test_dedupe_keeps_one_row_per_key_preferring_complete_rows(spark):
    df = readings(spark, [
        ("M1", T0, 20.0, 1.0, D),
        ("M1", T0, 20.0, 1.0, D),          # exact duplicate
        ("M1", T0 + pd.Timedelta("5min"), None, 1.0, D),
        ("M1", T0 + pd.Timedelta("5min"), 22.0, 1.0, D),  # conflicting: the fuller row wins
        ("M2", T0, 30.0, 2.0, D),
    ])
    out = cleaning.dedupe_on_key(df, ["machine_id", "ts"]).toPandas().sort_values(["machine_id", "ts"])
    assert len(out) == 3
    assert out["temperature"].tolist() == [20.0, 22.0, 30.0]


def test_outliers_are_nulled_and_flagged(spark):
    df = readings(spark, [("M1", T0, 900.0, 1.0, D), ("M1", T0, 20.0, -3.0, D), ("M1", T0, 20.0, 1.0, D)])
    out = cleaning.null_outliers(df, {"temperature": (-40, 150), "vibration": (0, 50)}).toPandas()
    assert out["temperature"].isna().tolist() == [True, False, False]
    assert out["vibration"].isna().tolist() == [False, True, False]
    assert out["outlier_columns"].tolist() == ["temperature", "vibration", ""]


def test_hourly_and_daily_aggregates_add_up(spark):
    rows = [("M1", T0 + pd.Timedelta(minutes=m), 20.0 + m, 1.0, D) for m in range(0, 120, 5)]
    df = readings(spark, rows)
    df = cleaning.null_outliers(df, {"temperature": (-40, 150)})
    import pyspark.sql.functions as F

    df = df.withColumn("site_id", F.lit("S1")).withColumn("power", F.lit(100.0)) \
        .withColumn("pressure", F.lit(5.0)).withColumn("rpm", F.lit(1500.0))
    hourly = aggregates.machine_hourly(df)
    h = hourly.toPandas().sort_values("hour")
    assert h["readings"].tolist() == [12, 12]
    assert h["min_temperature"].tolist() == [20.0, 80.0]
    assert h["energy_kwh"].tolist() == [100.0, 100.0]
    fails = spark.createDataFrame(pd.DataFrame({"machine_id": ["M1"], "failure_time": [T0], "downtime_hours": [4.0]}))
    maint = spark.createDataFrame(pd.DataFrame({"machine_id": ["M1"], "date": [D], "duration_hours": [2.0]}))
    daily = aggregates.machine_daily(hourly, df, fails, maint).toPandas()
    assert daily["readings"].tolist() == [24] and daily["energy_kwh"].tolist() == [200.0]
    assert daily["failures"].tolist() == [1] and daily["maintenance_events"].tolist() == [1]


def test_machine_register_keeps_last_record_and_joins_site():
    machines = pd.DataFrame({"machine_id": ["M1", "M1", "M2"], "site_id": ["S1", "S2", "S9"], "model": ["a", "b", "c"]})
    sites = pd.DataFrame({"site_id": ["S1", "S2"], "name": ["North", "South"], "region": ["n", "s"],
                          "country": ["x", "y"], "timezone": ["UTC", "UTC"]})
    out = machine_register(machines, sites).set_index("machine_id")
    assert out.loc["M1", "site_name"] == "South"
    assert pd.isna(out.loc["M2", "site_name"])  # unknown site keeps the machine
