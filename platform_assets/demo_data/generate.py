"""``generate_fleet``: the whole demo dataset from a handful of arguments, deterministically.

Pure (no I/O) and seeded: the same arguments always give identical frames, so every count the
platform reports downstream (rows, quarantined rows, duplicates, outliers) can be checked exactly
against ``DemoData``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from platform_assets.demo_data import defects, fleet
from platform_assets.demo_data.logs import make_app_logs
from platform_assets.demo_data.sensors import make_sensor_readings


@dataclass(frozen=True, eq=False)
class DemoData:
    """One frame per source, columns exactly as in the contract, bad values kept as-is (object columns).

    ``sensor_readings``, ``app_logs`` and ``invalid_log_lines`` are indexed by ``file_date``: the
    daily file a row belongs to, which a row with an unparseable ``ts`` cannot tell by itself.
    ``invalid_log_lines`` (``line_no``, ``raw``) are app_logs lines that are not JSON at all, to be
    written verbatim at ``line_no`` (0-based) of their day's file.
    """

    sites: pd.DataFrame
    machines: pd.DataFrame
    sensor_readings: pd.DataFrame
    app_logs: pd.DataFrame
    failures: pd.DataFrame
    maintenance: pd.DataFrame
    invalid_log_lines: pd.DataFrame
    # Contract-breaking rows per source (app_logs includes the invalid JSON lines).
    expected_bad_rows: dict[str, int]
    # The same, per partition (ISO date) for the daily-partitioned sources.
    expected_bad_by_partition: dict[str, dict[str, int]]
    # Exact duplicate sensor rows (not violations: deduped later) and out-of-range sensor values.
    expected_duplicates: int
    expected_outliers: int

    def frames(self) -> dict[str, pd.DataFrame]:
        """The six source frames by source name."""
        names = ("sites", "machines", "sensor_readings", "app_logs", "failures", "maintenance")
        return {name: getattr(self, name) for name in names}


def generate_fleet(
    start_date: date = date(2026, 11, 1),
    days: int = 7,
    machines: int = 24,
    sites: int = 4,
    reading_interval_minutes: int = 5,
    seed: int = 7,
    scale: float = 1.0,
) -> DemoData:
    """The demo fleet over ``days`` from ``start_date``; ``scale`` multiplies the machine count."""
    if days < 1 or machines < 1 or sites < 1 or scale <= 0:
        raise ValueError("days, machines and sites must be >= 1 and scale > 0")
    if reading_interval_minutes < 1 or 1440 % reading_interval_minutes:
        raise ValueError("reading_interval_minutes must divide a day (1440 minutes)")
    # Independent streams per part: changing how logs are made does not change the sensor data.
    rng_fleet, rng_sensors, rng_logs, rng_maint, *bad = np.random.default_rng(seed).spawn(10)
    specs = fleet.site_specs(sites)
    site_frame = fleet.make_sites(specs)
    site_ids = list(site_frame["site_id"])
    n_machines = max(1, round(machines * scale))
    machine_frame = fleet.make_machines(rng_fleet, n_machines, site_ids, start_date)
    failure_frame = fleet.make_failures(rng_fleet, machine_frame, start_date, days)
    maint_frame = fleet.make_maintenance(rng_maint, machine_frame, failure_frame, start_date, days)
    readings = make_sensor_readings(
        rng_sensors,
        machine_frame,
        dict(zip(site_ids, specs)),
        failure_frame,
        start_date,
        days,
        reading_interval_minutes,
    )
    logs = make_app_logs(rng_logs, machine_frame, failure_frame, start_date, days)

    tally = defects.Tally()
    readings = defects.sensor_readings(bad[0], readings, tally)
    logs, invalid_lines = defects.app_logs(bad[1], logs, tally)
    failure_frame = defects.failures(bad[2], failure_frame, machine_frame, start_date, days, tally)
    maint_frame = defects.maintenance(bad[3], maint_frame, machine_frame, start_date, days, tally)
    machine_frame = defects.machines(bad[4], machine_frame, site_ids, start_date, tally)
    site_frame = defects.sites(bad[5], site_frame, tally)
    return DemoData(
        sites=site_frame,
        machines=machine_frame,
        sensor_readings=readings,
        app_logs=logs,
        failures=failure_frame,
        maintenance=maint_frame,
        invalid_log_lines=invalid_lines,
        expected_bad_rows={
            k: tally.bad[k]
            for k in ("sensor_readings", "app_logs", "failures", "machines", "maintenance", "sites")
        },
        expected_bad_by_partition=tally.bad_by_partition,
        expected_duplicates=tally.duplicates,
        expected_outliers=tally.outliers,
    )
