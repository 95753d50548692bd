"""The partitioned batch job launched the ways users launch it, against a real webserver and daemon.

A run that names no partition fails before any step with a message that says how to name one
(platform_assets/policies.py, PARTITIONS_NAMED_EXECUTOR), in seconds; with a partition, a range
("Materialize all" in the UI: a single-run backfill) or a schedule's tick, it succeeds.
"""

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from dagster_graphql import DagsterGraphQLClient

from platform_assets.settings import PROJECT_ROOT
from tests.integration.conftest import START, free_port, own_dagster_home
from tests.integration.test_dagster_ui import graphql

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
DAY = START.isoformat()
# A cheap slice of data_pipeline (no Spark): one source's raw, clean and quarantine assets.
SLICE = ["lake/raw/sensor_readings", "lake/clean/sensor_readings", "warehouse/quarantine/sensor_readings"]
SLICE_KEYS = [dg.AssetKey.from_user_string(k) for k in SLICE]
FAIL_FAST_SECONDS = 60  # the run worker's start (loading the definitions) included; retries took 232 s
HINTS = ("dagster/partition", "--partition", "Materialize all")


def _stop_sensors(port: int) -> None:
    """Default-running sensors (Kafka streams, automation) would launch runs of their own."""
    sensors = graphql(port, """{ sensorsOrError(repositorySelector: {repositoryLocationName: "platform",
        repositoryName: "__repository__"}) { ... on Sensors { results { name sensorState { id status } } } } }""")
    for sensor in sensors["data"]["sensorsOrError"]["results"]:
        graphql(port, f"""mutation {{ stopSensor(id: "{sensor['sensorState']['id']}") {{ __typename }} }}""")
    sensors = graphql(port, """{ sensorsOrError(repositorySelector: {repositoryLocationName: "platform",
        repositoryName: "__repository__"}) { ... on Sensors { results { sensorState { status } } } } }""")
    assert {s["sensorState"]["status"] for s in sensors["data"]["sensorsOrError"]["results"]} == {"STOPPED"}


@pytest.fixture(scope="module")
def dagster_up(tmp_path_factory, platform):
    """A webserver and a daemon on a Dagster database of this module's own."""
    with own_dagster_home(tmp_path_factory) as (home, _db):
        yield from _servers(home)


