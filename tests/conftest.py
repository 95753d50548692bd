"""Settings shared by every test: local engines bind to 127.0.0.1, no telemetry."""

import os
import tempfile

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
# BentoML reads its home when first imported: a store of the test session's own.
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="bentoml-test-"))

import pytest

LOCAL_SPARK = {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"}


@pytest.fixture(scope="session")
def spark():
    """One local Spark session per test process (a session costs several seconds to start)."""
    from resources.spark import SparkResource

    session = SparkResource(**LOCAL_SPARK).session
    session.sparkContext.setLogLevel("ERROR")
    yield session


@pytest.fixture(params=["duckdb", pytest.param("spark", marks=pytest.mark.slow)])
def engine(request):
    """Each processing engine in turn (the Spark one on the session's local Spark); its DuckDB
    tables are dropped after the test."""
    from resources.engine import ProcessingEngine
    from resources.spark import SparkResource

    if request.param == "spark":
        request.getfixturevalue("spark")
    engine = ProcessingEngine(kind=request.param, spark=SparkResource(**LOCAL_SPARK))
    yield engine
    engine.release()
