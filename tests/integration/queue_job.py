"""A one-step job for the run-queue test (test_dagster_instance): launched by the CLI in a code server."""

import dagster as dg


@dg.op
def noop() -> None:
    """Nothing: the test is about how the run is launched, not what it does."""


@dg.job
def quick():
    noop()


defs = dg.Definitions(jobs=[quick])
