"""Execution policies applied across assets, defined once.

Retries: Dagster's ``RetryPolicy`` retries every exception a step raises; it has no predicate. A retry
only helps when the cause is outside the code and may go away (a dropped connection, a timeout, a
server-side 5xx). ``retry_only_transient`` wraps an asset body so that any other error (a contract
violation, a configuration error, a Dagster invariant) becomes ``dg.Failure(allow_retries=False)``:
the step fails at once with the error's message instead of after minutes of backoff.

Partitions: a run of a partitioned job that names no partition cannot do anything right. The
``PARTITIONS_NAMED_EXECUTOR`` checks the run's tags before any step starts and fails the run at once
with a message that says how to name them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping

import dagster as dg
from dagster._core.definitions.executor_definition import multi_or_in_process_executor
from dagster._core.executor.base import Executor
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

# Sources and the warehouse are remote systems: a blip should not fail a run. Attach together with
# `retry_only_transient` on the body, so that only transient errors use these retries (a contract or
# configuration error fails at once, so a long backoff costs nothing there). Delays (Dagster's
# formula): (2^n - 1) x 3 s +/- 3 s, so 0-6 s, 6-12 s, 18-24 s: the retries ride out an outage of at
# least 24 s (a server restart, a broker or MLflow restart, measured in tests/faults) and at most 42 s.
# The previous LINEAR/FULL jitter policy could spend its three retries within 1.5 s (random x 1, 2,
# 3 s), about 1 time in 10, before a restarted PostgreSQL answered.
IO_RETRY = dg.RetryPolicy(max_retries=3, delay=3, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
IO_OUTAGE_COVERED_S = 24.0  # the shortest total wait of IO_RETRY's three retries (jitter at its minimum)

# Partitioned assets process a whole backfill range in one run (one Spark session, one transaction
# per table) instead of one run per day.
SINGLE_RUN_BACKFILL = dg.BackfillPolicy.single_run()

# Concurrency pools (Dagster pools): steps that share a scarce engine claim a slot in its pool.
# Limits are instance settings (deploy/local/dagster.yaml, deploy/helm values), not code.
SPARK_POOL = "spark"  # one Spark application per pool slot: a laptop or a small cluster runs one at a time
TRAINING_POOL = "training"  # model fits are CPU-bound; cap how many run side by side


# -- which errors a retry can fix -------------------------------------------------------------------
_RETRYABLE_HTTP = {408, 425, 429}  # timeout, too early, rate-limited: the same request may succeed later
# MySQL / MariaDB: too many connections, lock wait timeout, deadlock, cannot connect, gone away, lost.
_MYSQL_TRANSIENT = {1040, 1205, 1213, 2002, 2003, 2006, 2013, 2055}
_OS_TRANSIENT = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                 errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE, errno.EAGAIN}


def _cls(module: str, name: str) -> type | None:
    """A library's exception class, only if the library is already loaded (an instance of it cannot
    exist otherwise), so this module imports no heavy client at definition load."""
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod else None


def _isinstance(exc: BaseException, module: str, name: str) -> bool:
    cls = _cls(module, name)
    return cls is not None and isinstance(exc, cls)


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None) or getattr(exc, "code", None)
    return status if isinstance(status, int) else None


def _never_retry(exc: BaseException) -> bool:
    """Errors that say the code, its configuration or its input is wrong: the same again fails again."""
    if isinstance(exc, dg.Failure):
        return not exc.allow_retries
    return (isinstance(exc, dg.DagsterError)  # DagsterInvariantViolationError, DagsterInvalidConfigError, ...
            or _isinstance(exc, "dagster_shared.check.functions", "CheckError")
            or _isinstance(exc, "redis.exceptions", "AuthenticationError")
            or _isinstance(exc, "pydantic_core._pydantic_core", "ValidationError"))


def _transient_here(exc: BaseException) -> bool:
    """This exception alone (not its causes) is one that a later attempt may not meet."""
    if _isinstance(exc, "requests.exceptions", "HTTPError") or _isinstance(exc, "urllib.error", "HTTPError"):
        status = _http_status(exc)
        return status is not None and (status >= 500 or status in _RETRYABLE_HTTP)
    if (_isinstance(exc, "requests.exceptions", "ConnectionError") or _isinstance(exc, "requests.exceptions", "Timeout")
            or _isinstance(exc, "urllib.error", "URLError")):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):  # builtins, incl. socket.timeout, BrokenPipeError
        return True
    if isinstance(exc, OSError) and exc.errno in _OS_TRANSIENT:
        return True
    if _isinstance(exc, "psycopg2", "OperationalError"):
        # Lost or refused connections, admin shutdown, serialization failures, deadlocks; not a bad
        # password or a database that does not exist (also OperationalError in libpq).
        text = str(exc).lower()
        code = getattr(exc, "pgcode", None) or ""
        return not (code.startswith(("28", "3D")) or "authentication failed" in text or "does not exist" in text)
    if _isinstance(exc, "pymysql.err", "OperationalError") or _isinstance(exc, "pymysql.err", "InterfaceError"):
        return not exc.args or not isinstance(exc.args[0], int) or exc.args[0] in _MYSQL_TRANSIENT or exc.args[0] == 0
    if _isinstance(exc, "redis.exceptions", "ConnectionError") or _isinstance(exc, "redis.exceptions", "TimeoutError"):
        return True
    if _isinstance(exc, "confluent_kafka", "KafkaException"):
        error = exc.args[0] if exc.args else None
        kafka_error = _cls("confluent_kafka", "KafkaError")
        if kafka_error is None or not isinstance(error, kafka_error):
            return False
        return error.retriable() or error.code() in {kafka_error._TRANSPORT, kafka_error._ALL_BROKERS_DOWN,
                                                     kafka_error._TIMED_OUT, kafka_error.REQUEST_TIMED_OUT}
    if _isinstance(exc, "mlflow.exceptions", "MlflowException"):
        # The tracking server's 5xx (and the client's "API request ... failed" after its own retries).
        return exc.get_http_status_code() >= 500 or exc.get_http_status_code() in _RETRYABLE_HTTP
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError carries the driver's error
    return isinstance(orig, BaseException) and orig is not exc and _transient_here(orig)


def is_transient(exc: BaseException) -> bool:
    """True when a retry of the same step may succeed: a transient error raised directly or as the
    cause of a wrapper (``raise RuntimeError(...) from ConnectionError``); False for anything else."""
    if _never_retry(exc):
        return False
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if _transient_here(link):
            return True
        link = link.__cause__ or link.__context__
    return False


# -- a run of a partitioned job must name its partitions --------------------------------------------
PARTITION_HINT = (
    "a partitioned asset ran without a partition. Name one day or a range: "
    "`dagster job launch -j {job} --tags '{{\"dagster/partition\": \"2026-11-01\"}}'` or, for a range in one run, "
    "--tags '{{\"dagster/asset_partition_range_start\": \"2026-11-01\", "
    "\"dagster/asset_partition_range_end\": \"2026-11-07\"}}'; "
    "`dagster asset materialize --partition 2026-11-01` or `--partition-range 2026-11-01...2026-11-07`; "
    "GraphQL `submit_job_execution(\"{job}\", tags={{\"dagster/partition\": \"2026-11-01\"}})` "
    "(executionParams.executionMetadata.tags); in the UI, pick partitions in the launchpad or "
    "\"Materialize all\" dialog (a range runs as one backfill run)."
)


def partition_hint(job: str) -> str:
    return PARTITION_HINT.format(job=job)


def _missing_partition(exc: BaseException) -> bool:
    return _isinstance(exc, "dagster_shared.check.functions", "CheckError") and "partition key" in str(exc)


def _fail_fast(exc: Exception, job: str) -> dg.Failure:
    if _missing_partition(exc):
        return dg.Failure(f"{job}: {partition_hint(job)}", allow_retries=False)
    return dg.Failure(f"{type(exc).__name__}: {exc} (not retried: a retry cannot fix this error)",
                      allow_retries=False)


def _job_name() -> str:
    try:
        return dg.AssetExecutionContext.get().job_name
    except dg.DagsterError:  # called outside a run (a unit test calling the body directly)
        return "this job"


def retry_only_transient(fn: Callable) -> Callable:
    """Decorate an asset body (under ``@dg.asset``/``@dg.multi_asset``) whose ``retry_policy`` is set:
    transient errors are raised as they are (the policy retries them), others as a non-retryable
    ``dg.Failure`` with the original message, chained to the original exception.

    The wrapper keeps the body's signature (``functools.wraps``), so Dagster sees the same context,
    inputs and resources; a generator body stays a generator.
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs) -> Iterator:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                if is_transient(exc):
                    raise
                raise _fail_fast(exc, _job_name()) from exc
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_transient(exc):
                raise
            raise _fail_fast(exc, _job_name()) from exc
    return wrapper


