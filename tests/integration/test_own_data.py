"""Bring your own data: public datasets from file to registered champion, with a catalogue of their own.

scikit-learn's bundled iris (string species labels, written as a JSON array) and diabetes (a CSV with
`NA` and empty markers, slash dates in a column named `date`, a free-text column, rows sorted by the
target) each go: `python -m platform_assets.onboard` → `dagster asset materialize` in a subprocess
(raw and clean, then the model) with `PLATFORM_CATALOGUE_DIR` and nothing of the demo → a champion
in the MLflow registry. Real PostgreSQL (a warehouse database of this test's own) and MLflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from platform_assets.settings import PROJECT_ROOT, load_local_defaults
from tests.integration.conftest import _pg_admin, pg_connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAGSTER = str(Path(PROJECT_ROOT, ".venv", "bin", "dagster"))
SPECIES = ("setosa", "versicolor", "virginica")


def write_iris(path: Path) -> None:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = [data.target_names[t] for t in frame.pop("target")]
    frame.to_json(path, orient="records")  # one JSON array of records, sorted by class as shipped


def write_diabetes(path: Path) -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame.sort_values("target", kind="stable")
    frame = frame.reset_index(drop=True).rename(columns={"target": "progression"})
    rng = np.random.default_rng(7)
    frame["note"] = [f"patient {rng.integers(10**6)} seen by Dr {name}" for name in rng.choice(
        ["Adams", "Okafor", "Nguyen", "Schmidt", "Rossi"], len(frame))]  # free text, one per row
    frame["date"] = pd.date_range("2021-03-01", periods=len(frame), freq="D").strftime("%Y/%m/%d")
    frame = frame.astype(object)
    frame.loc[rng.choice(len(frame), 25, replace=False), "bmi"] = "NA"
    frame.loc[rng.choice(len(frame), 15, replace=False), "bp"] = ""
    frame.to_csv(path, index=False)
    return frame


def materialize(selection: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """`dagster asset materialize` of ``selection``, as a user types it: no run config (a catalogue without the
    demo runs in one process by default, jobs/executor.py)."""
    return run([DAGSTER, "asset", "materialize", "-m", "platform_assets.definitions", "--select", ",".join(selection)],
               env, timeout)


def run(args: list[str], env: dict, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def own_environment(root: Path, tag: str) -> dict:
    """The environment of a run on a catalogue folder of one's own under ``root``, nothing of the demo:
    a warehouse database (created here), lake, file store, Dagster home and MLflow prefixes of its own."""
    load_local_defaults()
    suffix = uuid.uuid4().hex[:8]
    prefix = f"{tag}{suffix[:6]}_"
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "PLATFORM_CATALOGUE_DIR": str(root / "catalogue"), "WAREHOUSE_DB": f"{tag}_own_{suffix}",
           "LAKE_ROOT": str(root / "lake"), "SOURCE_FILES_ROOT": str(root / "files"), "DAGSTER_HOME": str(home),
           "MLFLOW_REGISTRY_PREFIX": prefix, "MLFLOW_EXPERIMENT_PREFIX": f"{tag}-{prefix}"}
    for key in ("PLATFORM_SOURCES_FILE", "PLATFORM_STREAMS_FILE", "PLATFORM_MODELS_FILE"):
        env.pop(key, None)
    _pg_admin(f'CREATE DATABASE "{env["WAREHOUSE_DB"]}"')
    return env


def drop_own_environment(env: dict) -> None:
    """Remove what ``own_environment`` made: its registered models and its warehouse database."""
    from resources.mlflow_tracking import MlflowResource

    client = MlflowResource(tracking_uri=env["MLFLOW_TRACKING_URI"]).client()
    for m in client.search_registered_models(filter_string=f"name LIKE '{env['MLFLOW_REGISTRY_PREFIX']}%'"):
        client.delete_registered_model(m.name)
    _pg_admin(f'DROP DATABASE IF EXISTS "{env["WAREHOUSE_DB"]}" WITH (FORCE)')


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Onboard both files into one catalogue folder; materialise sources, then models, via the CLI."""
    root = tmp_path_factory.mktemp("own_data")
    env = own_environment(root, "t")
    prefix = env["MLFLOW_REGISTRY_PREFIX"]
    write_iris(root / "iris.json")
    diabetes = write_diabetes(root / "diabetes.csv")
    steps = {}
    try:
        for file, name, target in (("iris.json", "iris", "species"), ("diabetes.csv", "diabetes", "progression")):
            steps[f"onboard {name}"] = run([sys.executable, "-m", "platform_assets.onboard", str(root / file),
                                            "--name", name, "--target", target, "--out", env["PLATFORM_CATALOGUE_DIR"]],
                                           env)
            assert steps[f"onboard {name}"].returncode == 0, steps[f"onboard {name}"].stderr[-3000:]
        steps["sources"] = materialize([f"{zone}/{name}" for name in ("iris", "diabetes")
                                        for zone in ("lake/raw", "lake/clean", "warehouse/quarantine")], env)
        models = {"iris": "iris_species", "diabetes": "diabetes_progression"}
        algorithms = {"iris_species": ("random_forest", "gradient_boosting", "logistic_regression"),
                      "diabetes_progression": ("random_forest", "gradient_boosting", "linear_regression")}
        steps["models"] = materialize([f"lake/features/{n}" for n in models]
                                      + [f"ml/candidates/{m}/{a}" for m, algos in algorithms.items() for a in algos]
                                      + [f"ml/{stage}/{m}" for m in algorithms for stage in ("challenger", "champion")],
                                      env)
        yield {"root": root, "env": env, "steps": steps, "prefix": prefix, "diabetes": diabetes}
    finally:
        drop_own_environment(env)


