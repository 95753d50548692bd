"""Online features and predictions on the stream: pure parts (no I/O here).

Each batch's minute partials (already computed for the windows) are folded into hourly sums per
machine: count, sum and max of each reading column the feature set's hourly statistics need
(``HOURLY_FROM_READINGS``). A machine's last ``ONLINE_HISTORY_ROWS`` hours of sums, the open hour
last, become the hourly statistics the batch marts would compute, and the feature row is the batch
feature set's own code (``latest_feature_rows``) run on them: an online row equals the batch row of
the same machine and hour once the hour is complete (tests/integration/test_stream_predictions.py).

``HourlyState`` keeps those sums in memory between batches (the continuous consumer lives for
hours); it is a cache of the partials table, loaded from PostgreSQL for machines it has not seen,
merged with a batch only after the batch is durable, and dropped whole on any failure.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np
import pandas as pd

from platform_assets.ml.features import HOURLY_FROM_READINGS, ONLINE_HISTORY_ROWS, latest_feature_rows
from platform_assets.streaming.microbatch import OFFSET, PARTITION

# Reading columns whose hourly count, sum and max the feature set needs.
READING_COLUMNS = tuple(dict.fromkeys(col for col, _ in HOURLY_FROM_READINGS.values()))
PREDICTION_COLUMNS = ["prediction_id", "key", "event_time", "as_of", "model", "model_version", "score",
                      "threshold", "alert", "partition", "offset", "features_updated_at"]


def hour_sums(partials: pd.DataFrame, key: str) -> pd.DataFrame:
    """Minute partials (any batches) → per key and hour: ``{col}_n``, ``{col}_sum``, ``{col}_max``."""
    cols = [f"{c}_{a}" for c in READING_COLUMNS for a in ("n", "sum", "max")]
    if partials is None or partials.empty:
        return pd.DataFrame(columns=[key, "hour", *cols])
    frame = partials.assign(hour=pd.to_datetime(partials["window_start"], utc=True).dt.floor("h"),
                            **{key: partials[key].astype(str)})
    aggs = {}
    for c in READING_COLUMNS:
        aggs |= {f"{c}_n": (f"{c}_n", "sum"), f"{c}_sum": (f"{c}_sum", "sum"), f"{c}_max": (f"{c}_max", "max")}
    return frame.groupby([key, "hour"], as_index=False).agg(**aggs)


def merge_sums(a: pd.DataFrame, b: pd.DataFrame, key: str) -> pd.DataFrame:
    """Two sets of hourly sums as one (counts and sums add, maxima take the larger)."""
    frames = [f for f in (a, b) if f is not None and len(f)]
    if len(frames) < 2:
        return frames[0].copy() if frames else hour_sums(None, key)
    both = pd.concat(frames, ignore_index=True)
    aggs = {f"{c}_{x}": ("max" if x == "max" else "sum") for c in READING_COLUMNS for x in ("n", "sum", "max")}
    return both.groupby([key, "hour"], as_index=False).agg(aggs)


def hourly_stats(sums: pd.DataFrame, key: str) -> pd.DataFrame:
    """Hourly sums → the batch marts' hourly statistics (``machine_hourly_stats`` columns the features read)."""
    out = pd.DataFrame({"machine_id": sums[key].astype(str), "hour": pd.to_datetime(sums["hour"], utc=True)})
    for stat, (col, agg) in HOURLY_FROM_READINGS.items():
        n = sums[f"{col}_n"].to_numpy(dtype="float64")
        if agg == "mean":
            out[stat] = np.where(n > 0, sums[f"{col}_sum"].to_numpy(dtype="float64") / np.where(n > 0, n, 1), np.nan)
        else:
            out[stat] = np.where(n > 0, sums[f"{col}_max"].to_numpy(dtype="float64"), np.nan)
    return out


def last_rows(sums: pd.DataFrame, key: str, rows: int = ONLINE_HISTORY_ROWS) -> pd.DataFrame:
    return sums.sort_values([key, "hour"]).groupby(key, as_index=False).tail(rows)


