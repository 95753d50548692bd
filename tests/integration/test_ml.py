"""The ML path against the real MLflow server, Redis and the batch path's warehouse.

Registered models and experiments get a prefix of this session's own, and Redis a database of its
own, so the demo's registry and online store are never touched.
"""

from __future__ import annotations

import os

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from platform_assets.ml.assets import candidate_key, challenger_key, champion_key
from tests.integration.pipeline import metadata, run_ml

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLS, REG = "failure_within_24h", "remaining_useful_life"


def test_six_models_are_tracked_registered_and_champions_chosen(first_training, ml_env):
    client, prefix = ml_env["mlflow"].client(), ml_env["prefix"]
    for model, algos in ((CLS, 3), (REG, 3)):
        versions = client.search_model_versions(f"name = '{prefix}{model}'")
        assert len(versions) == algos
        champion = client.get_model_version_by_alias(f"{prefix}{model}", "champion")
        assert champion.version == metadata(first_training, challenger_key(model))["challenger_version"]
        run = client.get_run(champion.run_id)
        assert run.data.tags["dagster.run_id"] == first_training.run_id
        assert run.data.tags["dagster.asset"].startswith(f"ml/candidates/{model}/")
        assert run.data.tags["code_version"] and "training_window" in run.data.tags
        assert any(k.startswith("val_") for k in run.data.metrics) and any(k.startswith("test_") for k in run.data.metrics)
    cls_md = metadata(first_training, candidate_key(CLS, "random_forest"))
    assert cls_md["val_roc_auc"] > 0.7 and cls_md["plot"].startswith("![")
    reg_md = metadata(first_training, candidate_key(REG, "gradient_boosting"))
    assert reg_md["val_rmse"] > 0 and "val_r2" in reg_md


def test_registered_model_has_signature_and_loads_for_prediction(first_training, ml_env):
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    uri = f"models:/{ml_env['prefix']}{CLS}@champion"
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    model = mlflow.pyfunc.load_model(uri)
    example = pd.read_parquet(os.path.join(os.environ["LAKE_ROOT"], "features", "machine_hourly", "data.parquet")).head(3)
    assert len(model.predict(example[info.signature.inputs.input_names()])) == 3


def test_online_store_holds_the_latest_row_per_machine(first_training, ml_env, platform):
    online = ml_env["online"]
    machines = sorted(online.entities("machine_hourly"))
    assert len(machines) == len(platform.data.machines) - platform.data.expected_bad_rows["machines"]
    row = online.read("machine_hourly", [machines[0]])[machines[0]]
    assert row["machine_id"] == machines[0] and "avg_temperature_mean_24h" in row


def test_bento_rebuild_reuses_the_requirement_lock_and_makes_the_same_bento(first_training):
    """serving/bento locks the requirements once; a rebuild reuses the lock and yields the same files,
    locked requirements and Dockerfile, with nothing of the staging folder inside."""
    from pathlib import Path

    import bentoml

    from platform_assets.ml import bentobuild
    from platform_assets.settings import PROJECT_ROOT

    md = metadata(first_training, dg.AssetKey(["serving", "bento"]))
    assert md["requirements"].startswith(("locked", "reused lock"))
    first = bentoml.bentos.get(md["bento"])
    second, how = bentobuild.build(PROJECT_ROOT / "serving" / "bentofile.yaml", PROJECT_ROOT)
    try:
        def files(b):
            return sorted(p.relative_to(b.path).as_posix() for p in Path(b.path).rglob("*") if p.is_file())

        def text(b, rel):
            return (Path(b.path) / rel).read_text()

        assert how.startswith("reused lock") and second.tag != first.tag
        assert files(second) == files(first)
        assert "src/serving/service.py" in files(second) and "src/platform_assets/models.yaml" in files(second)
        assert not [f for f in files(second) if bentobuild.BUILD_DIR in f or "__pycache__" in f]
        locked = sorted(x.strip() for x in text(second, "env/python/requirements.txt").splitlines() if x.strip())
        assert locked == sorted(x.strip() for x in text(first, "env/python/requirements.txt").splitlines() if x.strip())
        assert locked.count(f"bentoml=={bentoml.__version__}") == 1
        assert "scikit-learn==1.9.1" in locked and any(r.startswith("numpy==") for r in locked)  # transitive, pinned
        assert text(second, "env/docker/Dockerfile") == text(first, "env/docker/Dockerfile")
        assert {m.tag for m in second.info.models} == {m.tag for m in first.info.models}
    finally:
        bentoml.bentos.delete(str(second.tag))


