"""Deliberately bad rows: each breaks the source's contract in exactly one way, and is counted.

About 0.4 % of rows (with a floor per source or daily file, so every kind always shows up).
Each bad row has a single defect, so "rows quarantined" must equal the count kept here.
Bad values avoid every token that pandas or Spark read as null/NaN ("n/a", "NA", "null", "NaN",
"Inf"...): such a value would silently become a legal null instead of a contract violation.
Outliers (out of min/max) and exact duplicates are not violations: they are counted separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from platform_assets.demo_data import fleet
from platform_assets.demo_data.logs import event_json, iso_ms
from platform_assets.demo_data.sensors import OUTLIER_VALUES, RANGES

BAD_RATE = 0.004
OUTLIER_RATE = 0.0005
NON_NUMERIC = ("ERR", "#VALUE!", "--", "sensor fault")
BAD_TIMESTAMPS = ("yesterday", "not a time", "2026-11-31T25:61:00Z")
BAD_LEVELS = ("FATAL", "CRITICAL")


@dataclass
class Tally:
    """What was injected, for exact reconciliation of quarantine, dedupe and outlier counts."""

    bad: dict[str, int] = field(default_factory=dict)
    bad_by_partition: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates: int = 0
    outliers: int = 0


def _kinds(rng: np.random.Generator, rows: int, kinds: tuple[str, ...]) -> list[str]:
    """How many bad rows (at least one of each kind), and a shuffled kind for each."""
    count = max(len(kinds), int(rng.binomial(rows, BAD_RATE)))
    return list(rng.permutation([kinds[i % len(kinds)] for i in range(count)]))


class _Edits:
    """Bad values collected per column and written once (rewriting a column per row is quadratic)."""

    def __init__(self) -> None:
        self.cells: dict[str, tuple[list[int], list[object]]] = {}

    def add(self, column: str, pos: int, value: object) -> None:
        positions, values = self.cells.setdefault(column, ([], []))
        positions.append(int(pos))
        values.append(value)

    def apply(self, frame: pd.DataFrame) -> None:
        """Into an object copy of each column, so strings survive next to numbers and Timestamps."""
        for column, (positions, values) in self.cells.items():
            arr = frame[column].to_numpy(dtype=object, copy=True)
            arr[positions] = values
            frame[column] = arr


def sensor_readings(rng: np.random.Generator, frame: pd.DataFrame, tally: Tally) -> pd.DataFrame:
    frame = frame.copy()
    days = frame.index.to_numpy()
    n = len(frame)
    spoiled = np.zeros(n, dtype=bool)

    outliers = rng.choice(n, size=int(rng.binomial(n, OUTLIER_RATE)), replace=False)
    for pos in outliers:
        column, value = OUTLIER_VALUES[rng.integers(len(OUTLIER_VALUES))]
        frame.iloc[pos, frame.columns.get_loc(column)] = value
    spoiled[outliers] = True

    per_day, duplicates, edits = {}, [], _Edits()
    for day in sorted(set(days)):
        in_day = np.flatnonzero((days == day) & ~spoiled)
        kinds = _kinds(rng, len(in_day), ("non_numeric", "missing_machine_id", "bad_ts"))[: len(in_day)]
        picked = rng.choice(in_day, size=len(kinds), replace=False)
        for pos, kind in zip(picked, kinds):
            if kind == "non_numeric":
                edits.add(str(rng.choice(list(RANGES))), pos, str(rng.choice(NON_NUMERIC)))
            elif kind == "missing_machine_id":
                edits.add("machine_id", pos, None)
            else:
                edits.add("ts", pos, str(rng.choice(BAD_TIMESTAMPS)))
        spoiled[picked] = True
        per_day[day.isoformat()] = len(kinds)
        clean = np.setdiff1d(in_day, picked)
        duplicates.extend(rng.choice(clean, size=min(len(clean), int(rng.integers(1, 3))), replace=False))
    edits.apply(frame)

    # Exact copies right after their original, in the same daily file.
    dup = np.sort(np.asarray(duplicates, dtype=int))
    order = np.argsort(np.concatenate([np.arange(n) * 2, dup * 2 + 1]), kind="stable")
    frame = frame.iloc[np.concatenate([np.arange(n), dup])[order]]
    tally.bad["sensor_readings"] = sum(per_day.values())
    tally.bad_by_partition["sensor_readings"] = per_day
    tally.duplicates, tally.outliers = len(dup), len(outliers)
    return frame


def app_logs(
    rng: np.random.Generator, frame: pd.DataFrame, tally: Tally
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """In-place defects plus truncated lines; returns (events, invalid lines indexed by file_date)."""
    frame = frame.copy()
    days = frame.index.to_numpy()
    per_day, invalid, edits = {}, [], _Edits()
    for day in sorted(set(days)):
        in_day = np.flatnonzero(days == day)
        kinds = _kinds(rng, len(in_day), ("invalid_json", "bad_level", "bad_ts", "missing_service"))
        kinds = kinds[: len(in_day)]  # only for absurdly small runs
        broken = [k for k in kinds if k == "invalid_json"]
        picked = rng.choice(in_day, size=len(kinds) - len(broken), replace=False)
        for pos, kind in zip(picked, [k for k in kinds if k != "invalid_json"]):
            if kind == "bad_level":
                edits.add("level", pos, str(rng.choice(BAD_LEVELS)))
            elif kind == "bad_ts":
                edits.add("ts", pos, str(rng.choice(BAD_TIMESTAMPS)))
            else:
                edits.add("service", pos, None)
        # A truncated line: a real-looking event cut off mid-document (as when a writer crashes).
        line_nos = np.sort(rng.choice(len(in_day) + len(broken), size=len(broken), replace=False))
        for line_no in line_nos:
            row = frame.iloc[int(rng.choice(in_day))]
            record = {
                **row.to_dict(),
                "ts": iso_ms(row["ts"]) if isinstance(row["ts"], pd.Timestamp) else row["ts"],
            }
            text = event_json(record)
            invalid.append((day, int(line_no), text[: int(len(text) * rng.uniform(0.3, 0.8))]))
        per_day[day.isoformat()] = len(kinds)
    edits.apply(frame)
    lines = pd.DataFrame([r[1:] for r in invalid], columns=["line_no", "raw"])
    lines.index = pd.Index([r[0] for r in invalid], name="file_date")
    tally.bad["app_logs"] = sum(per_day.values())
    tally.bad_by_partition["app_logs"] = per_day
    return frame, lines


def machines(rng: np.random.Generator, frame: pd.DataFrame, site_ids: list[str], start: date, tally: Tally):
    """Half-entered register rows (new ids after the fleet): a required field left empty."""
    kinds = _kinds(rng, len(frame), ("site_id", "model", "machine_id"))
    extra = pd.DataFrame(fleet.random_machine_attrs(rng, len(kinds), site_ids, start))
    extra.insert(0, "machine_id", [f"M{len(frame) + i + 1:03d}" for i in range(len(kinds))])
    for i, kind in enumerate(kinds):
        extra.at[i, kind] = None
    extra["rated_power_kw"] = extra["rated_power_kw"].astype(float)
    tally.bad["machines"] = len(kinds)
    return pd.concat([frame, extra], ignore_index=True)


def failures(rng, frame: pd.DataFrame, machines: pd.DataFrame, start: date, days: int, tally: Tally):
    """Extra records with a required field missing, renumbered in time order among the real ones.

    The clean failures drive sensors and logs; these extras do not, so labels stay honest.
    """
    begin, _ = fleet.window(start, days)
    kinds = _kinds(rng, len(frame), ("machine_id", "component", "failure_time"))
    picks = machines.iloc[rng.integers(0, len(machines), size=len(kinds))]
    extra = pd.DataFrame(
        {
            "machine_id": picks["machine_id"].to_numpy(dtype=object),
            "failure_time": begin + pd.to_timedelta(rng.integers(0, days * 86400, size=len(kinds)), unit="s"),
            "component": [str(rng.choice(fleet.COMPONENTS[fleet.MODELS[m].kind])) for m in picks["model"]],
            "failure_mode": list(rng.choice(fleet.FAILURE_MODES, size=len(kinds))),
            "downtime_hours": np.round(rng.uniform(0.5, 12, size=len(kinds)), 1),
        }
    )
    merged = pd.concat([p for p in (frame.drop(columns="failure_id"), extra) if len(p)], ignore_index=True)
    is_bad = np.r_[np.zeros(len(frame), bool), np.ones(len(kinds), bool)]
    order = np.argsort(merged["failure_time"].to_numpy(), kind="stable")
    merged, is_bad = merged.iloc[order].reset_index(drop=True), is_bad[order]
    for pos, kind in zip(np.flatnonzero(is_bad), kinds):
        merged.loc[pos, kind] = pd.NaT if kind == "failure_time" else None
    merged.insert(0, "failure_id", [f"F{i + 1:04d}" for i in range(len(merged))])
    tally.bad["failures"] = len(kinds)
    return merged


def maintenance(rng, frame: pd.DataFrame, machines: pd.DataFrame, start: date, days: int, tally: Tally):
    """Extra work records with no machine or an unknown kind.

    No null ``performed_at``: the source is read per day by that column, so such a row would never
    be selected, never quarantined, and the counts could not reconcile.
    """
    begin, _ = fleet.window(start, days)
    kinds = _kinds(rng, len(frame), ("machine_id", "kind"))
    minutes = rng.integers(0, days * 1440, size=len(kinds))
    extra = pd.DataFrame(
        {
            "machine_id": list(rng.choice(machines["machine_id"].to_numpy(dtype=object), size=len(kinds))),
            "performed_at": begin + pd.to_timedelta(minutes, unit="min"),
            "kind": list(rng.choice(("preventive", "inspection"), size=len(kinds))),
            "technician": list(rng.choice(fleet.TECHNICIANS, size=len(kinds))),
            "duration_hours": np.round(rng.uniform(0.25, 4, size=len(kinds)), 2),
        }
    )
    for i, kind in enumerate(kinds):
        extra.at[i, kind] = None if kind == "machine_id" else "unknown"
    merged = pd.concat([p for p in (frame.drop(columns="record_id"), extra) if len(p)], ignore_index=True)
    merged = merged.sort_values("performed_at", kind="stable").reset_index(drop=True)
    merged.insert(0, "record_id", np.arange(1, len(merged) + 1, dtype="int64"))
    per_day: dict[str, int] = {}
    for ts in extra["performed_at"]:
        per_day[ts.date().isoformat()] = per_day.get(ts.date().isoformat(), 0) + 1
    tally.bad["maintenance"] = len(kinds)
    tally.bad_by_partition["maintenance"] = dict(sorted(per_day.items()))
    return merged


def sites(rng: np.random.Generator, frame: pd.DataFrame, tally: Tally) -> pd.DataFrame:
    """Extra register entries: one without a name, one without an id."""
    kinds = _kinds(rng, len(frame), ("name", "site_id"))
    extra = []
    for i, kind in enumerate(kinds):
        spec = fleet.SITE_POOL[int(rng.integers(len(fleet.SITE_POOL)))]
        row = {
            "site_id": f"S{len(frame) + i + 1:02d}",
            "name": f"{spec.name.split()[0]} Annex",
            "region": spec.region,
            "country": spec.country,
            "timezone": spec.timezone,
        }
        row[kind] = None
        extra.append(row)
    tally.bad["sites"] = len(kinds)
    return pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)
