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


class _ByMachine:
    """Sorted event times of many machines searched at once: the per-machine ``np.searchsorted`` of
    every row in one vectorised pass (a Python loop per machine cost the stream most of its feature
    time). Times become dense ranks and each machine a block of ``len(ranks)`` keys, so one sorted
    int64 array holds every machine's events in order and a row's search stays inside its machine."""

    def __init__(self, ev_machines: np.ndarray, ev_times: np.ndarray, machines: np.ndarray, *query_times):
        codes, _ = pd.factorize(np.concatenate([np.asarray(machines, dtype=object),
                                                np.asarray(ev_machines, dtype=object)]))
        self.valid = codes[:len(machines)] >= 0  # a row without a machine id matches no event
        q_codes, e_codes = codes[:len(machines)].astype("int64"), codes[len(machines):].astype("int64")
        ranks, inverse = np.unique(np.concatenate([ev_times, *query_times]), return_inverse=True)
        self.span = np.int64(len(ranks) + 1)
        e_keys = e_codes * self.span + inverse[:len(ev_times)]
        order = np.argsort(e_keys, kind="stable")
        self.keys, self.times = e_keys[order], np.asarray(ev_times)[order]
        self.q_codes = np.where(self.valid, q_codes, 0)
        self.q_ranks = []
        at = len(ev_times)
        for q in query_times:
            self.q_ranks.append(inverse[at:at + len(q)])
            at += len(q)
        self.first = np.searchsorted(self.keys, self.q_codes * self.span, side="left")  # the machine's block
        self.end = np.searchsorted(self.keys, (self.q_codes + 1) * self.span, side="left")

    def position(self, which: int) -> np.ndarray:
        """Global index of the first event of the row's machine at or after query time ``which``."""
        return np.searchsorted(self.keys, self.q_codes * self.span + self.q_ranks[which], side="left")


def _events_before(frame: pd.DataFrame, events: pd.DataFrame, time_col: str, prefix: str) -> pd.DataFrame:
    """For each row: hours since the last event strictly before ``as_of``, and events in the last 7 days."""
    out = frame[["machine_id", "as_of"]].copy()
    out[f"hours_since_{prefix}"] = np.nan
    out[f"{prefix}_last_7d"] = 0
    out[f"_{prefix}_last_time"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[us, UTC]")
    if events.empty:
        return out
    ev = events[["machine_id", time_col]].dropna()
    times = ev[time_col].to_numpy(dtype="datetime64[us]")
    as_of = out["as_of"].to_numpy(dtype="datetime64[us]")
    search = _ByMachine(ev["machine_id"].to_numpy(), times, out["machine_id"].to_numpy(), as_of,
                        as_of - np.timedelta64(7, "D"))
    at = search.position(0)  # events with time < as_of end here
    before = at - search.first
    week = search.position(1) - search.first
    last = np.where(before > 0, search.times[np.maximum(at - 1, 0)] if len(times) else as_of,
                    np.datetime64("NaT", "us"))
    ok = search.valid
    out[f"hours_since_{prefix}"] = np.where(ok, (as_of - last) / np.timedelta64(1, "h"), np.nan)
    out[f"{prefix}_last_7d"] = np.where(ok, before - week, 0).astype("int64")
    out[f"_{prefix}_last_time"] = pd.to_datetime(np.where(ok, last, np.datetime64("NaT", "us")),
                                                 utc=True).astype("datetime64[us, UTC]")
    return out


def _labels(frame: pd.DataFrame, failures: pd.DataFrame, data_end: pd.Timestamp) -> pd.DataFrame:
    out = frame[["machine_id", "as_of"]].copy()
    fails = failures[["machine_id", "failure_time"]].dropna()
    times = fails["failure_time"].to_numpy(dtype="datetime64[us]")
    as_of = out["as_of"].to_numpy(dtype="datetime64[us]")
    search = _ByMachine(fails["machine_id"].to_numpy(), times, out["machine_id"].to_numpy(), as_of)
    nxt = search.position(0)  # first failure of the machine at or after as_of
    has = search.valid & (nxt < search.end)
    hours = np.full(len(out), np.nan)
    hours[has] = (search.times[nxt[has]] - as_of[has]) / np.timedelta64(1, "h")
    out["hours_to_failure"] = hours
    horizon_known = out["as_of"] + pd.Timedelta(hours=HORIZON_HOURS) <= data_end
    within = out["hours_to_failure"] < HORIZON_HOURS
    # Known when a failure falls inside the horizon, or the whole horizon lies inside the data.
    out["failure_within_24h"] = np.where(within, 1.0, np.where(horizon_known, 0.0, np.nan))
    return out


ROLLED = ["avg_temperature", "avg_vibration", "avg_power_kw"]


def _rolled(grouped, index: pd.Index) -> dict[str, pd.DataFrame]:
    """Per machine rolling means (6, 24 rows) and std (24 rows) of ``ROLLED``, aligned to ``index``: one
    grouped rolling per statistic (the same kernels, reset at each machine, as a rolling per machine)."""
    windows = {"mean_6h": (6, 1, "mean"), "mean_24h": (24, 1, "mean"), "std_24h": (24, 2, "std")}
    out = {}
    for name, (rows, min_periods, stat) in windows.items():
        values = getattr(grouped[ROLLED].rolling(rows, min_periods=min_periods), stat)()
        out[name] = values.droplevel(0).reindex(index)
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
    rolled = _rolled(grouped, frame.index)
    for sig in ROLLED:
        for hours in (6, 24):
            frame[f"{sig}_mean_{hours}h"] = rolled[f"mean_{hours}h"][sig]
        frame[f"{sig}_std_24h"] = rolled["std_24h"][sig]
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
