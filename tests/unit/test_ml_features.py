"""Point-in-time features: the past never sees the future; labels look forward and censor honestly."""

import numpy as np
import pandas as pd
import pytest

from platform_assets.ml.features import LABELS, machine_hourly_features

T0 = pd.Timestamp("2026-11-01 00:00", tz="UTC")


def fleet(hours=96, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for m in ("M1", "M2"):
        for h in range(hours):
            rows.append({"machine_id": m, "hour": T0 + pd.Timedelta(hours=h), "avg_temperature": 60 + rng.normal(),
                         "max_temperature": 65.0, "avg_vibration": 2 + rng.normal(0, 0.1), "max_vibration": 3.0,
                         "avg_pressure": 6.0, "avg_rpm": 1500.0, "avg_power_kw": 100 + rng.normal()})
    hourly = pd.DataFrame(rows)
    machines = pd.DataFrame({"machine_id": ["M1", "M2"], "model": ["pump", "fan"], "rated_power_kw": [120.0, 90.0],
                             "install_date": [pd.Timestamp("2024-01-01").date()] * 2})
    maintenance = pd.DataFrame({"machine_id": ["M1", "M1"], "performed_at": [T0 + pd.Timedelta("10h"),
                                                                            T0 + pd.Timedelta("70h")]})
    failures = pd.DataFrame({"machine_id": ["M1", "M2"], "failure_time": [T0 + pd.Timedelta("50h30min"),
                                                                         T0 + pd.Timedelta("80h")]})
    return hourly, machines, maintenance, failures


def test_changing_future_data_does_not_change_past_features():
    hourly, machines, maintenance, failures = fleet()
    before = machine_hourly_features(hourly, machines, maintenance, failures)
    cut = T0 + pd.Timedelta("40h")
    hourly2 = hourly.copy()
    future = hourly2["hour"] >= cut
    hourly2.loc[future, ["avg_temperature", "avg_vibration", "avg_power_kw"]] *= 3
    maintenance2 = pd.concat([maintenance, pd.DataFrame({"machine_id": ["M2"], "performed_at": [cut + pd.Timedelta("1h")]})])
    failures2 = failures.assign(failure_time=failures["failure_time"] + pd.Timedelta("5h"))
    after = machine_hourly_features(hourly2, machines, maintenance2, failures2)
    past = before["as_of"] <= cut
    features = [c for c in before.columns if c not in LABELS]
    pd.testing.assert_frame_equal(before.loc[past, features].reset_index(drop=True),
                                  after.loc[past, features].reset_index(drop=True))
    assert not before.loc[~past, "avg_temperature"].equals(after.loc[~past, "avg_temperature"])


def test_every_row_uses_only_data_before_its_as_of():
    frame = machine_hourly_features(*fleet())
    assert (frame["source_cutoff"] < frame["as_of"]).all()
    m1 = frame[frame["machine_id"] == "M1"].set_index("as_of")
    # Maintenance at 10:00 is seen from as_of 11:00 on, not at 10:00.
    assert np.isnan(m1.loc[T0 + pd.Timedelta("10h"), "hours_since_maintenance"])
    assert m1.loc[T0 + pd.Timedelta("11h"), "hours_since_maintenance"] == pytest.approx(1.0)


def test_labels_look_forward_and_censor_the_unknown_tail():
    frame = machine_hourly_features(*fleet())
    m1 = frame[frame["machine_id"] == "M1"].set_index("as_of")
    assert m1.loc[T0 + pd.Timedelta("27h"), "failure_within_24h"] == 1.0  # failure at 50:30 is 23.5 h ahead
    assert m1.loc[T0 + pd.Timedelta("26h"), "failure_within_24h"] == 0.0  # 24.5 h ahead
    assert m1.loc[T0 + pd.Timedelta("50h"), "hours_to_failure"] == pytest.approx(0.5)
    # After M1's last failure there is no next failure: RUL unknown, and the last day's label too.
    assert np.isnan(m1.loc[T0 + pd.Timedelta("60h"), "hours_to_failure"])
    assert np.isnan(m1.loc[T0 + pd.Timedelta("90h"), "failure_within_24h"])


def test_empty_input_is_a_clear_error():
    hourly, machines, maintenance, failures = fleet()
    with pytest.raises(ValueError, match="no hourly statistics"):
        machine_hourly_features(hourly.iloc[0:0], machines, maintenance, failures)


def _events_before_per_machine(frame, events, time_col, prefix):
    """The per-machine loop the vectorised ``_events_before`` replaced: the reference it must equal."""
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
        before = np.searchsorted(times, as_of, side="left")
        week = np.searchsorted(times, as_of - np.timedelta64(7, "D"), side="left")
        last = np.full(len(as_of), np.datetime64("NaT"), dtype="datetime64[us]")
        if len(times):
            last = np.where(before > 0, times[np.maximum(before - 1, 0)], last)
        out.loc[rows.index, f"hours_since_{prefix}"] = (as_of - last) / np.timedelta64(1, "h")
        out.loc[rows.index, f"{prefix}_last_7d"] = before - week
        out.loc[rows.index, f"_{prefix}_last_time"] = pd.to_datetime(last, utc=True).astype("datetime64[us, UTC]")
    return out


def _hours_to_failure_per_machine(frame, failures):
    out = pd.Series(np.nan, index=frame.index)
    fails = failures[["machine_id", "failure_time"]].dropna().sort_values("failure_time")
    for machine, rows in frame.groupby("machine_id"):
        times = fails.loc[fails["machine_id"] == machine, "failure_time"].to_numpy(dtype="datetime64[us]")
        as_of = rows["as_of"].to_numpy(dtype="datetime64[us]")
        nxt = np.searchsorted(times, as_of, side="left")
        has = nxt < len(times)
        hours = np.full(len(rows), np.nan)
        hours[has] = (times[nxt[has]] - as_of[has]) / np.timedelta64(1, "h")
        out.loc[rows.index] = hours
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_event_history_equals_the_per_machine_search(seed):
    """All machines searched in one pass give exactly what a search per machine gave: ties with as_of,
    events of unknown machines, missing times, a row without a machine, machines without events."""
    from platform_assets.ml.features import _events_before, _labels

    rng = np.random.default_rng(seed)
    ids = [f"M{i:02d}" for i in range(int(rng.integers(1, 12)))]
    hours = pd.date_range(T0, periods=int(rng.integers(1, 60)), freq="h", tz="UTC").astype("datetime64[us, UTC]")
    frame = pd.DataFrame([(m, h + pd.Timedelta(hours=1)) for m in ids for h in hours if rng.random() < 0.8]
                         or [(ids[0], hours[0])], columns=["machine_id", "as_of"])
    if seed % 2:
        frame.loc[0, "machine_id"] = None
    n = int(rng.integers(0, 40)) if seed else 0
    times = T0 + pd.to_timedelta(rng.integers(-200 if seed % 3 else -2, 80, n), unit="h")
    events = pd.DataFrame({"machine_id": rng.choice([*ids, "X9"], n), "performed_at": times})
    if n:
        events.loc[0, "performed_at"] = pd.NaT
    got = _events_before(frame, events, "performed_at", "maintenance")
    pd.testing.assert_frame_equal(got, _events_before_per_machine(frame, events, "performed_at", "maintenance"),
                                  check_exact=True)
    fails = events.rename(columns={"performed_at": "failure_time"})
    labels = _labels(frame, fails, frame["as_of"].max())
    pd.testing.assert_series_equal(labels["hours_to_failure"], _hours_to_failure_per_machine(frame, fails),
                                   check_exact=True, check_names=False)
    if n and seed % 3:
        assert got["maintenance_last_7d"].sum() > 0 or got["hours_since_maintenance"].notna().any()
