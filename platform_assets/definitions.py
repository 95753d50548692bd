"""The one ``Definitions`` object: loaded by workspace.yaml, ``dagster dev`` and the tests.

Built from whatever catalogues this environment has (``platform_assets.catalogue``): the demo's by
default, or only one's own with ``PLATFORM_CATALOGUE_DIR``. Each part is built only when its inputs
are there: the demo's Spark marts when the catalogue holds their sources, streams when a streams
file exists, the daily schedule when some source is partitioned. The default executor comes from
``jobs/executor.py`` (``PLATFORM_EXECUTOR``); the names on the servers from ``PLATFORM_NAMESPACE``
(``platform_assets/namespace.py``).
"""

from __future__ import annotations

import dagster as dg

from jobs import build_data_pipeline, build_schedules
from jobs.executor import default_executor, executor_kind
from jobs.ml import ml_pipeline, ml_weekly, record_run_failures
from platform_assets.batch.assets import build_batch_assets
from platform_assets.catalogue import load_catalogues
from platform_assets.documents.assets import build_document_assets
from platform_assets.ml.assets import build_ml_assets
from platform_assets.ml.packaging import build_packaging_assets
from platform_assets.partitions import daily_partitions
from platform_assets.sources.factory import build_source_assets
from platform_assets.streaming.assets import build_streaming_definitions
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


def _streaming(catalogues) -> tuple[list, list, list]:
    """Topic specs and stream assets, one job and one sensor per stream; nothing without a streams file."""
    if catalogues.streams is None:
        return [], [], []
    topic_specs, stream_assets, stream_jobs = build_streaming_definitions(catalogues.sources, catalogues.streams)
    sensors = [
        build_stream_sensor(name, stream, job.name, asset.node_def.name)
        for (name, stream), asset, job in zip(catalogues.streams.streams.items(), stream_assets, stream_jobs)
    ]
    return [*topic_specs, *stream_assets], stream_jobs, sensors


def build_definitions() -> dg.Definitions:
    catalogues = load_catalogues()
    catalogue, models = catalogues.sources, catalogues.models
    partitions = daily_partitions(catalogue) if catalogue.partitions else None
    batch = build_batch_assets(catalogue, partitions) if catalogues.has_demo_marts else []
    stream_assets, stream_jobs, stream_sensors = _streaming(catalogues)
    executor = executor_kind(own_catalogue=not catalogues.has_demo_marts)
    return dg.Definitions(
        assets=[*build_source_assets(catalogue), *build_document_assets(catalogue, partitions), *batch, *stream_assets,
                *build_ml_assets(models), *build_packaging_assets(models)],
        jobs=[build_data_pipeline(executor), *stream_jobs, ml_pipeline],
        schedules=[*(build_schedules(partitions) if partitions else []), ml_weekly],
        sensors=[automation_sensor, *stream_sensors, record_run_failures],
        resources=build_resources(),
        # Jobs without their own executor (the CLI's and the UI's asset runs, ml_pipeline) and
        # data_pipeline: in-process for a catalogue of one's own, multiprocess for the demo, or as
        # PLATFORM_EXECUTOR says; a run's own config still chooses.
        executor=default_executor(executor),
    )


defs = build_definitions()
