"""Point-in-time features for the fleet: one row per machine and hour, labels looking forward.

A row's ``as_of`` is the end of its hour. Every feature uses only data stamped before ``as_of``
(the hourly statistics of that hour and earlier, maintenance and failures strictly before it), and
``source_cutoff`` records the latest source time each row used, so an asset check can prove it.
Labels look forward from ``as_of``: a failure within 24 hours (classification) and the hours until
the next failure (regression, remaining useful life). Rows whose label window runs past the end of
the data are dropped from the labels (censored), never guessed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIGNALS = ["avg_temperature", "max_temperature", "avg_vibration", "max_vibration", "avg_pressure", "avg_rpm",
           "avg_power_kw"]
HORIZON_HOURS = 24
LABELS = ("failure_within_24h", "hours_to_failure")
META = ("machine_id", "as_of", "source_cutoff")
# Per builder: columns that are labels or lineage, never features (its entity and time are declared in the catalogue).
BUILDER_NON_FEATURES = {"machine_hourly": (*LABELS, "source_cutoff")}


def _events_before(frame: pd.DataFrame, events: pd.DataFrame, time_col: str, prefix: str) -> pd.DataFrame:
    """For each row: hours since the last event strictly before ``as_of``, and events in the last 7 days."""
    out = frame[["machine_id", "as_of"]].copy()
    out[f"hours_since_{prefix}"] = np.nan
    out[f"{prefix}_last_7d"] = 0
    out[f"_{prefix}_last_time"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[us, UTC]")
    if events.empty:
        return out
    ev = events[["machine_id", time_col]].dropna().sort_values(time_col)
    for machine, rows in out.groupby("machine_id"):
        times = ev.loc[ev["machine_id"] == machine, time_col].to_numpy(dtype="datetime64[us]")
        as_of = rows["as_of"].to_numpy(dtype="datetime64[us]")
        before = np.searchsorted(times, as_of, side="left")  # events with time < as_of
        week = np.searchsorted(times, as_of - np.timedelta64(7, "D"), side="left")
        last = np.full(len(as_of), np.datetime64("NaT"), dtype="datetime64[us]")
        if len(times):
            last = np.where(before > 0, times[np.maximum(before - 1, 0)], last)
        out.loc[rows.index, f"hours_since_{prefix}"] = (as_of - last) / np.timedelta64(1, "h")
        out.loc[rows.index, f"{prefix}_last_7d"] = before - week
        out.loc[rows.index, f"_{prefix}_last_time"] = pd.to_datetime(last, utc=True).astype("datetime64[us, UTC]")
    return out


def _labels(frame: pd.DataFrame, failures: pd.DataFrame, data_end: pd.Timestamp) -> pd.DataFrame:
    out = frame[["machine_id", "as_of"]].copy()
    out["hours_to_failure"] = np.nan
    fails = failures[["machine_id", "failure_time"]].dropna().sort_values("failure_time")
    for machine, rows in out.groupby("machine_id"):
        times = fails.loc[fails["machine_id"] == machine, "failure_time"].to_numpy(dtype="datetime64[us]")
        as_of = rows["as_of"].to_numpy(dtype="datetime64[us]")
        nxt = np.searchsorted(times, as_of, side="left")  # first failure at or after as_of
        has = nxt < len(times)
        hours = np.full(len(rows), np.nan)
        hours[has] = (times[nxt[has]] - as_of[has]) / np.timedelta64(1, "h")
        out.loc[rows.index, "hours_to_failure"] = hours
    horizon_known = out["as_of"] + pd.Timedelta(hours=HORIZON_HOURS) <= data_end
    within = out["hours_to_failure"] < HORIZON_HOURS
    # Known when a failure falls inside the horizon, or the whole horizon lies inside the data.
    out["failure_within_24h"] = np.where(within, 1.0, np.where(horizon_known, 0.0, np.nan))
    return out


def machine_hourly_features(hourly: pd.DataFrame, machines: pd.DataFrame, maintenance: pd.DataFrame,
                            failures: pd.DataFrame) -> pd.DataFrame:
    """The feature set from the warehouse's hourly stats, the machine register, maintenance and failures."""
    if hourly.empty:
        raise ValueError("machine_hourly: no hourly statistics to build features from")
    frame = hourly.copy()
    frame["hour"] = pd.to_datetime(frame["hour"], utc=True).astype("datetime64[us, UTC]")
    frame = frame.sort_values(["machine_id", "hour"]).reset_index(drop=True)
    frame["as_of"] = frame["hour"] + pd.Timedelta(hours=1)
    grouped = frame.groupby("machine_id", group_keys=False)
    for sig in ("avg_temperature", "avg_vibration", "avg_power_kw"):
        for hours in (6, 24):
            frame[f"{sig}_mean_{hours}h"] = grouped[sig].transform(lambda s, h=hours: s.rolling(h, min_periods=1).mean())
        frame[f"{sig}_std_24h"] = grouped[sig].transform(lambda s: s.rolling(24, min_periods=2).std())
        frame[f"{sig}_lag_1h"] = grouped[sig].shift(1)
        frame[f"{sig}_lag_3h"] = grouped[sig].shift(3)
        frame[f"{sig}_delta_24h"] = frame[sig] - frame[f"{sig}_mean_24h"]
    maint = maintenance.assign(performed_at=pd.to_datetime(maintenance["performed_at"], utc=True)) \
        if len(maintenance) else pd.DataFrame(columns=["machine_id", "performed_at"])
    fails = failures.assign(failure_time=pd.to_datetime(failures["failure_time"], utc=True)) \
        if len(failures) else pd.DataFrame(columns=["machine_id", "failure_time"])
    m_hist = _events_before(frame, maint, "performed_at", "maintenance")
    f_hist = _events_before(frame, fails, "failure_time", "failure")
    for hist in (m_hist, f_hist):
        frame = frame.join(hist.drop(columns=["machine_id", "as_of"]))
    register = machines.drop_duplicates("machine_id", keep="last").set_index("machine_id")
    frame["model"] = frame["machine_id"].map(register["model"]).astype(object)
    frame["rated_power_kw"] = frame["machine_id"].map(register["rated_power_kw"]).astype(float)
    install = pd.to_datetime(frame["machine_id"].map(register["install_date"]), utc=True)
    frame["age_days"] = (frame["as_of"] - install).dt.total_seconds() / 86400
    # The latest source time each row used: the hour's own data ends at as_of (exclusive).
    frame["source_cutoff"] = frame[["hour", "_maintenance_last_time", "_failure_last_time"]].max(axis=1)
    data_end = frame["as_of"].max()
    frame = frame.join(_labels(frame, fails, data_end).drop(columns=["machine_id", "as_of"]))
    keep = [*META, *SIGNALS, *[c for c in frame.columns if any(c.startswith(s + "_") for s in
                                                                 ("avg_temperature", "avg_vibration", "avg_power_kw"))],
            "hours_since_maintenance", "maintenance_last_7d", "hours_since_failure", "failure_last_7d",
            "model", "rated_power_kw", "age_days", "hours", *LABELS]
    frame["hours"] = frame["as_of"].dt.hour.astype(float)  # time of day
    keep = list(dict.fromkeys(c for c in keep if c in frame.columns))
    return frame[keep].reset_index(drop=True)


