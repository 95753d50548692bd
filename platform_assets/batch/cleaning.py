"""Spark cleaning of sensor readings: dedupe on the key, null physical outliers, attach machine metadata.

Pure DataFrame-in, DataFrame-out functions, so they are tested on a local session with tiny frames.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def dedupe_on_key(df: DataFrame, keys: list[str], prefer: str | None = None) -> DataFrame:
    """One row per key. Exact duplicates collapse; among conflicting rows the one with the most
    measured values (then the greatest ``prefer`` value) wins, so the choice is deterministic."""
    value_cols = [c for c in df.columns if c not in keys and c != "date"]
    filled = sum((F.col(c).isNotNull().cast("int") for c in value_cols), F.lit(0))
    order = [filled.desc()] + ([F.col(prefer).desc_nulls_last()] if prefer else [])
    order += [F.col(c).asc_nulls_last() for c in value_cols]
    ranked = df.withColumn("_rank", F.row_number().over(Window.partitionBy(*keys).orderBy(*order)))
    return ranked.where(F.col("_rank") == 1).drop("_rank")


def outside_limits(limits: dict[str, tuple[float | None, float | None]]):
    """A condition true where any column lies outside its (low, high) limits."""
    cond = F.lit(False)
    for col, (low, high) in limits.items():
        if low is not None:
            cond = cond | (F.col(col) < F.lit(low))
        if high is not None:
            cond = cond | (F.col(col) > F.lit(high))
    return cond


def null_outliers(df: DataFrame, limits: dict[str, tuple[float | None, float | None]]) -> DataFrame:
    """Values outside physical limits become null; ``outlier_columns`` lists which, per row."""
    for col, (low, high) in limits.items():
        cond = outside_limits({col: (low, high)})
        df = df.withColumn(f"_flag_{col}", F.when(cond, F.lit(col)))
        df = df.withColumn(col, F.when(cond, F.lit(None).cast("double")).otherwise(F.col(col)))
    flag_cols = [f"_flag_{c}" for c in limits]
    df = df.withColumn("outlier_columns", F.concat_ws(",", *[F.col(c) for c in flag_cols]))
    return df.drop(*flag_cols)


def enrich(readings: DataFrame, machines: DataFrame) -> DataFrame:
    """Left join: readings of machines missing from the register keep null site and model."""
    dims = machines.select("machine_id", "site_id", "site_name", "region", "model")
    return readings.join(F.broadcast(dims), on="machine_id", how="left")
