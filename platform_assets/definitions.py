"""The one ``Definitions`` object: loaded by workspace.yaml, ``dagster dev`` and the tests."""

from __future__ import annotations

import dagster as dg

from jobs import build_schedules, data_pipeline
from jobs.ml import ml_pipeline, ml_weekly, record_run_failures
from platform_assets.batch.assets import build_batch_assets
from platform_assets.ml.assets import build_ml_assets
from platform_assets.ml.config import load_models
from platform_assets.ml.packaging import build_packaging_assets
from platform_assets.partitions import daily_partitions
from platform_assets.sources.config import load_catalogue
from platform_assets.sources.factory import build_source_assets
from platform_assets.streaming.assets import build_streaming_definitions
from platform_assets.streaming.config import load_streams
from resources import build_resources
from sensors.kafka_streams import build_stream_sensor

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
    streams = load_streams(catalogue)
    models = load_models()
    partitions = daily_partitions(catalogue)
    topic_specs, stream_assets, stream_jobs = build_streaming_definitions(catalogue, streams)
    stream_sensors = [
        build_stream_sensor(name, stream, job.name, asset.node_def.name)
        for (name, stream), asset, job in zip(streams.streams.items(), stream_assets, stream_jobs)
    ]
    return dg.Definitions(
        assets=[*build_source_assets(catalogue), *build_batch_assets(catalogue, partitions),
                *topic_specs, *stream_assets, *build_ml_assets(models), *build_packaging_assets(models)],
        jobs=[data_pipeline, *stream_jobs, ml_pipeline],
        schedules=[*build_schedules(partitions), ml_weekly],
        sensors=[automation_sensor, *stream_sensors, record_run_failures],
        resources=build_resources(),
    )


defs = build_definitions()
