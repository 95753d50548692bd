"""Writers: put ``DemoData`` where each source of ``sources.yaml`` reads it.

Files are replaced atomically (temp file + rename), so a pipeline run or the REST API reading
concurrently sees the old file or the new one, never half of one. Every writer is idempotent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from platform_assets.demo_data.generate import DemoData
from platform_assets.demo_data.logs import event_json

# failures.parquet keeps real types: a typed Parquet file cannot hold "yesterday" in a timestamp
# column, so its bad rows are missing required values (null machine_id, component, failure_time).
# Type-breaking values are exercised by the CSV and JSON sources instead.
FAILURES_SCHEMA = pa.schema(
    [
        ("failure_id", pa.string()),
        ("machine_id", pa.string()),
        ("failure_time", pa.timestamp("us", tz="UTC")),
        ("component", pa.string()),
        ("failure_mode", pa.string()),
        ("downtime_hours", pa.float64()),
    ]
)


def _replace(path: Path, write) -> Path:
    """Write through ``write(tmp_path)``, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def _iso(values: pd.Series, unit: str) -> np.ndarray:
    """Timestamps as ISO-8601 UTC with Z; anything else (a deliberately bad value) unchanged."""
    arr = values.to_numpy(dtype=object)
    is_ts = np.fromiter((isinstance(v, pd.Timestamp) for v in arr), dtype=bool, count=len(arr))
    out = arr.copy()
    if is_ts.any():
        stamps = pd.DatetimeIndex(list(arr[is_ts])).tz_convert("UTC").tz_localize(None)
        text = np.datetime_as_string(stamps.to_numpy().astype(f"datetime64[{unit}]"), unit=unit)
        out[is_ts] = np.char.add(text, "Z")
    return out


def _clear_stale(folder: Path, pattern: str, keep: set[Path]) -> None:
    """Daily files of an earlier, longer run would otherwise be read as current data."""
    for old in folder.glob(pattern):
        if old not in keep:
            old.unlink()


def write_sensor_readings(data: DemoData, folder: Path) -> list[Path]:
    """``{date}.csv`` per day, header row, timestamps like 2026-11-01T00:05:00Z."""
    written = []
    for day, rows in data.sensor_readings.groupby(level="file_date", sort=True):
        out = rows.assign(ts=_iso(rows["ts"], "s"))
        written.append(
            _replace(folder / f"{day.isoformat()}.csv", lambda p, out=out: out.to_csv(p, index=False))
        )
    _clear_stale(folder, "*.csv", set(written))
    return written


def write_app_logs(data: DemoData, folder: Path) -> list[Path]:
    """``{date}.jsonl``: one JSON document per line, context nested; truncated lines written raw."""
    written = []
    broken = data.invalid_log_lines
    for day, rows in data.app_logs.groupby(level="file_date", sort=True):
        lines = [event_json(r) for r in rows.assign(ts=_iso(rows["ts"], "ms")).to_dict("records")]
        for line_no, raw in (
            broken[broken.index == day][["line_no", "raw"]].sort_values("line_no").itertuples(index=False)
        ):
            lines.insert(line_no, raw)
        text = "\n".join(lines) + "\n"
        written.append(_replace(folder / f"{day.isoformat()}.jsonl", lambda p, text=text: p.write_text(text)))
    _clear_stale(folder, "*.jsonl", set(written))
    return written


def write_failures(data: DemoData, path: Path) -> Path:
    table = pa.Table.from_pandas(data.failures, schema=FAILURES_SCHEMA, preserve_index=False)
    return _replace(path, lambda p: pq.write_table(table, p))


def write_files(data: DemoData, files_root: Path) -> dict[str, list[Path]]:
    """The file sources under ``SOURCE_FILES_ROOT``, at the paths ``sources.yaml`` declares."""
    files_root = Path(files_root)
    return {
        "sensor_readings": write_sensor_readings(data, files_root / "sensor_readings"),
        "app_logs": write_app_logs(data, files_root / "app_logs"),
        "failures": [write_failures(data, files_root / "failures.parquet")],
    }