# -- Shared with the stream (platform_assets/streaming/online.py) -----------------------------------
# Each hourly statistic the feature set reads, as (reading column, aggregate): the definitions of
# platform_assets/batch/aggregates.py's machine_hourly, which the batch marts compute.
HOURLY_FROM_READINGS = {
    "avg_temperature": ("temperature", "mean"), "max_temperature": ("temperature", "max"),
    "avg_vibration": ("vibration", "mean"), "max_vibration": ("vibration", "max"),
    "avg_pressure": ("pressure", "mean"), "avg_rpm": ("rpm", "mean"), "avg_power_kw": ("power", "mean"),
}
# Hourly rows the latest row's features read: the longest rolling window (24 rows) covers the lags.
ONLINE_HISTORY_ROWS = 24


def latest_feature_rows(hourly: pd.DataFrame, machines: pd.DataFrame, maintenance: pd.DataFrame,
                        failures: pd.DataFrame) -> pd.DataFrame:
    """Each machine's row for its latest hour, by the batch feature set's own code, without labels.

    The stream calls this with each machine's last ``ONLINE_HISTORY_ROWS`` hourly rows (the open hour
    last, as far as it has arrived), so an online row is the batch row of the same machine and hour
    as soon as the hour is complete: one definition, not two that could drift apart."""
    frame = machine_hourly_features(hourly, machines, maintenance, failures)
    latest = frame.sort_values(["machine_id", "as_of"]).groupby("machine_id", as_index=False).tail(1)
    return latest.drop(columns=[c for c in LABELS if c in latest.columns]).reset_index(drop=True)
