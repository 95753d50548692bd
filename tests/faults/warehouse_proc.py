"""A warehouse load in a process of its own, which the fault tests kill with SIGKILL.

    python -m tests.faults.warehouse_proc FIRST_DAY LAST_DAY

Runs the REAL ``warehouse/marts/app_log_daily_stats`` asset (clean app logs from the lake, the
processing engine, the warehouse IO manager) as a Dagster run over the partition range, as the
daily schedule's single-run backfill does; exit code 0 when the run succeeded.
"""

from __future__ import annotations

import sys

ASSET = ["warehouse", "marts", "app_log_daily_stats"]


def main(first: str, last: str) -> int:
    import dagster as dg

    from platform_assets.batch.assets import build_batch_assets
    from platform_assets.catalogue import load_catalogues
    from platform_assets.partitions import daily_partitions
    from resources import build_resources

    catalogue = load_catalogues().sources
    assets = build_batch_assets(catalogue, daily_partitions(catalogue))
    asset = next(a for a in assets if dg.AssetKey(ASSET) in a.keys)
    result = dg.materialize([asset], resources=build_resources(), raise_on_error=False, tags={
        "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            print("FAILED:", event.event_specific_data.error.to_string(), flush=True)
    print("SUCCESS" if result.success else "FAILURE", flush=True)
    return 0 if result.success else 3


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
