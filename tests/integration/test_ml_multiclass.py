"""Multiclass string labels from a CSV file to a served champion, and the gate that stops a collapsed model.

Iris (scikit-learn's bundled copy) is written as a CSV sorted by species, with a date column and a
free-text column, declared as a source and a table feature set in configuration only. It trains on
the real MLflow server (auto split: a stratified shuffle, since the set has no time column),
registers a champion under a prefix without a separator of its own (``it1234`` → ``it1234.<model>``),
is imported into BentoML by the packaging asset and answered by the prediction service's
ModelSlot with the original string labels. A second source whose relation flips in its newest rows
shows the ``test_not_collapsed`` gate blocking a champion that validation alone would promote.
"""

from __future__ import annotations

import datetime as dt
import uuid

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from platform_assets.ml.assets import candidate_key, challenger_key, champion_key
from tests.integration.pipeline import check_results, metadata, run_ml

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SPECIES = ["setosa", "versicolor", "virginica"]
ALGORITHMS = ("random_forest", "gradient_boosting", "logistic_regression")


def _iris(tmp) -> pd.DataFrame:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = data.target_names[frame.pop("target")]
    frame.insert(0, "sample_id", np.arange(len(frame)))
    frame["measured_on"] = [(dt.date(2024, 3, 1) + dt.timedelta(days=i % 40)).isoformat() for i in range(len(frame))]
    frame["observer_note"] = [f"note {i} by someone" for i in range(len(frame))]  # free text: dropped by rule
    return frame.sort_values("species", kind="stable")


def _drift(tmp) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 300
    x = rng.normal(size=n)
    y = np.where(np.arange(n) < 240, 2 * x, -2 * x) + rng.normal(0, 0.1, n)  # the newest fifth flips
    return pd.DataFrame({"obs_id": np.arange(n), "date": [(dt.date(2024, 1, 1) + dt.timedelta(days=i)).isoformat()
                                                          for i in range(n)], "x": x, "y": y})


def _contract(frame: pd.DataFrame, types: dict) -> str:
    return "\n".join(f"        {c}: {{type: {types.get(c, 'float')}, required: true}}" for c in frame.columns)


@pytest.fixture(scope="module")
def env(platform, tmp_path_factory, monkeypatch_module):
    """Catalogues of this module's own (the demo's sources plus two files), and a registry prefix."""
    from platform_assets.definitions import build_definitions
    from platform_assets.settings import PROJECT_ROOT
    from resources import build_resources

    tmp = tmp_path_factory.mktemp("multiclass")
    tag = uuid.uuid4().hex[:6]
    model, drift = f"iris_{tag}", f"drift_{tag}"
    iris, flips = _iris(tmp), _drift(tmp)
    iris.to_csv(tmp / "iris.csv", index=False)
    flips.to_csv(tmp / "drift.csv", index=False)
    sources = tmp / "sources.yaml"
    sources.write_text((PROJECT_ROOT / "platform_assets" / "sources.yaml").read_text() + f"""
  iris_{tag}:
    kind: csv
    path: {tmp}/iris.csv
    contract:
      primary_key: [sample_id]
      columns:
{_contract(iris, {"sample_id": "int", "species": "string", "measured_on": "date", "observer_note": "string"})}
  drift_{tag}:
    kind: csv
    path: {tmp}/drift.csv
    contract:
      primary_key: [obs_id]
      columns:
{_contract(flips, {"obs_id": "int", "date": "date"})}
""")
    models = tmp / "models.yaml"
    models.write_text(f"""
feature_sets:
  iris_{tag}: {{table: lake/clean/iris_{tag}, entity: sample_id}}
  drift_{tag}: {{table: lake/clean/drift_{tag}, entity: obs_id, time: date}}
models:
  {model}:
    task: classification
    feature_set: iris_{tag}
    target: species
    algorithms: [{", ".join(ALGORITHMS)}]
    selection_metric: f1_macro
    floor: 0.8
  {drift}:
    task: regression
    feature_set: drift_{tag}
    target: y
    algorithms: [linear_regression]
    selection_metric: r2
    floor: 0.5
    gate: {{max_test_drop: 0.5}}
""")
    prefix = f"it{tag}"  # no trailing separator: the registry adds one
    for key, value in {"PLATFORM_SOURCES_FILE": str(sources), "PLATFORM_MODELS_FILE": str(models),
                       "MLFLOW_REGISTRY_PREFIX": prefix, "MLFLOW_EXPERIMENT_PREFIX": f"test-{prefix}"}.items():
        monkeypatch_module.setenv(key, value)
    mlflow = build_resources(resolved=True)["mlflow"]
    yield {"model": model, "drift": drift, "tag": tag, "prefix": prefix, "mlflow": mlflow, "iris": iris,
           "defs": build_definitions(), "instance": dg.DagsterInstance.ephemeral()}
    client = mlflow.client()
    for m in client.search_registered_models(filter_string=f"name LIKE '{prefix}%'"):
        client.delete_registered_model(m.name)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def iris_run(env):
    tag, model = env["tag"], env["model"]
    keys = [dg.AssetKey(["lake", "raw", f"iris_{tag}"]), dg.AssetKey(["lake", "clean", f"iris_{tag}"]),
            dg.AssetKey(["warehouse", "quarantine", f"iris_{tag}"]), dg.AssetKey(["lake", "features", f"iris_{tag}"]),
            *[candidate_key(model, a) for a in ALGORITHMS], challenger_key(model), champion_key(model)]
    result = run_ml(env, selection=keys, defs=env["defs"])
    assert result.success, [e.event_specific_data.error.to_string() for e in result.all_events
                            if e.event_type_value == "STEP_FAILURE"]
    return result


