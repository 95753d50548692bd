"""The fleet's registers and events: sites, machines, failures and maintenance work.

Only clean rows here; ``defects`` adds the deliberately bad ones afterwards, so the clean data
(and the ML signal in it) does not depend on how many bad rows are injected.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Site:
    name: str
    region: str
    country: str
    timezone: str
    utc_offset_h: float  # standard time in November; drives the daily load cycle
    ambient_c: float  # typical November outdoor temperature; nudges machine temperatures


SITE_POOL = (
    Site("Rotterdam Works", "EMEA", "NL", "Europe/Amsterdam", 1.0, 9.0),
    Site("Houston Plant", "AMER", "US", "America/Chicago", -6.0, 19.0),
    Site("Pune Works", "APAC", "IN", "Asia/Kolkata", 5.5, 25.0),
    Site("Gdansk Yard", "EMEA", "PL", "Europe/Warsaw", 1.0, 6.0),
    Site("Monterrey Plant", "AMER", "MX", "America/Monterrey", -6.0, 19.0),
    Site("Osaka Plant", "APAC", "JP", "Asia/Tokyo", 9.0, 14.0),
    Site("Santos Terminal", "AMER", "BR", "America/Sao_Paulo", -3.0, 23.0),
    Site("Perth Works", "APAC", "AU", "Australia/Perth", 8.0, 21.0),
)


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # pump, compressor or turbine: picks the failing components
    rated_kw: float
    rpm: float
    temperature: float  # typical casing temperature at nominal load, degC
    vibration: float  # typical RMS velocity, mm/s
    pressure: float  # typical discharge pressure, bar


MODELS = {
    "PX-200 Pump": ModelSpec("pump", 75.0, 1480.0, 55.0, 2.2, 6.0),
    "PX-400 Pump": ModelSpec("pump", 160.0, 2960.0, 60.0, 2.8, 9.5),
    "CX-90 Compressor": ModelSpec("compressor", 90.0, 2950.0, 72.0, 3.5, 8.0),
    "CX-250 Compressor": ModelSpec("compressor", 250.0, 1490.0, 78.0, 4.0, 11.0),
    "TG-450 Turbine": ModelSpec("turbine", 450.0, 3600.0, 92.0, 5.5, 14.0),
}
MODEL_WEIGHTS = (0.3, 0.2, 0.2, 0.15, 0.15)

COMPONENTS = {
    "pump": ("bearing", "mechanical seal", "impeller", "motor"),
    "compressor": ("valve", "bearing", "motor", "intercooler"),
    "turbine": ("blade", "bearing", "gearbox", "generator"),
}
FAILURE_MODES = ("overheating", "excessive vibration", "leak", "electrical fault", "wear")
FAILURE_MODE_WEIGHTS = (0.3, 0.3, 0.15, 0.15, 0.1)
TECHNICIANS = (
    "A. Jansen",
    "M. Garcia",
    "P. Kowalski",
    "R. Iyer",
    "S. Tanaka",
    "L. Silva",
    "K. Okafor",
    "J. Brown",
)

FAILURES_PER_MACHINE_DAY = 0.1  # about one failure per machine per ten days
MIN_GAP_H = 60.0  # between a repair and the next failure, so precursor windows do not overlap


def window(start: date, days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The UTC [start, end) of the generated period."""
    begin = pd.Timestamp(datetime(start.year, start.month, start.day, tzinfo=UTC))
    return begin, begin + pd.Timedelta(days=days)


def site_specs(n: int) -> list[Site]:
    """The first ``n`` pool sites (stable names across seeds), then generic ones."""
    extra = [
        replace(SITE_POOL[i % len(SITE_POOL)], name=f"Site {i + 1:02d}") for i in range(len(SITE_POOL), n)
    ]
    return list(SITE_POOL[:n]) + extra


def make_sites(specs: list[Site]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "site_id": [f"S{i + 1:02d}" for i in range(len(specs))],
            "name": [s.name for s in specs],
            "region": [s.region for s in specs],
            "country": [s.country for s in specs],
            "timezone": [s.timezone for s in specs],
        }
    )