def write_api_data(data: DemoData, api_dir: Path) -> Path:
    """``sites.json`` for the REST API; a missing value is left out of its record, as APIs do."""
    records = [
        {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and np.isnan(v))}
        for row in data.sites.to_dict("records")
    ]
    text = json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    return _replace(Path(api_dir) / "sites.json", lambda p, text=text: p.write_text(text))


def _none(v: Any) -> Any:
    return None if v is None or v is pd.NaT or (isinstance(v, float) and np.isnan(v)) else v


def machine_rows(frame: pd.DataFrame) -> list[tuple]:
    """Rows as DB parameters: missing values as None (NULL), never NaN."""
    cols = ["machine_id", "site_id", "model", "install_date", "rated_power_kw"]
    return [tuple(_none(v) for v in row) for row in frame[cols].itertuples(index=False)]


def maintenance_rows(frame: pd.DataFrame) -> list[tuple]:
    """Rows as DB parameters: timestamps as naive UTC datetimes (MySQL DATETIME has no zone)."""
    cols = ["record_id", "machine_id", "performed_at", "kind", "technician", "duration_hours"]
    out = []
    for rec, machine, at, kind, tech, hours in frame[cols].itertuples(index=False):
        at = None if pd.isna(at) else at.tz_convert("UTC").tz_localize(None).to_pydatetime()
        out.append((int(rec), _none(machine), at, _none(kind), _none(tech), _none(hours)))
    return out


# No primary key or NOT NULL on the required columns: the register really holds such rows,
# and the platform's contract (not the database) is what rejects them.
PG_CREATE = """
CREATE TABLE public.machines (
    machine_id text,
    site_id text,
    model text,
    install_date date,
    rated_power_kw double precision
)"""


def seed_postgres(data: DemoData, conninfo: str | Mapping[str, Any]) -> int:
    """Drop and recreate ``public.machines`` and fill it, all in one transaction; returns rows."""
    import psycopg2
    from psycopg2.extras import execute_values

    rows = machine_rows(data.machines)
    conn = psycopg2.connect(conninfo) if isinstance(conninfo, str) else psycopg2.connect(**conninfo)
    try:
        with conn, conn.cursor() as cur:  # commits on success, rolls back on error
            cur.execute("DROP TABLE IF EXISTS public.machines")
            cur.execute(PG_CREATE)
            execute_values(
                cur,
                "INSERT INTO public.machines (machine_id, site_id, model, install_date, rated_power_kw) VALUES %s",
                rows,
            )
    finally:
        conn.close()
    return len(rows)


MYSQL_CREATE = """
CREATE TABLE {name} (
    record_id INT PRIMARY KEY,
    machine_id VARCHAR(32) NULL,
    performed_at DATETIME(6) NULL,
    kind VARCHAR(32) NOT NULL,
    technician VARCHAR(64) NULL,
    duration_hours DOUBLE NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""


def seed_mysql(data: DemoData, conn_params: Mapping[str, Any], table: str = "maintenance_records") -> int:
    """Replace ``table``: fill a staging table in one transaction, then swap it in atomically.

    MySQL DDL commits implicitly, so drop-and-fill would expose an empty table to readers;
    RENAME TABLE swaps both names in one step instead. Returns the number of rows.
    """
    import pymysql

    rows = maintenance_rows(data.maintenance)
    staging, old = f"{table}__new", f"{table}__old"
    conn = pymysql.connect(**conn_params, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(f"DROP TABLE IF EXISTS `{staging}`, `{old}`")
            cur.execute(MYSQL_CREATE.format(name=f"`{staging}`"))
            cur.executemany(
                f"INSERT INTO `{staging}` (record_id, machine_id, performed_at, kind, technician, duration_hours)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )
            conn.commit()
            cur.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            )
            if cur.fetchone():
                cur.execute(f"RENAME TABLE `{table}` TO `{old}`, `{staging}` TO `{table}`")
                cur.execute(f"DROP TABLE `{old}`")
            else:
                cur.execute(f"RENAME TABLE `{staging}` TO `{table}`")
    finally:
        conn.close()
    return len(rows)
