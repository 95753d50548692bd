"""The ML job, its schedule, and a sensor that records why runs fail."""

import dagster as dg
import pandas as pd

from platform_assets import namespace
from resources.warehouse import WarehouseResource

ml_pipeline = dg.define_asset_job(
    name="ml_pipeline",
    selection=dg.AssetSelection.groups("ml", "serving"),
    description="Feature sets → candidates (MLflow) → challenger gate → champion alias → online store → BentoML models and Bento.",
)

# Weekly retraining on top of the eager retraining that follows feature-set updates.
ml_weekly = dg.ScheduleDefinition(name="ml_weekly_retraining", job=ml_pipeline, cron_schedule="0 3 * * 0",
                                  execution_timezone="UTC")


def _why(error) -> str:
    """The error and its causes, innermost last: the wrapper alone says only which op failed."""
    parts = []
    while error is not None:
        parts.append(error.message.strip())
        error = error.cause
    return " <- caused by: ".join(parts)


def _run_error(event) -> str:
    """A run that failed before any step (e.g. no partition named): its error, not only "An exception
    was thrown during execution"."""
    error = getattr(event.event_specific_data, "error", None)
    return f"{event.message or ''} {_why(error)}".strip() if error else (event.message or "")


@dg.run_failure_sensor(name="record_run_failures", minimum_interval_seconds=30,
                       default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Records every failed run (job, step, error) in the warehouse table ops.run_failures.")
def record_run_failures(context: dg.RunFailureSensorContext, warehouse: WarehouseResource):

    steps = context.get_step_failure_events()
    rows = pd.DataFrame([{
        "run_id": context.dagster_run.run_id, "job": context.dagster_run.job_name,
        "step": e.step_key, "error": _why(e.event_specific_data.error)[:4000],
        "failed_at": pd.Timestamp.now(tz="UTC"),
    } for e in steps] or [{"run_id": context.dagster_run.run_id, "job": context.dagster_run.job_name, "step": None,
                           "error": _run_error(context.failure_event)[:4000], "failed_at": pd.Timestamp.now(tz="UTC")}])
    warehouse.append(namespace.schema("ops"), "run_failures", rows)