@contextlib.contextmanager
def only_transient_retried() -> Iterator[None]:
    """``retry_only_transient`` for code that is not an asset body: an IO manager's ``handle_output``
    or ``load_input`` (a warehouse load). The step's retry policy covers them too, and Dagster honours
    ``dg.Failure(allow_retries=False)`` raised there, so a bad table or type fails at once."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise
        raise _fail_fast(exc, _job_name()) from exc


def missing_partitions(job: str, tags: Mapping[str, str], partitioned: bool) -> str | None:
    """The message for a run that executes partitioned assets without naming a partition, else None."""
    if not partitioned or PARTITION_NAME_TAG in tags or (
            ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags):
        return None
    return f"{job}: {partition_hint(job)}"


class _PartitionsNamed(Executor):
    """Delegates to Dagster's default executor after checking that the run names its partitions."""

    def __init__(self, inner: Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        job_def = plan_context.job.get_definition()
        nodes = [job_def.asset_layer.get_assets_def_for_node(step.node_handle)
                 for step in execution_plan.get_steps_to_execute_in_topo_order()]
        partitioned = any(node is not None and node.partitions_def is not None for node in nodes)
        problem = missing_partitions(job_def.name, plan_context.dagster_run.tags, partitioned)
        if problem:
            raise dg.DagsterInvalidConfigError(problem, [], None)
        yield from self._inner.execute(plan_context, execution_plan)


def _partitions_named(init_context) -> Executor:
    return _PartitionsNamed(multi_or_in_process_executor.executor_creation_fn(init_context))


# Dagster's default executor (multiprocess unless configured in-process, same config) that refuses,
# before any step starts, a run of partitioned assets that names no partition or range.
PARTITIONS_NAMED_EXECUTOR = dg.ExecutorDefinition(
    name="multi_or_in_process_partitions_named",
    config_schema=multi_or_in_process_executor.config_schema,
    requirements=multi_or_in_process_executor._requirements_fn,  # the default's own requirements
    executor_creation_fn=_partitions_named,
    description="The default executor; a run of partitioned assets must name its partition or range.",
)
