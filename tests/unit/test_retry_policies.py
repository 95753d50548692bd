"""Retries only for what can succeed on retry (platform_assets/policies.py).

Each class of error is built as its client library raises it; the Dagster tests run a real step
with the platform's retry policy and count the attempts.
"""

import datetime as dt

import confluent_kafka
import dagster as dg
import psycopg2
import pydantic
import pymysql
import pytest
import redis
import requests
from dagster._check import CheckError
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from platform_assets.ml.training import TrainingInputError
from platform_assets.policies import (
    IO_RETRY,
    PARTITIONS_NAMED_EXECUTOR,
    is_transient,
    missing_partitions,
    retry_only_transient,
)
from platform_assets.sources.config import CatalogueError
from platform_assets.sources.contract import ContractError


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} for url: http://api/x", response=response)


def _pydantic_error() -> pydantic.ValidationError:
    class Settings(pydantic.BaseModel):
        port: int

    try:
        Settings(port="not a port")
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("pydantic accepted a bad port")


TRANSIENT = {
    "socket connection refused": ConnectionRefusedError(111, "Connection refused"),
    "timeout": TimeoutError("timed out"),
    "requests connection": requests.ConnectionError("Max retries exceeded"),
    "requests timeout": requests.Timeout("read timed out"),
    "HTTP 503": _http_error(503),
    "HTTP 429": _http_error(429),
    "PostgreSQL connection lost": psycopg2.OperationalError("server closed the connection unexpectedly"),
    "MariaDB gone away": pymysql.err.OperationalError(2006, "MySQL server has gone away"),
    "MariaDB cannot connect": pymysql.err.OperationalError(2003, "Can't connect to MySQL server"),
    "Kafka transport": confluent_kafka.KafkaException(confluent_kafka.KafkaError(confluent_kafka.KafkaError._TRANSPORT)),
    "Kafka brokers down": confluent_kafka.KafkaException(
        confluent_kafka.KafkaError(confluent_kafka.KafkaError._ALL_BROKERS_DOWN)),
    "Redis connection": redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:26379"),
    "Redis timeout": redis.exceptions.TimeoutError("Timeout reading from socket"),
    "MLflow 503": MlflowException("tracking server unavailable", error_code=TEMPORARILY_UNAVAILABLE),
    "MLflow request failed": MlflowException("API request to http://127.0.0.1:25000 failed with exception "
                                             "ConnectionError"),  # the client's own message, INTERNAL_ERROR (500)
}

PERMANENT = {
    "catalogue": CatalogueError("sources.yaml: sources.x.kind: unknown kind 'ftp'"),
    "training input": TrainingInputError("model m: target has one class"),
    "contract": ContractError("source x: column y missing"),
    "pydantic": _pydantic_error(),
    "missing config key": KeyError("WAREHOUSE_HOST"),
    "HTTP 404": _http_error(404),
    "HTTP 400": _http_error(400),
    "PostgreSQL bad password": psycopg2.OperationalError('FATAL:  password authentication failed for user "x"'),
    "PostgreSQL no such database": psycopg2.OperationalError('FATAL:  database "nope" does not exist'),
    "PostgreSQL syntax": psycopg2.ProgrammingError("syntax error at or near SELEC"),
    "MariaDB access denied": pymysql.err.OperationalError(1045, "Access denied for user"),
    "Kafka invalid argument": confluent_kafka.KafkaException(
        confluent_kafka.KafkaError(confluent_kafka.KafkaError._INVALID_ARG)),
    "Redis authentication": redis.exceptions.AuthenticationError("invalid username-password pair"),
    "MLflow bad parameter": MlflowException("bad alias", error_code=INVALID_PARAMETER_VALUE),
    "MLflow not found": MlflowException("model x not found", error_code=RESOURCE_DOES_NOT_EXIST),
    "Dagster CheckError": CheckError("Has a PartitionsDefinition, so should either have a partition key or a "
                                     "partition key range"),
    "Dagster invariant": dg.DagsterInvariantViolationError("asset key collision"),
    "Dagster config": dg.DagsterInvalidConfigError("bad run config", [], None),
    "Failure without retries": dg.Failure("checked and refused", allow_retries=False),
    "a plain bug": ZeroDivisionError("division by zero"),
    "file not found": FileNotFoundError(2, "No such file or directory"),
}


@pytest.mark.parametrize("name", TRANSIENT)
def test_transient_errors_are_retried(name):
    assert is_transient(TRANSIENT[name])


@pytest.mark.parametrize("name", PERMANENT)
def test_permanent_errors_are_not_retried(name):
    assert not is_transient(PERMANENT[name])


def test_a_wrapper_raised_from_a_transient_cause_is_retried():
    try:
        try:
            raise psycopg2.OperationalError("could not connect to server: Connection refused")
        except psycopg2.OperationalError as cause:
            raise RuntimeError("warehouse load failed") from cause
    except RuntimeError as wrapper:
        assert is_transient(wrapper)