def test_string_labels_train_register_and_report_class_metrics(iris_run, env):
    model, client = env["model"], env["mlflow"].client()
    registered = f"{env['prefix']}.{model}"
    assert env["mlflow"].registered_name(model) == registered
    champion = client.get_model_version_by_alias(registered, "champion")
    assert champion.version == metadata(iris_run, champion_key(model))["champion_version"]
    md = metadata(iris_run, candidate_key(model, "logistic_regression"))
    assert md["classes"] == SPECIES and md["split_strategy"] == "shuffle"
    assert set(md["per_class_validation"]) == set(SPECIES)
    assert md["val_f1_macro"] > 0.8 and md["val_roc_auc"] > 0.9 and "val_pr_auc" not in md
    rules = md["feature_rules"]
    assert "observer_note" in rules["dropped"] and rules["dropped"]["observer_note"].startswith("high cardinality")
    assert rules["expanded"] == {"measured_on": "year, month, day, day_of_week"}
    assert rules["excluded"]["sample_id"] == "entity (row key)"
    # A stratified shuffle of a file sorted by species: every split holds every class.
    assert md["splits"] == {"train": 90, "validation": 30, "test": 30}
    assert md["plot"].startswith("![")
    artifacts = {a.path for a in client.list_artifacts(champion.run_id)}
    assert {"validation_plot.png", "feature_rules.json", "per_class_validation.json"} <= artifacts
    checks = check_results(iris_run)
    assert checks[(challenger_key(model).to_user_string(), "test_not_collapsed")] is True


def test_mlflow_model_predicts_the_original_labels(iris_run, env):
    import mlflow

    mlflow.set_tracking_uri(env["mlflow"].tracking_uri)
    uri = f"models:/{env['prefix']}.{env['model']}@champion"
    info = mlflow.models.get_model_info(uri)
    columns = info.signature.inputs.input_names()
    assert "observer_note" not in columns and "measured_on" in columns
    example = env["iris"][columns].head(5)
    example = example.assign(measured_on=pd.to_datetime(example["measured_on"]))
    predicted = mlflow.pyfunc.load_model(uri).predict(example)
    assert set(np.asarray(predicted).tolist()) <= set(SPECIES)


def test_prediction_service_returns_string_labels_and_class_probabilities(iris_run, env):
    import bentoml

    from platform_assets.ml.packaging import bento_model_key, build_bento_model
    from resources import build_resources
    from serving.predictor import ModelSlot

    model = env["model"]
    result = dg.materialize([build_bento_model(model)], resources=build_resources(), raise_on_error=False,
                            selection=[bento_model_key(model)])
    assert result.success
    try:
        slot = ModelSlot(model)
        rows = env["iris"].sample(12, random_state=0)
        records = rows.drop(columns=["species"]).to_dict("records")  # dates as ISO text, as JSON brings them
        out = slot.predict(slot.frame(records))
        assert out["classes"] == SPECIES and len(out["predictions"]) == 12
        assert all(isinstance(p, str) for p in out["predictions"])
        assert np.mean(np.asarray(out["predictions"]) == rows["species"].to_numpy()) > 0.8
        assert all(set(p) == set(SPECIES) and abs(sum(p.values()) - 1) < 1e-6 for p in out["probabilities"])
        assert out["version"] == str(env["mlflow"].champion(f"{env['prefix']}.{model}").version)
    finally:
        for stored in bentoml.models.list(model):
            bentoml.models.delete(stored.tag)


def test_gate_blocks_a_model_whose_test_metric_collapsed(env):
    tag, drift = env["tag"], env["drift"]
    keys = [dg.AssetKey(["lake", "raw", f"drift_{tag}"]), dg.AssetKey(["lake", "clean", f"drift_{tag}"]),
            dg.AssetKey(["warehouse", "quarantine", f"drift_{tag}"]), dg.AssetKey(["lake", "features", f"drift_{tag}"]),
            candidate_key(drift, "linear_regression"), challenger_key(drift), champion_key(drift)]
    result = run_ml(env, selection=keys, defs=env["defs"])
    assert not result.success
    md = metadata(result, candidate_key(drift, "linear_regression"))
    assert md["split_strategy"] == "time" and md["val_r2"] > 0.9 and md["test_r2"] < 0  # time column named `date`
    evaluation = next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                      and e.event_specific_data.check_name == "test_not_collapsed")
    shown = {k: v.value for k, v in evaluation.metadata.items()}
    assert evaluation.passed is False and shown["validation_r2"] == md["val_r2"] and shown["test_r2"] == md["test_r2"]
    assert shown["relative_drop"] > 0.5 and shown["max_test_drop"] == "50%"
    assert check_results(result)[(challenger_key(drift).to_user_string(), "clears_floor")] is True
    assert metadata(result, champion_key(drift)) is None  # the alias never moved
    assert env["mlflow"].champion(f"{env['prefix']}.{drift}") is None