class HourlyState:
    """Hourly sums per machine, the last ``ONLINE_HISTORY_ROWS`` hours each (see the module docstring)."""

    def __init__(self, key: str):
        self.key = key
        self.sums = hour_sums(None, key)
        self.known: set[str] = set()

    def missing(self, keys) -> list[str]:
        return sorted({str(k) for k in keys} - self.known)

    def load(self, keys, sums: pd.DataFrame) -> None:
        """Sums read from the warehouse for machines not seen before (``keys``, with or without rows)."""
        self.sums = last_rows(merge_sums(self.sums, sums, self.key), self.key)
        self.known |= {str(k) for k in keys}

    def with_batch(self, batch_sums: pd.DataFrame, keys) -> pd.DataFrame:
        """The sums of ``keys`` as they are once the batch is added (the state itself unchanged)."""
        keys = {str(k) for k in keys}
        mine = self.sums[self.sums[self.key].isin(keys)]
        return last_rows(merge_sums(mine, batch_sums, self.key), self.key)

    def commit(self, batch_sums: pd.DataFrame) -> None:
        """The batch is durable: its sums become part of the state."""
        self.sums = last_rows(merge_sums(self.sums, batch_sums, self.key), self.key)

    def reset(self) -> None:
        self.sums, self.known = hour_sums(None, self.key), set()


class Context(NamedTuple):
    """The feature set's slow inputs, from the lake: the machine register, maintenance, failures."""

    machines: pd.DataFrame
    maintenance: pd.DataFrame
    failures: pd.DataFrame
    notes: tuple[str, ...] = ()


def empty_context(note: str) -> Context:
    return Context(pd.DataFrame(columns=["machine_id", "model", "rated_power_kw", "install_date"]),
                   pd.DataFrame(columns=["machine_id", "performed_at"]),
                   pd.DataFrame(columns=["machine_id", "failure_time"]), (note,))


def feature_rows(sums: pd.DataFrame, key: str, context: Context) -> pd.DataFrame:
    """Each machine's online feature row (its latest hour) from its hourly sums."""
    if sums.empty:
        return pd.DataFrame()
    return latest_feature_rows(hourly_stats(sums, key), context.machines, context.maintenance, context.failures)


def prediction_id(topic: str, partition: int, offset: int, model: str) -> str:
    """One prediction per source reading and model: a redone batch overwrites it, never adds one."""
    return hashlib.sha1(f"{topic}|{partition}|{offset}|{model}".encode()).hexdigest()[:20]


def scored_readings(valid: pd.DataFrame, key: str, event_time: str) -> pd.DataFrame:
    """Per machine, the batch's last reading (highest offset): the one its new feature row is traced to."""
    last = valid.sort_values([PARTITION, OFFSET]).groupby(valid[key].astype(str), as_index=False).tail(1)
    return pd.DataFrame({"key": last[key].astype(str).to_numpy(), "event_time": last[event_time].to_numpy(),
                         "partition": last[PARTITION].to_numpy(dtype="int64"),
                         "offset": last[OFFSET].to_numpy(dtype="int64")})


def predictions_frame(readings: pd.DataFrame, rows: pd.DataFrame, scores: np.ndarray, *, topic: str, model: str,
                      version: str, threshold: float, updated_at: pd.Timestamp) -> pd.DataFrame:
    """One prediction per scored reading, with its source offset, model version and alert flag."""
    by_key = dict(zip(rows["machine_id"].astype(str), scores))
    as_of = dict(zip(rows["machine_id"].astype(str), rows["as_of"]))
    out = readings[readings["key"].isin(by_key)].copy()
    out["score"] = out["key"].map(by_key).astype(float)
    out["as_of"] = out["key"].map(as_of)
    out["prediction_id"] = [prediction_id(topic, p, o, model) for p, o in zip(out["partition"], out["offset"])]
    out["model"], out["model_version"], out["threshold"] = model, str(version), float(threshold)
    out["alert"] = out["score"] > threshold
    out["features_updated_at"] = updated_at
    return out[PREDICTION_COLUMNS].reset_index(drop=True)
