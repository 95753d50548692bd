"""A two-step job in one pool, loaded by name in the executor's subprocesses (test_dagster_instance)."""

import os
import time

import dagster as dg

POOL = "t_pool"
MARKS_ENV = "T_POOL_MARKS"  # each step appends "name start end" to this file


def _pooled(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, pool=POOL)
    def _step() -> None:
        start = time.time()
        time.sleep(3)
        with open(os.environ[MARKS_ENV], "a") as marks:
            marks.write(f"{name} {start} {time.time()}\n")

    return _step


def pooled_job() -> dg.JobDefinition:
    defs = dg.Definitions(assets=[_pooled("first"), _pooled("second")],
                          jobs=[dg.define_asset_job("pooled", selection="*")])
    return defs.resolve_job_def("pooled")
