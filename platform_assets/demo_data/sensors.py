"""Sensor readings: one row per machine per interval, physically plausible per model.

What a model can learn later: temperature and vibration climb over the 24-48 h before each
failure, wear drifts slowly upward until a repair resets it, and the machine reads as stopped
(rpm 0, power 0, cooling down) while it is being repaired.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from platform_assets.demo_data.fleet import MODELS, Site, window

COLUMNS = ("machine_id", "ts", "temperature", "vibration", "pressure", "rpm", "power")
# Contract ranges (sources.yaml); clean values are clipped into them, outliers break them on purpose.
RANGES = {
    "temperature": (-40.0, 150.0),
    "vibration": (0.0, 50.0),
    "pressure": (0.0, 20.0),
    "rpm": (0.0, 6000.0),
    "power": (0.0, 500.0),
}
DECIMALS = {"temperature": 2, "vibration": 3, "pressure": 3, "rpm": 1, "power": 2}
OUTLIER_VALUES = (
    ("temperature", 900.0),
    ("temperature", -273.0),
    ("vibration", 99.9),
    ("pressure", 45.0),
    ("rpm", 12000.0),
    ("power", -12.5),
)


def _ar1(rng: np.random.Generator, steps: int, width: int, step_h: float, sigma: float) -> np.ndarray:
    """Mean-reverting noise (2 h memory): load wanders the way a real process does."""
    phi = np.exp(-step_h / 2.0)
    eps = rng.normal(0.0, sigma * np.sqrt(1 - phi**2), size=(steps, width))
    out = np.empty_like(eps)
    x = rng.normal(0.0, sigma, size=width)
    for t in range(steps):
        x = phi * x + eps[t]
        out[t] = x
    return out


def make_sensor_readings(
    rng: np.random.Generator,
    machines: pd.DataFrame,
    sites: dict[str, Site],
    failures: pd.DataFrame,
    start: date,
    days: int,
    interval_minutes: int,
) -> pd.DataFrame:
    """Clean readings ordered by (ts, machine_id), indexed by ``file_date`` (the daily file of the row)."""
    begin, _ = window(start, days)
    steps, width = days * 24 * 60 // interval_minutes, len(machines)
    hours = (np.arange(steps) * interval_minutes / 60.0)[:, None]  # (steps, 1), since begin
    specs = [MODELS[m] for m in machines["model"]]

    def per_machine(attr: str) -> np.ndarray:
        return np.array([getattr(s, attr) for s in specs])[None, :]

    offset = np.array([sites[s].utc_offset_h for s in machines["site_id"]])[None, :]
    ambient = np.array([sites[s].ambient_c for s in machines["site_id"]])[None, :]
    local_h = (hours + offset) % 24
    load = 0.72 + rng.uniform(-0.08, 0.08, size=(1, width)) + 0.12 * np.sin(2 * np.pi * (local_h - 8) / 24)
    load = np.clip(load + _ar1(rng, steps, width, interval_minutes / 60.0, 0.05), 0.3, 1.05)

    wear_h = _hours_since_repair(rng, machines, failures, begin, hours[:, 0])
    wear_days = wear_h / 24.0
    temp = (
        per_machine("temperature")
        + 0.3 * (ambient - 15)
        + 14 * (load - 0.75)
        + rng.uniform(0.2, 0.6, size=(1, width)) * wear_days
        + rng.normal(0, 0.5, size=(steps, width))
    )
    vib_base = per_machine("vibration")
    vib = vib_base * (0.85 + 0.2 * load) * (1 + rng.uniform(0.01, 0.04, size=(1, width)) * wear_days)
    vib = vib + rng.normal(0, 0.05, size=(steps, width)) * vib_base
    pressure = per_machine("pressure") * (0.75 + 0.3 * load) + rng.normal(0, 0.08, size=(steps, width))
    rpm_nom = per_machine("rpm")
    rpm = rpm_nom * (0.9 + 0.1 * load) + rng.normal(0, 0.003, size=(steps, width)) * rpm_nom
    rated = per_machine("rated_kw")
    power = rated * load + rng.normal(0, 0.015, size=(steps, width)) * rated
    values = {"temperature": temp, "vibration": vib, "pressure": pressure, "rpm": rpm, "power": power}

    index = {m: i for i, m in enumerate(machines["machine_id"])}
    for f in failures.itertuples():
        if f.machine_id in index:
            _apply_failure(
                rng, values, f, index[f.machine_id], hours[:, 0], begin, ambient[0, index[f.machine_id]]
            )

    columns = {
        name: np.round(np.clip(arr, *RANGES[name]), DECIMALS[name]).ravel() for name, arr in values.items()
    }
    ts = begin + pd.to_timedelta(np.repeat(np.arange(steps) * interval_minutes, width), unit="min")
    frame = pd.DataFrame(
        {"machine_id": np.tile(machines["machine_id"].to_numpy(dtype=object), steps), "ts": ts, **columns}
    )
    frame.index = pd.Index(ts.floor("D").date, name="file_date")
    return frame


def _hours_since_repair(
    rng: np.random.Generator,
    machines: pd.DataFrame,
    failures: pd.DataFrame,
    begin: pd.Timestamp,
    hours: np.ndarray,
) -> np.ndarray:
    """Wear clock per machine: starts at a random age, restarts when a failure is repaired."""
    out = np.empty((len(hours), len(machines)))
    for j, machine_id in enumerate(machines["machine_id"]):
        own = failures[failures["machine_id"] == machine_id]
        done = (own["failure_time"] - begin).dt.total_seconds().to_numpy() / 3600 + own[
            "downtime_hours"
        ].to_numpy()
        resets = np.concatenate([[-rng.uniform(0, 10 * 24)], np.sort(done)])
        last = resets[np.searchsorted(resets, hours, side="right") - 1]
        out[:, j] = hours - last
    return out


def _apply_failure(
    rng, values: dict, failure, col: int, hours: np.ndarray, begin: pd.Timestamp, ambient: float
):
    """Precursor ramp before the failure, then a stopped, cooling machine until it is repaired."""
    t_fail = (failure.failure_time - begin).total_seconds() / 3600
    lead = rng.uniform(24, 48)
    ramp = np.clip((hours - (t_fail - lead)) / lead, 0, 1) ** 2 * (hours < t_fail)
    values["temperature"][:, col] += ramp * rng.uniform(12, 25)
    values["vibration"][:, col] += ramp * values["vibration"][:, col].mean() * rng.uniform(1.5, 3.0)
    if failure.failure_mode == "leak":
        values["pressure"][:, col] *= 1 - 0.15 * ramp
    down = (hours >= t_fail) & (hours < t_fail + failure.downtime_hours)
    if not down.any():
        return
    first = int(np.argmax(down))
    peak = values["temperature"][max(first - 1, 0), col]
    room = 0.5 * ambient + 12
    since = hours[down] - t_fail
    values["temperature"][down, col] = (
        room + (peak - room) * np.exp(-since / 1.5) + rng.normal(0, 0.3, down.sum())
    )
    values["vibration"][down, col] = np.abs(rng.normal(0, 0.03, down.sum()))
    values["pressure"][down, col] = rng.uniform(0.1, 0.3, down.sum())
    values["rpm"][down, col] = 0.0
    values["power"][down, col] = 0.0
