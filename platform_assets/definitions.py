"""The one ``Definitions`` object: loaded by workspace.yaml, ``dagster dev`` and the tests."""

from __future__ import annotations

import dagster as dg

from jobs import build_schedules, data_pipeline
from platform_assets.batch.assets import build_batch_assets
from platform_assets.partitions import daily_partitions
from platform_assets.sources.config import load_catalogue
from platform_assets.sources.factory import build_source_assets
from resources import build_resources


# One sensor evaluates every asset's automation condition (cron refreshes of snapshot sources, eager
# updates downstream). Running by default, so `make demo`'s daemon keeps the graph fresh.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "platform_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)


def build_definitions() -> dg.Definitions:
    catalogue = load_catalogue()
    partitions = daily_partitions(catalogue)
    return dg.Definitions(
        assets=[*build_source_assets(catalogue), *build_batch_assets(catalogue, partitions)],
        jobs=[data_pipeline],
        schedules=build_schedules(partitions),
        sensors=[automation_sensor],
        resources=build_resources(),
    )


defs = build_definitions()
