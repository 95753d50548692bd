"""Running the platform's jobs the way the UI does, for the integration tests."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from platform_assets.definitions import defs

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def run_assets(start: dt.date, end: dt.date, selection: list[dg.AssetKey] | None = None,
               instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    """Materialise the batch path (or a selection of it) for the days start..end, in one run."""
    tags = {RANGE_START: start.isoformat(), RANGE_END: end.isoformat()}
    if selection is None:
        job = defs.resolve_job_def("data_pipeline")
        return job.execute_in_process(instance=instance or dg.DagsterInstance.ephemeral(), tags=tags,
                                      raise_on_error=False)
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance or dg.DagsterInstance.ephemeral(), tags=tags,
                                  asset_selection=selection, raise_on_error=False)


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        e.event_specific_data.error.message for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ) + "\n".join(
        str(e.event_specific_data.error.cause.message) for e in result.all_events
        if e.event_type_value == "STEP_FAILURE" and e.event_specific_data.error.cause
    )


def check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    return {
        (e.event_specific_data.asset_key.to_user_string(), e.event_specific_data.check_name):
            e.event_specific_data.passed
        for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def run_ml(ml_env, selection=None, run_config=None, defs=None):
    from platform_assets.definitions import defs as platform_defs

    defs = defs or platform_defs
    job = defs.resolve_implicit_global_asset_job_def() if selection else defs.resolve_job_def("ml_pipeline")
    kwargs = {"asset_selection": selection} if selection else {}
    return job.execute_in_process(instance=ml_env["instance"], raise_on_error=False,
                                  run_config={**QUIET, **(run_config or {})}, **kwargs)


def metadata(result, key):
    mats = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()
            if e.event_specific_data.materialization.asset_key == key]
    return {k: v.value for k, v in mats[-1].metadata.items()} if mats else None
