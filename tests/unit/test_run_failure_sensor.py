"""The run-failure sensor writes why a run failed (job, step, error) to the warehouse."""

import dagster as dg
import pandas as pd

from jobs.ml import record_run_failures
from resources.warehouse import WarehouseResource


class RecordingWarehouse(WarehouseResource):
    """Keeps appended frames instead of writing them (the real writes are tested in integration)."""

    def append(self, schema, table, frame):
        type(self).appended.append((schema, table, frame))
        return len(frame)


RecordingWarehouse.appended = []


def test_a_failed_run_is_recorded_with_its_step_and_error():
    @dg.op
    def explode():
        raise ValueError("sensor feed went dark")

    @dg.job
    def fragile():
        explode()

    instance = dg.DagsterInstance.ephemeral()
    result = fragile.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE" or e.event_type_value == "RUN_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="record_run_failures", dagster_event=failure, dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id)).for_run_failure()
    warehouse = RecordingWarehouse(host="h", port=1, user="u", password="p", database="d")
    record_run_failures(context, warehouse=warehouse)
    schema, table, frame = RecordingWarehouse.appended[-1]
    assert (schema, table) == ("ops", "run_failures")
    row = frame.iloc[0]
    assert row["job"] == "fragile" and row["step"] == "explode" and "sensor feed went dark" in row["error"]
    assert isinstance(row["failed_at"], pd.Timestamp)
