"""Cleaning and aggregation rules on tiny frames, on each processing engine (DuckDB and Spark)."""

import datetime as dt
import json

import pandas as pd
import pyarrow as pa
import pytest

from platform_assets.batch import aggregates, cleaning
from platform_assets.batch.assets import machine_register
from platform_assets.batch.dataframes import api

T0 = pd.Timestamp("2026-11-01 10:00", tz="UTC")
D = dt.date(2026, 11, 1)


def frame(engine, data: pd.DataFrame):
    table = pa.Table.from_pandas(data, preserve_index=False)
    for i, field in enumerate(table.schema):  # the lake's timestamps: microseconds, UTC
        if pa.types.is_timestamp(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.timestamp("us", tz="UTC")))
    return engine.from_arrow(table)


def readings(engine, rows):
    return frame(engine, pd.DataFrame(rows, columns=["machine_id", "ts", "temperature", "vibration", "date"]))


def test_dedupe_keeps_one_row_per_key_preferring_complete_rows(engine):
    df = readings(engine, [
        ("M1", T0, 20.0, 1.0, D),
        ("M1", T0, 20.0, 1.0, D),          # exact duplicate
        ("M1", T0 + pd.Timedelta("5min"), None, 1.0, D),
        ("M1", T0 + pd.Timedelta("5min"), 22.0, 1.0, D),  # conflicting: the fuller row wins
        ("M2", T0, 30.0, 2.0, D),
    ])
    out = engine.to_pandas(cleaning.dedupe_on_key(df, ["machine_id", "ts"])).sort_values(["machine_id", "ts"])
    assert len(out) == 3
    assert out["temperature"].tolist() == [20.0, 22.0, 30.0]
    counts = engine.first_row(cleaning.key_counts(df, ["machine_id", "ts"]))
    assert counts == {"rows": 5, "distinct_keys": 3}


def test_outliers_are_nulled_and_flagged(engine):
    df = readings(engine, [("M1", T0, 900.0, 1.0, D), ("M1", T0, 20.0, -3.0, D), ("M1", T0, 20.0, 1.0, D)])
    limits = {"temperature": (-40, 150), "vibration": (0, 50)}
    out = engine.to_pandas(cleaning.null_outliers(df, limits).orderBy("outlier_columns"))
    assert out["outlier_columns"].tolist() == ["", "temperature", "vibration"]
    assert out["temperature"].isna().tolist() == [False, True, False]
    assert out["vibration"].isna().tolist() == [False, False, True]
    assert engine.first_row(cleaning.key_counts(df, ["machine_id", "ts"])) == {"rows": 3, "distinct_keys": 1}


def test_processed_counts_fold_every_check_into_one_row(engine):
    F, _ = api(readings(engine, [("M1", T0, 20.0, 1.0, D)]))
    df = cleaning.null_outliers(readings(engine, [
        ("M1", T0, 900.0, 1.0, D), ("M1", T0 + pd.Timedelta("5min"), 20.0, 1.0, D), ("M9", T0, 20.0, 1.0, D),
    ]), {"temperature": (-40, 150)})
    df = df.withColumn("site_id", F.when(F.col("machine_id") == "M1", F.lit("S1")))
    counts = engine.first_row(cleaning.processed_counts(df, ["machine_id", "ts"], {"temperature": (-40, 100)}))
    assert counts == {"rows": 3, "distinct_keys": 3, "outliers": 1, "out_of_range": 0, "unknown_machine": 1}


def test_hourly_and_daily_aggregates_add_up(engine):
    rows = [("M1", T0 + pd.Timedelta(minutes=m), 20.0 + m, 1.0 + m / 10, D) for m in range(0, 120, 5)]
    df = cleaning.null_outliers(readings(engine, rows), {"temperature": (-40, 150)})
    F, _ = api(df)
    df = df.withColumn("site_id", F.lit("S1")).withColumn("power", F.lit(100.0)) \
        .withColumn("pressure", F.lit(5.0)).withColumn("rpm", F.lit(1500.0))
    hourly = aggregates.machine_hourly(df)
    h = engine.to_pandas(hourly).sort_values("hour")
    assert h["readings"].tolist() == [12, 12] and str(h["readings"].dtype) == "int64"
    assert h["min_temperature"].tolist() == [20.0, 80.0]
    assert h["energy_kwh"].tolist() == [100.0, 100.0]
    assert h["hour"].dt.tz is None and h["hour"].iloc[0] == pd.Timestamp("2026-11-01 10:00")
    fails = frame(engine, pd.DataFrame({"machine_id": ["M1", "M1"], "failure_time": [T0, T0 + pd.Timedelta("1D")],
                                        "downtime_hours": [4.0, 1.0]}))
    fails = aggregates.on_days(fails, "failure_time", [D])
    maint = frame(engine, pd.DataFrame({"machine_id": ["M1"], "date": [D], "duration_hours": [2.0]}))
    daily = engine.to_pandas(aggregates.machine_daily(hourly, df, fails, maint))
    assert daily["readings"].tolist() == [24] and daily["energy_kwh"].tolist() == [200.0]
    assert daily["failures"].tolist() == [1] and daily["maintenance_events"].tolist() == [1]
    assert daily["hours_reporting"].tolist() == [2]
    # Exact 95th percentile, linearly interpolated, on both engines: vibration 1.0 .. 12.5 by 0.5.
    assert daily["p95_vibration"].round(6).tolist() == [pytest.approx(1.0 + 0.95 * 23 * 0.5)]
    names = frame(engine, pd.DataFrame({"site_id": ["S1"], "site_name": ["North"], "region": ["n"]}))
    site = engine.to_pandas(aggregates.site_daily(aggregates.machine_daily(hourly, df, fails, maint), names))
    assert site[["readings", "failures", "machines_reporting"]].values.tolist() == [[24, 1, 1]]
    assert site["site_name"].tolist() == ["North"] and str(site["readings"].dtype) == "int64"


def test_app_log_daily_reads_latency_from_the_nested_context(engine):
    contexts = [json.dumps({"latency_ms": v, "user": "u"}) for v in (10.0, 20.0, 30.0)] + [None]
    logs = frame(engine, pd.DataFrame({"date": [D] * 4, "service": ["api"] * 4, "level": ["INFO"] * 4,
                                       "machine_id": ["M1", "M2", None, "M1"], "context": contexts}))
    out = engine.to_pandas(aggregates.app_log_daily(logs))
    assert out[["events", "machines"]].values.tolist() == [[4, 2]]
    assert out["p95_latency_ms"].tolist() == [pytest.approx(29.0)]


def test_machine_register_keeps_last_record_and_joins_site():
    machines = pd.DataFrame({"machine_id": ["M1", "M1", "M2"], "site_id": ["S1", "S2", "S9"], "model": ["a", "b", "c"]})
    sites = pd.DataFrame({"site_id": ["S1", "S2"], "name": ["North", "South"], "region": ["n", "s"],
                          "country": ["x", "y"], "timezone": ["UTC", "UTC"]})
    out = machine_register(machines, sites).set_index("machine_id")
    assert out.loc["M1", "site_name"] == "South"
    assert pd.isna(out.loc["M2", "site_name"])  # unknown site keeps the machine
