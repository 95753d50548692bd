"""MLflow down while a model is trained and gated, on this package's own tracking server.

What must hold: a training step that cannot reach MLflow fails with an error the retry policy
treats as transient (so IO_RETRY would retry it), no version is registered half-way, and the
``champion`` alias never moves because of the outage. The gate must not mistake an unreachable
registry for "no champion yet": that would let any challenger pass ``beats_champion``.
"""

from __future__ import annotations

import time
import uuid

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from platform_assets.policies import is_transient
from resources import build_resources

pytestmark = [pytest.mark.faults, pytest.mark.slow]
FAIL_FAST_BOUND_S = 30.0
BACK_BOUND_S = 90.0  # MLflow's server imports its whole stack on start


@pytest.fixture()
def registry(private_env, monkeypatch):
    # The client's own retries (7 by default, with exponential backoff) would hold a step for minutes.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    mlflow = build_resources(resolved=True)["mlflow"]
    name = f"faults_{uuid.uuid4().hex[:6]}"
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "y": [0, 0, 0, 1, 1, 1]})
    model = LogisticRegression().fit(frame[["x"]], frame["y"])
    mlflow._mlflow().set_experiment(mlflow.experiment_name("faults"))
    with mlflow._mlflow().start_run():
        first = mlflow.log_sklearn(model, name, frame[["x"]].head(3))
    mlflow.promote(name, first)
    return mlflow, name, model, frame, first


def test_mlflow_down_while_training_leaves_the_champion_where_it_was(registry, private_env):
    mlflow, name, model, frame, first = registry
    versions_before = len(mlflow.client().search_model_versions(f"name = '{name}'"))
    private_env.down("mlflow")
    started = time.monotonic()
    # Whatever the client raises, the retry policy must see it as transient.
    with pytest.raises(Exception) as raised, mlflow._mlflow().start_run():
        mlflow.log_sklearn(model, name, frame[["x"]].head(3))
    failed_after = time.monotonic() - started
    assert is_transient(raised.value), repr(raised.value)
    assert failed_after < FAIL_FAST_BOUND_S

    started = time.monotonic()
    private_env.up("mlflow")
    back = time.monotonic() - started
    assert str(mlflow.champion(name).version) == first  # the outage moved nothing
    assert len(mlflow.client().search_model_versions(f"name = '{name}'")) == versions_before
    print(f"\nmlflow down: training failed in {failed_after:.1f} s with {type(raised.value).__name__} (transient); "
          f"the server was back in {back:.1f} s; "
          f"champion still version {first}")
    assert back < BACK_BOUND_S


def test_the_gate_does_not_take_an_unreachable_registry_for_no_champion(registry, private_env):
    mlflow, name, *_ = registry
    private_env.down("mlflow")
    try:
        with pytest.raises(Exception) as raised:
            mlflow.champion(name)
        assert is_transient(raised.value)
    finally:
        private_env.up("mlflow")