def test_a_dagster_invariant_stays_permanent_whatever_its_cause():
    error = dg.DagsterInvariantViolationError("bad definition")
    error.__cause__ = ConnectionError("irrelevant")
    assert not is_transient(error)


# -- through Dagster: attempts counted on a real step with the platform's policy ------------------
def _flaky_asset(errors: list[Exception], attempts: list[int]):
    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=IO_RETRY.max_retries))  # IO_RETRY's count, no delay
    @retry_only_transient
    def flaky(context: dg.AssetExecutionContext) -> int:
        attempts.append(context.retry_number)
        if errors:
            raise errors.pop(0)
        return 1

    return flaky


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1
    return failures[0].step_failure_data.error.message


def test_transient_errors_are_retried_until_the_step_succeeds():
    attempts: list[int] = []
    result = dg.materialize([_flaky_asset([requests.ConnectionError("reset"), TimeoutError("slow")], attempts)])
    assert result.success
    assert attempts == [0, 1, 2]


def test_permanent_error_fails_at_once_with_its_message():
    attempts: list[int] = []
    result = dg.materialize([_flaky_asset([ContractError("source x: column y missing")], attempts)],
                            raise_on_error=False)
    assert not result.success
    assert attempts == [0]
    assert "ContractError: source x: column y missing" in _failure_message(result)
    assert "not retried" in _failure_message(result)


def test_transient_errors_stop_after_the_policy_s_retries():
    attempts: list[int] = []
    result = dg.materialize([_flaky_asset([ConnectionResetError("reset")] * 10, attempts)], raise_on_error=False)
    assert not result.success
    assert attempts == [0, 1, 2, 3]


def test_generator_bodies_keep_yielding_and_fail_fast():
    attempts: list[int] = []

    @dg.multi_asset(outs={"a": dg.AssetOut(), "b": dg.AssetOut()}, retry_policy=dg.RetryPolicy(max_retries=3))
    @retry_only_transient
    def pair(context: dg.AssetExecutionContext):
        attempts.append(context.retry_number)
        yield dg.Output(1, output_name="a")
        raise KeyError("b_source")

    result = dg.materialize([pair], raise_on_error=False)
    assert attempts == [0]
    assert "KeyError: 'b_source'" in _failure_message(result)


def test_a_partitioned_step_without_a_partition_says_how_to_name_one():
    attempts: list[int] = []

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-11-01"),
              retry_policy=dg.RetryPolicy(max_retries=3))
    @retry_only_transient
    def daily(context: dg.AssetExecutionContext) -> None:
        attempts.append(context.retry_number)
        context.partition_time_window  # noqa: B018 (the access that raises without a partition)

    result = dg.materialize([daily], raise_on_error=False)
    assert attempts == [0]
    message = _failure_message(result)
    assert "dagster/partition" in message and "--partition" in message


def test_runs_must_name_a_partition_or_a_whole_range():
    assert missing_partitions("data_pipeline", {}, partitioned=True).startswith("data_pipeline: ")
    assert missing_partitions("data_pipeline", {"dagster/asset_partition_range_start": "2026-11-01"}, True)
    assert missing_partitions("data_pipeline", {"dagster/partition": "2026-11-01"}, True) is None
    assert missing_partitions("data_pipeline", {"dagster/asset_partition_range_start": "2026-11-01",
                                                "dagster/asset_partition_range_end": "2026-11-02"}, True) is None
    assert missing_partitions("ml_pipeline", {}, partitioned=False) is None
    assert dt.date.fromisoformat("2026-11-01")  # the example date in the hint is a valid day


def test_decorated_bodies_keep_their_inputs_and_checks():
    """As on the batch assets: an input by name, a blocking check yielded beside the output."""

    @dg.asset
    def upstream() -> int:
        return 2

    @dg.multi_asset(outs={"doubled": dg.AssetOut()}, retry_policy=IO_RETRY,
                    check_specs=[dg.AssetCheckSpec("positive", asset="doubled", blocking=True)])
    @retry_only_transient
    def doubled(upstream: int):
        yield dg.Output(upstream * 2, output_name="doubled")
        yield dg.AssetCheckResult(check_name="positive", asset_key="doubled", passed=upstream > 0)

    result = dg.materialize([upstream, doubled])
    assert result.success
    assert result.output_for_node("doubled", "doubled") == 4
    assert result.get_asset_check_evaluations()[0].passed


# -- the executor's check, run for real (execute_job, not execute_in_process, which swaps the executor)
DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01", end_date="2026-11-03")


@dg.asset(partitions_def=DAILY)
def daily_slice(context: dg.AssetExecutionContext) -> None:
    context.log.info(str(context.partition_key_range))


def daily_job() -> dg.JobDefinition:
    return dg.Definitions(assets=[daily_slice], jobs=[dg.define_asset_job(
        "daily_job", executor_def=PARTITIONS_NAMED_EXECUTOR)]).resolve_job_def("daily_job")


