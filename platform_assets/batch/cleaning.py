"""Cleaning of sensor readings: dedupe on the key, null physical outliers, attach machine metadata.

Pure DataFrame-in, DataFrame-out functions in PySpark's API, run by either processing engine
(``resources/engine.py``), so they are tested on tiny frames on both.
"""

from __future__ import annotations

from platform_assets.batch.dataframes import api


def dedupe_on_key(df, keys: list[str], prefer: str | None = None):
    """One row per key. Exact duplicates collapse; among conflicting rows the one with the most
    measured values (then the greatest ``prefer`` value) wins, so the choice is deterministic."""
    F, Window = api(df)
    value_cols = [c for c in df.columns if c not in keys and c != "date"]
    filled = sum((F.col(c).isNotNull().cast("int") for c in value_cols), F.lit(0))
    order = [filled.desc()] + ([F.col(prefer).desc_nulls_last()] if prefer else [])
    order += [F.col(c).asc_nulls_last() for c in value_cols]
    ranked = df.withColumn("_rank", F.row_number().over(Window.partitionBy(*keys).orderBy(*order)))
    return ranked.where(F.col("_rank") == 1).drop("_rank")


def outside_limits(df, limits: dict[str, tuple[float | None, float | None]]):
    """A condition (a column of ``df``'s API) true where any column lies outside its (low, high) limits."""
    F, _ = api(df)
    cond = F.lit(False)
    for col, (low, high) in limits.items():
        if low is not None:
            cond = cond | (F.col(col) < F.lit(low))
        if high is not None:
            cond = cond | (F.col(col) > F.lit(high))
    return cond


def null_outliers(df, limits: dict[str, tuple[float | None, float | None]]):
    """Values outside physical limits become null; ``outlier_columns`` lists which, per row.

    One projection, not a withColumn per limit: SQLFrame copies the whole plan on every DataFrame
    call, so a chain of them costs seconds before DuckDB runs anything (Spark collapses either)."""
    F, _ = api(df)
    outside = {col: outside_limits(df, {col: bounds}) for col, bounds in limits.items()}
    values = [F.when(outside[c], F.lit(None).cast("double")).otherwise(F.col(c)).alias(c) if c in outside
              else F.col(c) for c in df.columns]
    flags = F.concat_ws(",", *[F.when(cond, F.lit(col)) for col, cond in outside.items()])
    return df.select(*values, flags.alias("outlier_columns"))


def enrich(readings, machines):
    """Left join: readings of machines missing from the register keep null site and model. (The
    register is small: Spark broadcasts it by itself, under spark.sql.autoBroadcastJoinThreshold.)"""
    dims = machines.select("machine_id", "site_id", "site_name", "region", "model")
    return readings.join(dims, on="machine_id", how="left")


def key_counts(df, keys: list[str]):
    """One row: ``rows`` and ``distinct_keys`` of ``df``, in one aggregation."""
    F, _ = api(df)
    return df.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(*keys).alias("distinct_keys"))


def processed_counts(df, keys: list[str], limits: dict[str, tuple[float | None, float | None]]):
    """One row with every count the processed table's metadata and checks need, in one aggregation."""
    F, _ = api(df)
    return df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct(*keys).alias("distinct_keys"),
        F.count(F.when(F.col("outlier_columns") != "", 1)).alias("outliers"),
        F.count(F.when(outside_limits(df, limits), 1)).alias("out_of_range"),
        F.count(F.when(F.col("site_id").isNull(), 1)).alias("unknown_machine"),
    )
