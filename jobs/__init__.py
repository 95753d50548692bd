"""Jobs and schedules over the asset graph."""

from __future__ import annotations

import dagster as dg

from jobs.executor import with_default
from platform_assets.policies import PARTITIONS_NAMED_EXECUTOR

BATCH_GROUPS = ("raw", "clean", "quarantine", "documents", "processed", "warehouse")


def build_data_pipeline(executor: str = "multiprocess") -> dg.UnresolvedAssetJobDefinition:
    """The whole batch path: sources → lake → Spark → warehouse. Partitioned assets run as one range per
    run (their backfill policy); unpartitioned ones (machine register, sites, failures) refresh with it.
    A run must name its day or range (tags): one without fails before any step, saying how to name them.
    ``executor``: the default of its run config (``PLATFORM_EXECUTOR``, jobs/executor.py)."""
    return dg.define_asset_job(
        name="data_pipeline",
        selection=dg.AssetSelection.groups(*BATCH_GROUPS),
        description="The batch path: sources → raw and clean lake → Spark → PostgreSQL warehouse. "
                    "Name a partition (tag dagster/partition) or a range (dagster/asset_partition_range_start/end).",
        tags={"dagster/max_retries": 1},
        executor_def=with_default(PARTITIONS_NAMED_EXECUTOR, executor),
    )


def build_schedules(partitions: dg.PartitionsDefinition) -> list[dg.ScheduleDefinition]:
    """The batch path each day, for the day just ended (when the calendar still runs)."""
    job = dg.define_asset_job(
        name="data_pipeline_daily",
        selection=dg.AssetSelection.groups(*BATCH_GROUPS),
        partitions_def=partitions,
        description="data_pipeline, one daily partition per run (the schedule's target).",
    )
    return [dg.build_schedule_from_partitioned_job(job, hour_of_day=1, minute_of_hour=0)]