def _run(tmp_path, tags: dict) -> tuple[bool, list, list]:
    """Success, run-failure events and step starts of one real run."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.execute_job(dg.reconstructable(daily_job), instance=instance, tags=tags, raise_on_error=False,
                                run_config={"execution": {"config": {"in_process": {}}}})  # the same executor, one process
        failure = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
        steps = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
        return result.success, failure, steps


def test_a_run_without_partition_fails_before_any_step_and_is_recorded_with_the_hint(tmp_path):
    from jobs.ml import _run_error

    success, failure, steps = _run(tmp_path, {})
    assert not success and not steps
    message = _run_error(failure[0])
    assert "daily_job" in message and "dagster/partition" in message and "--partition" in message


def test_a_run_with_a_partition_or_a_range_runs(tmp_path):
    assert _run(tmp_path / "one", {"dagster/partition": "2026-11-01"})[0]
    assert _run(tmp_path / "range", {"dagster/asset_partition_range_start": "2026-11-01",
                                     "dagster/asset_partition_range_end": "2026-11-02"})[0]


class Source(dg.ConfigurableResource):
    """A resource passed by annotation, as the batch assets take the engine and the lake."""

    rows: int = 3


def test_decorated_bodies_keep_resources_passed_by_annotation():
    @dg.asset(retry_policy=IO_RETRY)
    @retry_only_transient
    def counted(context: dg.AssetExecutionContext, source: Source) -> int:
        return source.rows

    result = dg.materialize([counted], resources={"source": Source(rows=5)})
    assert result.success and result.output_for_node("counted") == 5


# -- how long an outage the retries ride out ---------------------------------------------------------
def _delays(policy: dg.RetryPolicy, jitter: float, monkeypatch) -> list[float]:
    """The policy's delays before each retry, with Dagster's own formula and the jitter's random
    draw fixed at ``jitter`` (0: shortest waits, 1: longest)."""
    import dagster._core.definitions.policy as dagster_policy

    monkeypatch.setattr(dagster_policy, "random", lambda: jitter)
    return [policy.calculate_delay(n) for n in range(1, policy.max_retries + 1)]


def test_io_retries_ride_out_a_server_restart_whatever_the_jitter(monkeypatch):
    from platform_assets.policies import IO_OUTAGE_COVERED_S

    shortest, longest = _delays(IO_RETRY, 0.0, monkeypatch), _delays(IO_RETRY, 1.0, monkeypatch)
    assert sum(shortest) == IO_OUTAGE_COVERED_S >= 20  # a restart of PostgreSQL, Kafka or MLflow
    assert shortest[0] >= 0 and longest[0] <= 6  # a blip is retried within seconds
    assert sum(longest) <= 60  # a real outage still fails the step within a minute
    assert shortest == sorted(set(shortest))  # backs off: each wait longer than the last


def test_the_previous_policy_could_spend_its_retries_before_a_restart_was_over(monkeypatch):
    """Why IO_RETRY changed: with linear backoff and full jitter, three retries could all come within
    a fraction of a second (tests/faults/test_service_restarts.py restarts PostgreSQL mid-load)."""
    old = dg.RetryPolicy(max_retries=3, delay=1, backoff=dg.Backoff.LINEAR, jitter=dg.Jitter.FULL)
    assert sum(_delays(old, 0.1, monkeypatch)) < 1.5


# -- warehouse loads: errors raised by an IO manager, not by the body ------------------------------------
class _FlakyLoads(dg.ConfigurableIOManager):
    """An IO manager whose writes fail as the test says, inside ``only_transient_retried``."""

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        from platform_assets.policies import only_transient_retried

        _LOADS.append(context.step_context.previous_attempt_count if context.step_context else -1)
        with only_transient_retried():
            if _LOAD_ERRORS:
                raise _LOAD_ERRORS.pop(0)

    def load_input(self, context: dg.InputContext):
        return None


_LOADS: list[int] = []
_LOAD_ERRORS: list[Exception] = []


def _load(errors: list[Exception]) -> dg.ExecuteInProcessResult:
    _LOADS.clear()
    _LOAD_ERRORS[:] = errors

    @dg.asset(io_manager_key="loads", retry_policy=dg.RetryPolicy(max_retries=IO_RETRY.max_retries))
    def table() -> int:
        return 1

    return dg.materialize([table], resources={"loads": _FlakyLoads()}, raise_on_error=False)


def test_a_warehouse_load_that_loses_its_connection_is_retried():
    result = _load([psycopg2.OperationalError("server closed the connection unexpectedly")])
    assert result.success and len(_LOADS) == 2


def test_a_warehouse_load_with_a_bad_type_fails_at_once():
    result = _load([psycopg2.errors.InvalidTextRepresentation('invalid input syntax for type integer: "x"')])
    assert not result.success and len(_LOADS) == 1
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "invalid input syntax" in failure.event_specific_data.error.to_string()
