"""Which executor runs a job's steps by default: ``PLATFORM_EXECUTOR``, resolved here and nowhere else.

Dagster's default executor starts one process per step, and each loads the code location again: for a
small catalogue that is most of a run (two small sources: 49 s multiprocess, 17 s in one process,
README "Small data"). So:

- ``in_process``: every step in the run's process, one after another;
- ``multiprocess``: a process per step, steps in parallel (Dagster's default);
- ``auto`` (unset or empty): in-process on the embedded engine (``PROCESSING_ENGINE=duckdb``, the
  local default) and for a catalogue of one's own (``PLATFORM_CATALOGUE_DIR`` folders made by
  ``python -m platform_assets.onboard``); multiprocess for the demo's catalogue on Spark, whose
  marts and models then run side by side. On the embedded engine a step's own work is seconds while
  a step process costs about 3 s of imports: the demo week's data_pipeline takes about 5 s in one
  process (tests/benchmarks/bench_batch.py) and far longer as 19 step processes.

It applies to every job without an executor of its own (the CLI's and the UI's asset runs,
ml_pipeline) and to data_pipeline (whose executor also checks that a run names its partitions);
stream jobs stay in-process. Either way it is only the *default* of the run config: one run can
still choose, with ``--config-json '{"execution": {"config": {"multiprocess": {}}}}'`` (or
``in_process``) or in the launchpad.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster._core.definitions.executor_definition import multi_or_in_process_executor

from platform_assets.settings import load_local_defaults

SETTING = "PLATFORM_EXECUTOR"
KINDS = ("in_process", "multiprocess")


def executor_kind(own_catalogue: bool, environ=None) -> str:
    """``in_process`` or ``multiprocess`` for this environment; an error naming the setting otherwise."""
    if environ is None:
        load_local_defaults()
        environ = os.environ
    value = environ.get(SETTING, "").strip().lower() or "auto"
    if value == "auto":
        embedded = environ.get("PROCESSING_ENGINE", "duckdb").strip().lower() != "spark"
        return "in_process" if own_catalogue or embedded else "multiprocess"
    if value not in KINDS:
        raise ValueError(f"{SETTING}={environ.get(SETTING)!r}: use in_process, multiprocess or auto (the default: "
                         f"in_process on the embedded engine or for a catalogue of your own, multiprocess for the demo on Spark)")
    return value


def with_default(executor: dg.ExecutorDefinition, kind: str) -> dg.ExecutorDefinition:
    """``executor`` (configured as Dagster's multi-or-in-process one: same selector, same requirements),
    its run config defaulting to ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"executor kind must be one of {KINDS}, got {kind!r}")
    selector = executor.config_schema.config_type  # {multiprocess: ..., in_process: ...}
    return dg.ExecutorDefinition(
        name=executor.name,
        config_schema=dg.Field(selector, default_value={kind: {}}),
        requirements=executor._requirements_fn,
        executor_creation_fn=executor.executor_creation_fn,
        description=f"{executor.description or executor.name} Default: {kind} ({SETTING}).",
    )


def default_executor(kind: str) -> dg.ExecutorDefinition:
    """Dagster's own multi-or-in-process executor defaulting to ``kind``."""
    return with_default(multi_or_in_process_executor, kind)