def _servers(home: Path):
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    port = free_port()
    procs = []
    log = open(home / "servers.log", "wb")  # noqa: SIM115 (open while the servers run)
    try:
        procs.append(subprocess.Popen([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                                       "-w", "workspace.yaml"], cwd=PROJECT_ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while True:
            assert procs[0].poll() is None, (home / "servers.log").read_text()[-3000:]
            try:
                _stop_sensors(port)
                break
            except (OSError, KeyError, TypeError):
                assert time.monotonic() < deadline, "webserver not ready within 120 s"
                time.sleep(1)
        procs.append(subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                                      cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield {"port": port, "home": home, "env": env, "instance": instance,
                   "client": DagsterGraphQLClient("127.0.0.1", port_number=port)}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def _wait(instance: dg.DagsterInstance, run_id: str, timeout: float = 300) -> tuple[dg.DagsterRunStatus, float]:
    started = time.monotonic()
    while True:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run.status, time.monotonic() - started
        if time.monotonic() - started > timeout:
            log = Path(instance.root_directory, "servers.log").read_text(errors="replace")[-4000:]
            events = [r.message or str(r.dagster_event.event_type if r.dagster_event else "")
                      for r in instance.all_logs(run_id)][-15:]
            raise AssertionError(f"run {run_id} {run.status if run else 'missing'} after {timeout:.0f} s; "
                                 f"events {events}\n{log}")
        time.sleep(0.5)


def _failure(instance: dg.DagsterInstance, run_id: str) -> str:
    events = [r.dagster_event for r in instance.all_logs(run_id) if r.dagster_event]
    assert not [e for e in events if e.event_type == dg.DagsterEventType.STEP_START], "a step started"
    failures = [e for e in events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    assert len(failures) == 1
    return failures[0].event_specific_data.error.message


def _assert_fails_fast(instance, run_id: str) -> None:
    status, seconds = _wait(instance, run_id, timeout=FAIL_FAST_SECONDS * 3)
    assert status == dg.DagsterRunStatus.FAILURE
    assert seconds < FAIL_FAST_SECONDS, f"failed after {seconds:.0f} s"
    print(f"run {run_id[:8]} failed {seconds:.1f} s after its launch")  # shown with -s
    message = _failure(instance, run_id)
    assert all(hint in message for hint in HINTS), message


def test_graphql_client_without_partition_fails_at_once_saying_how(dagster_up):
    run_id = dagster_up["client"].submit_job_execution("data_pipeline")
    _assert_fails_fast(dagster_up["instance"], run_id)
    assert dagster_up["instance"].get_run_by_id(run_id).tags.get("dagster/partition") is None


def test_graphql_client_with_a_partition_succeeds(dagster_up):
    run_id = dagster_up["client"].submit_job_execution("data_pipeline", tags={"dagster/partition": DAY},
                                                       asset_selection=SLICE_KEYS)
    status, _ = _wait(dagster_up["instance"], run_id)
    assert status == dg.DagsterRunStatus.SUCCESS
    record = dagster_up["instance"].get_latest_materialization_event(dg.AssetKey.from_user_string(SLICE[1]))
    assert record.asset_materialization.partition == DAY


def test_cli_job_launch_without_partition_fails_at_once_saying_how(dagster_up):
    run_id = str(uuid.uuid4())
    subprocess.run([str(BIN / "dagster"), "job", "launch", "-j", "data_pipeline", "-w", "workspace.yaml",
                    "--run-id", run_id], cwd=PROJECT_ROOT, env=dagster_up["env"], check=True, capture_output=True,
                   timeout=120)
    _assert_fails_fast(dagster_up["instance"], run_id)


def test_cli_asset_materialize_needs_a_partition_and_runs_with_one(dagster_up):
    base = [str(BIN / "dagster"), "asset", "materialize", "-m", "platform_assets.definitions", "--select",
            ",".join(SLICE)]
    refused = subprocess.run(base, cwd=PROJECT_ROOT, env=dagster_up["env"], capture_output=True, text=True,
                             timeout=120, check=False)
    assert refused.returncode != 0
    assert "no '--partition' option was provided" in refused.stderr
    done = subprocess.run([*base, "--partition", DAY], cwd=PROJECT_ROOT, env=dagster_up["env"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_ui_materialize_all_is_one_single_run_backfill_of_the_range(dagster_up):
    """What the UI's "Materialize all" dialog sends for partitioned assets: a backfill of the picked
    range, which the daemon runs as one run (the assets' single-run backfill policy)."""
    days = [(START + dt.timedelta(days=i)).isoformat() for i in range(2)]
    keys = ", ".join(f"{{path: {json.dumps(k.split('/'))}}}" for k in SLICE)
    launched = graphql(dagster_up["port"], f"""mutation {{ launchPartitionBackfill(backfillParams: {{
        partitionNames: {json.dumps(days)}, assetSelection: [{keys}] }}) {{
        __typename ... on LaunchBackfillSuccess {{ backfillId }} ... on PythonError {{ message }} }} }}""")
    result = launched["data"]["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    instance = dagster_up["instance"]
    deadline = time.monotonic() + 300
    while (backfill := instance.get_backfill(result["backfillId"])).status == BulkActionStatus.REQUESTED:
        assert time.monotonic() < deadline, "backfill not done within 300 s"
        time.sleep(1)
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": result["backfillId"]}))
    assert len(runs) == 1
    assert (runs[0].tags["dagster/asset_partition_range_start"], runs[0].tags["dagster/asset_partition_range_end"]) \
        == (days[0], days[-1])
    assert runs[0].status == dg.DagsterRunStatus.SUCCESS


def test_schedule_tick_names_its_day(dagster_up):
    """The daily schedule's tick (evaluated by the webserver as "Test schedule" does) names the day
    just ended; a run launched with its tags succeeds."""
    at = dt.datetime.combine(START + dt.timedelta(days=2), dt.time(1), tzinfo=dt.UTC).timestamp()
    tick = graphql(dagster_up["port"], f"""mutation {{ scheduleDryRun(selectorData: {{repositoryLocationName:
        "platform", repositoryName: "__repository__", scheduleName: "data_pipeline_daily_schedule"}},
        timestamp: {at}) {{ ... on DryRunInstigationTick {{ evaluationResult {{ skipReason
        error {{ message }} runRequests {{ tags {{ key value }} }} }} }} ... on PythonError {{ message }} }} }}""")
    evaluation = tick["data"]["scheduleDryRun"]["evaluationResult"]
    assert evaluation["error"] is None and evaluation["skipReason"] is None, evaluation
    (request,) = evaluation["runRequests"]
    tags = {t["key"]: t["value"] for t in request["tags"]}
    assert tags["dagster/partition"] == (START + dt.timedelta(days=1)).isoformat()
    run_id = dagster_up["client"].submit_job_execution("data_pipeline_daily", tags=tags, asset_selection=SLICE_KEYS)
    status, _ = _wait(dagster_up["instance"], run_id)
    assert status == dg.DagsterRunStatus.SUCCESS