def random_machine_attrs(rng: np.random.Generator, n: int, site_ids: list[str], start: date) -> dict:
    """Site, model, install date and rating for ``n`` machines (also used for bad register rows)."""
    models = rng.choice(list(MODELS), size=n, p=MODEL_WEIGHTS)
    age_days = rng.integers(365, 12 * 365, size=n)
    return {
        "site_id": [site_ids[i % len(site_ids)] for i in rng.permutation(n)],
        "model": list(models),
        "install_date": [start - timedelta(days=int(a)) for a in age_days],
        "rated_power_kw": [MODELS[m].rated_kw for m in models],
    }


def make_machines(rng: np.random.Generator, n: int, site_ids: list[str], start: date) -> pd.DataFrame:
    attrs = random_machine_attrs(rng, n, site_ids, start)
    return pd.DataFrame({"machine_id": [f"M{i + 1:03d}" for i in range(n)], **attrs})


def make_failures(rng: np.random.Generator, machines: pd.DataFrame, start: date, days: int) -> pd.DataFrame:
    """A renewal process per machine (older machines fail more often); ordered by time.

    Gaps are ``MIN_GAP_H`` plus an exponential wait, so failures keep their precursor windows apart
    and the mean rate stays near one per machine per ten days.
    """
    begin, _ = window(start, days)
    age = np.array([(start - d).days for d in machines["install_date"]], dtype=float)
    mean_gap_h = 24 / (FAILURES_PER_MACHINE_DAY * (0.5 + 0.5 * age / age.mean()))
    rows = []
    for machine_id, model, mean_h in zip(machines["machine_id"], machines["model"], mean_gap_h):
        t = -rng.uniform(0, mean_h)  # the previous failure happened some time before the window
        while (t := t + MIN_GAP_H + rng.exponential(mean_h - MIN_GAP_H)) < days * 24:
            downtime = float(np.clip(round(rng.lognormal(np.log(6.0), 0.8), 1), 0.5, 72.0))
            if t >= 0:
                rows.append(
                    {
                        "machine_id": machine_id,
                        "failure_time": begin + pd.Timedelta(seconds=int(t * 3600)),
                        "component": str(rng.choice(COMPONENTS[MODELS[model].kind])),
                        "failure_mode": str(rng.choice(FAILURE_MODES, p=FAILURE_MODE_WEIGHTS)),
                        "downtime_hours": downtime,
                    }
                )
            t += downtime
    cols = ["machine_id", "failure_time", "component", "failure_mode", "downtime_hours"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["failure_time"] = pd.to_datetime(frame["failure_time"], utc=True)
    frame = frame.sort_values(["failure_time", "machine_id"], kind="stable").reset_index(drop=True)
    frame.insert(0, "failure_id", [f"F{i + 1:04d}" for i in range(len(frame))])
    return frame


def make_maintenance(
    rng: np.random.Generator, machines: pd.DataFrame, failures: pd.DataFrame, start: date, days: int
) -> pd.DataFrame:
    """Corrective work after each failure, plus scheduled preventive work and inspections (day shift)."""
    begin, end = window(start, days)
    rows = []
    for f in failures.itertuples():
        rows.append(
            {
                "machine_id": f.machine_id,
                "performed_at": f.failure_time + pd.Timedelta(minutes=int(rng.integers(15, 120))),
                "kind": "corrective",
                "duration_hours": float(
                    np.clip(round(f.downtime_hours * rng.uniform(0.5, 0.9), 2), 0.25, 72)
                ),
            }
        )
    for kind, every_days, hours in (("preventive", 14, (1.0, 6.0)), ("inspection", 7, (0.25, 1.5))):
        for machine_id in machines["machine_id"]:
            for _ in range(rng.poisson(days / every_days)):
                minute = int(rng.integers(0, days)) * 1440 + int(rng.integers(6 * 60, 16 * 60))
                rows.append(
                    {
                        "machine_id": machine_id,
                        "performed_at": begin + pd.Timedelta(minutes=minute),
                        "kind": kind,
                        "duration_hours": round(float(rng.uniform(*hours)), 2),
                    }
                )
    frame = pd.DataFrame(rows, columns=["machine_id", "performed_at", "kind", "duration_hours"])
    frame["performed_at"] = pd.to_datetime(frame["performed_at"], utc=True)
    frame = frame[frame["performed_at"] < end]  # repairs after the window belong to a later export
    frame = frame.sort_values(["performed_at", "machine_id"], kind="stable").reset_index(drop=True)
    frame.insert(0, "record_id", np.arange(1, len(frame) + 1, dtype="int64"))
    frame.insert(4, "technician", list(rng.choice(TECHNICIANS, size=len(frame))))
    return frame
