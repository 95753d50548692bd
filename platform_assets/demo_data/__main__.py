"""``python -m platform_assets.demo_data``: generate the demo fleet and load every source with it.

Settings come from the environment (in LOCAL mode filled from deploy/local/services.env).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from datetime import date
from pathlib import Path

from platform_assets.demo_data import write
from platform_assets.demo_data.generate import DemoData, generate_fleet


def _reachable(what: str, host: str, port: int) -> None:
    """Fail fast, before writing anything, with the fix in the message."""
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        sys.exit(f"{what} at {host}:{port} is not reachable: run make services-up (or pass --files-only)")


def _postgres_params() -> dict:
    env = os.environ
    return {
        "host": env["OPS_POSTGRES_HOST"],
        "port": int(env["OPS_POSTGRES_PORT"]),
        "user": env["OPS_POSTGRES_USER"],
        "password": env["OPS_POSTGRES_PASSWORD"],
        "dbname": env["OPS_POSTGRES_DB"],
        "connect_timeout": 5,
    }


def _mysql_params() -> dict:
    env = os.environ
    return {
        "host": env["MYSQL_HOST"],
        "port": int(env["MYSQL_PORT"]),
        "user": env["MYSQL_USER"],
        "password": env["MYSQL_PASSWORD"],
        "database": env["MYSQL_DB"],
        "connect_timeout": 5,
    }


def _report(data: DemoData, where: dict[str, str]) -> None:
    for name, frame in data.frames().items():
        rows = len(frame) + (len(data.invalid_log_lines) if name == "app_logs" else 0)
        extra = (
            f", {data.expected_duplicates} duplicates, {data.expected_outliers} outliers"
            if (name == "sensor_readings")
            else ""
        )
        print(
            f"{name:<16} {rows:>9,} rows  {data.expected_bad_rows[name]:>5} bad{extra:<32} -> {where[name]}"
        )


def main(argv: list[str] | None = None) -> None:
    from platform_assets.settings import load_local_defaults

    parser = argparse.ArgumentParser(
        prog="python -m platform_assets.demo_data",
        description="Generate the demo fleet and load every source with it.",
    )
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the number of machines")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start-date", type=date.fromisoformat, default=date(2026, 11, 1))
    parser.add_argument(
        "--files-only", action="store_true", help="write the files and API data; skip the databases"
    )
    args = parser.parse_args(argv)

    load_local_defaults()
    files_root = Path(os.environ["SOURCE_FILES_ROOT"])
    api_dir = Path(os.environ["PLATFORM_DATA_DIR"]) / "sources" / "api"
    pg, my = _postgres_params(), _mysql_params()
    if not args.files_only:
        _reachable("PostgreSQL", pg["host"], pg["port"])
        _reachable("MySQL", my["host"], my["port"])

    started = time.perf_counter()
    data = generate_fleet(start_date=args.start_date, days=args.days, seed=args.seed, scale=args.scale)
    write.write_files(data, files_root)
    write.write_api_data(data, api_dir)
    where = {
        "sensor_readings": f"{files_root / 'sensor_readings'}/ ({args.days} files)",
        "app_logs": f"{files_root / 'app_logs'}/ ({args.days} files)",
        "failures": str(files_root / "failures.parquet"),
        "sites": str(api_dir / "sites.json"),
        "machines": "(skipped: --files-only)",
        "maintenance": "(skipped: --files-only)",
    }
    if not args.files_only:
        where["machines"] = f"postgresql://{pg['host']}:{pg['port']}/{pg['dbname']} public.machines"
        where["maintenance"] = f"mysql://{my['host']}:{my['port']}/{my['database']} maintenance_records"
        import psycopg2
        import pymysql

        for name, seed, params in (
            ("machines", write.seed_postgres, pg),
            ("maintenance", write.seed_mysql, my),
        ):
            try:
                seed(data, params)
            except (psycopg2.Error, pymysql.Error) as exc:  # e.g. auth, missing database: say where
                sys.exit(f"seeding {name} into {where[name]} failed: {str(exc).strip()}")
    _report(data, where)
    print(f"done in {time.perf_counter() - started:.1f} s (seed {args.seed}, scale {args.scale:g})")


if __name__ == "__main__":
    main()