def _quarantined(env: dict, table: str) -> int:
    conn = pg_connect(env["WAREHOUSE_DB"])
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM quarantine."{table}"')
            return cur.fetchone()[0]
    finally:
        conn.close()


def _champion(own, model: str):
    from resources.mlflow_tracking import MlflowResource

    mlflow = MlflowResource(tracking_uri=own["env"]["MLFLOW_TRACKING_URI"], registry_prefix=own["prefix"])
    registered = mlflow.registered_name(model)
    champion = mlflow.champion(registered)
    return registered, champion, mlflow


def test_sources_load_every_good_row_without_the_demo(own):
    step = own["steps"]["sources"]
    assert step.returncode == 0, step.stderr[-4000:]
    lake = own["root"] / "lake" / "clean"
    iris = pd.read_parquet(lake / "iris")
    assert len(iris) == 150 and set(iris["species"]) == set(SPECIES)
    diabetes = pd.read_parquet(lake / "diabetes")
    # NA and empty markers are missing values, not broken rows; slash dates are dates.
    assert len(diabetes) == 442
    assert int(diabetes["bmi"].isna().sum()) == 25 and int(diabetes["bp"].isna().sum()) == 15
    assert str(diabetes["date"].iloc[0]) == "2021-03-01"
    assert _quarantined(own["env"], "iris") == 0 and _quarantined(own["env"], "diabetes") == 0
    assert not (own["root"] / "lake" / "clean" / "sensor_readings").exists()


def test_iris_string_labels_train_and_register_a_champion(own):
    step = own["steps"]["models"]
    registered, champion, mlflow = _champion(own, "iris_species")
    assert champion is not None, f"no champion for {registered}:\n" + step.stderr[-4000:]
    model = mlflow.load(registered, champion.version)
    sample = pd.read_parquet(own["root"] / "lake" / "clean" / "iris").iloc[::25]
    predicted = model.predict(sample[list(model.feature_names_in_)])
    assert set(predicted) <= set(SPECIES), predicted  # the original labels, not codes
    assert (predicted == sample["species"].to_numpy()).mean() >= 0.8


def test_diabetes_sorted_by_target_with_free_text_trains_a_champion(own):
    step = own["steps"]["models"]
    registered, champion, _ = _champion(own, "diabetes_progression")
    assert champion is not None, f"no champion for {registered}:\n" + step.stderr[-4000:]
    assert step.returncode == 0, step.stderr[-4000:]