def test_gate_refuses_a_worse_model_and_keeps_the_champion(first_training, ml_env):
    client, name = ml_env["mlflow"].client(), f"{ml_env['prefix']}{CLS}"
    before = client.get_model_version_by_alias(name, "champion").version
    weak = {"ops": {
        "ml__candidates__failure_within_24h__random_forest": {"config": {"n_estimators": 1, "max_depth": 1}},
        "ml__candidates__failure_within_24h__gradient_boosting": {"config": {"max_iter": 1, "max_depth": 1}},
        "ml__candidates__failure_within_24h__logistic_regression": {"config": {"C": 1e-7, "max_iter": 10}},
    }}
    keys = [candidate_key(CLS, a) for a in ("random_forest", "gradient_boosting", "logistic_regression")]
    result = run_ml(ml_env, selection=[*keys, challenger_key(CLS), champion_key(CLS)], run_config=weak)
    assert not result.success
    checks = {e.event_specific_data.check_name: e.event_specific_data.passed for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["beats_champion"] is False
    assert metadata(result, champion_key(CLS)) is None  # the alias asset never ran
    assert client.get_model_version_by_alias(name, "champion").version == before
    assert len(client.search_model_versions(f"name = '{name}'")) == 6  # the weak ones are registered, not promoted


def test_bad_configuration_fails_before_training(first_training, ml_env, tmp_path, monkeypatch):
    from platform_assets.definitions import build_definitions

    models = tmp_path / "models.yaml"
    models.write_text("""
feature_sets:
  machine_hourly: {builder: machine_hourly, entity: machine_id, time: as_of}
models:
  broken:
    task: classification
    feature_set: machine_hourly
    target: failure_within_24h
    features: [avg_temperature, no_such_column]
    algorithms: [random_forest]
    selection_metric: pr_auc
    floor: 0.1
""")
    monkeypatch.setenv("PLATFORM_MODELS_FILE", str(models))
    result = run_ml(ml_env, selection=[candidate_key("broken", "random_forest")], defs=build_definitions())
    assert not result.success
    errors = " ".join(e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "feature column(s) no_such_column not in feature set machine_hourly" in errors
    assert not ml_env["mlflow"].client().search_registered_models(filter_string=f"name = '{ml_env['prefix']}broken'")


def test_generality_a_public_dataset_through_the_csv_source(ml_env, tmp_path, monkeypatch):
    """A new model over scikit-learn's breast-cancer data, declared in configuration only."""
    from sklearn.datasets import load_breast_cancer

    from platform_assets.definitions import build_definitions
    from platform_assets.settings import PROJECT_ROOT

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame["malignant"] = (frame.pop("target") == 0).astype(int)
    frame.insert(0, "sample_id", np.arange(len(frame)))
    files = tmp_path / "files"
    files.mkdir()
    frame.to_csv(files / "breast_cancer.csv", index=False)
    columns = "\n".join(f"        {c}: {{type: {'int' if c in ('sample_id', 'malignant') else 'float'}, required: true}}"
                        for c in frame.columns)
    sources = tmp_path / "sources.yaml"
    sources.write_text((PROJECT_ROOT / "platform_assets" / "sources.yaml").read_text() + f"""
  breast_cancer:
    kind: csv
    path: {files}/breast_cancer.csv
    contract:
      primary_key: [sample_id]
      columns:
{columns}
""")
    models = tmp_path / "models.yaml"
    models.write_text("""
feature_sets:
  breast_cancer: {table: lake/clean/breast_cancer, entity: sample_id}
models:
  cancer:
    task: classification
    feature_set: breast_cancer
    target: malignant
    algorithms: [random_forest, gradient_boosting, logistic_regression]
    selection_metric: roc_auc
    floor: 0.9
""")
    monkeypatch.setenv("PLATFORM_SOURCES_FILE", str(sources))
    monkeypatch.setenv("PLATFORM_MODELS_FILE", str(models))
    defs = build_definitions()
    keys = [dg.AssetKey(["lake", "raw", "breast_cancer"]), dg.AssetKey(["lake", "clean", "breast_cancer"]),
            dg.AssetKey(["warehouse", "quarantine", "breast_cancer"]), dg.AssetKey(["lake", "features", "breast_cancer"]),
            *[candidate_key("cancer", a) for a in ("random_forest", "gradient_boosting", "logistic_regression")],
            challenger_key("cancer"), champion_key("cancer")]
    result = run_ml(ml_env, selection=keys, defs=defs)
    assert result.success, [e.event_specific_data.error.to_string() for e in result.all_events
                            if e.event_type_value == "STEP_FAILURE"]
    champion = metadata(result, champion_key("cancer"))
    assert champion["test_roc_auc"] > 0.9
    assert ml_env["mlflow"].client().get_model_version_by_alias(f"{ml_env['prefix']}cancer", "champion").version == \
        champion["champion_version"]
