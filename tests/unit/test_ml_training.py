"""Training inputs are checked before training; the split is by time; metrics and gates compare right."""

import numpy as np
import pandas as pd
import pytest

from platform_assets.ml import training as tr
from platform_assets.ml.config import FeatureSetConfig, ModelConfig, load_models
from platform_assets.ml.params import PARAMS
from platform_assets.sources.config import CatalogueError

FS = FeatureSetConfig(table="lake/clean/x", entity="id", time="t")
CLS = ModelConfig(task="classification", feature_set="x", target="y", algorithms=("random_forest",),
                  selection_metric="roc_auc", floor=0.5)


def frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"id": np.arange(n), "t": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
                         "x": x, "c": rng.choice(["a", "b"], n), "y": (x + rng.normal(0, 0.3, n) > 0).astype(float)})


def test_missing_column_one_class_and_empty_window_fail_before_training():
    with pytest.raises(tr.TrainingInputError, match="feature column\\(s\\) nope not in feature set x"):
        tr.feature_columns(frame(), CLS.model_copy(update={"features": ("x", "nope")}), FS, "m")
    with pytest.raises(tr.TrainingInputError, match="target column 'label' not in feature set"):
        tr.check_inputs(frame(), CLS.model_copy(update={"target": "label"}), FS, "m")
    with pytest.raises(tr.TrainingInputError, match="single class"):
        tr.check_inputs(frame().assign(y=1.0), CLS, FS, "m")
    with pytest.raises(tr.TrainingInputError, match="training window is empty"):
        tr.check_inputs(frame().assign(y=np.nan), CLS, FS, "m")


def test_split_is_by_time_and_test_is_newest():
    splits = tr.split_by_time(frame(), CLS, FS, "m")
    assert splits.train["t"].max() < splits.validation["t"].min()
    assert splits.validation["t"].max() < splits.test["t"].min()
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 200


@pytest.mark.parametrize("algorithm", ["random_forest", "gradient_boosting", "logistic_regression"])
def test_classifiers_learn_a_simple_signal(algorithm):
    data = frame(400)
    model = CLS.model_copy(update={"algorithms": (algorithm,)})
    splits = tr.split_by_time(data, model, FS, "m")
    pipe = tr.build_pipeline("classification", algorithm, PARAMS[algorithm]().model_dump(), ["x"], ["c"])
    pipe.fit(splits.train[["x", "c"]], splits.train["y"].astype(int))
    scores = tr.metrics("classification", pipe, splits.validation[["x", "c"]], splits.validation["y"])
    assert scores["roc_auc"] > 0.85


@pytest.mark.parametrize("algorithm", ["random_forest", "gradient_boosting", "linear_regression"])
def test_regressors_beat_the_mean(algorithm):
    data = frame(400)
    data["y"] = 3 * data["x"] + np.random.default_rng(1).normal(0, 0.2, 400)
    model = ModelConfig(task="regression", feature_set="x", target="y", algorithms=(algorithm,),
                        selection_metric="rmse", floor=10)
    splits = tr.split_by_time(data, model, FS, "m")
    pipe = tr.build_pipeline("regression", algorithm, PARAMS[algorithm]().model_dump(), ["x"], ["c"])
    pipe.fit(splits.train[["x", "c"]], splits.train["y"])
    scores = tr.metrics("regression", pipe, splits.validation[["x", "c"]], splits.validation["y"])
    assert scores["rmse"] < splits.validation["y"].std() / 2 and scores["r2"] > 0.7


def test_better_respects_direction_and_missing_values():
    assert tr.better(0.9, 0.8, True) and not tr.better(0.8, 0.9, True)
    assert tr.better(10.0, 12.0, False) and not tr.better(12.0, 10.0, False)
    assert tr.better(0.5, None, True) and not tr.better(float("nan"), 0.1, True)


def test_catalogue_rejects_wrong_algorithm_and_metric(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("feature_sets: {f: {table: lake/clean/x}}\nmodels:\n  m: {task: regression, feature_set: f, "
                    "target: y, algorithms: [logistic_regression], selection_metric: rmse, floor: 1}\n")
    with pytest.raises(CatalogueError, match="algorithms for regression are"):
        load_models(path)
    assert set(load_models().models) == {"failure_within_24h", "remaining_useful_life"}


def test_plots_render_as_inline_markdown():
    png = tr.confusion_matrix_png([0, 1, 1, 0], [0, 1, 0, 0], "cm")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert tr.png_markdown(png, "cm").startswith("![cm](data:image/png;base64,")



def fake_mlflow(fail_in=None):
    """An MlflowResource that records what a candidate asks of it, in order (unit tests only);
    ``fail_in="log_sklearn"`` makes the model upload fail as an unreachable server."""
    import contextlib
    import types

    from resources.mlflow_tracking import MlflowResource

    calls = []

    class Fake(MlflowResource):
        @contextlib.contextmanager
        def run(self, context, experiment, run_name, tags=None):
            calls.append(("start", run_name))
            try:
                yield types.SimpleNamespace(info=types.SimpleNamespace(run_id="r1"))
            except BaseException as exc:
                calls.append(("failed", type(exc).__name__))
                raise
            calls.append(("end",))

        def log_sklearn(self, pipeline, registered_name, input_example, tags=None):
            if fail_in == "log_sklearn":
                raise ConnectionError("mlflow unreachable")
            calls.append(("model", sorted(tags)))
            return "7"

        def log_batch(self, run_id, params, metrics):
            calls.append(("batch", sorted(metrics)))

        def log_files(self, run_id, files):
            calls.append(("files", sorted(files)))

    return Fake(tracking_uri="http://unused"), calls


def _run_candidate(mlflow):
    import dagster as dg

    from platform_assets.ml.assets import build_candidate

    asset = build_candidate("m", CLS.model_copy(update={"positive_class": 1}), FS, "random_forest")
    with dg.build_asset_context() as context:
        return asset(context, PARAMS["random_forest"](), frame(400), mlflow=mlflow)


def test_candidate_logs_model_first_then_params_metrics_and_files_in_one_call_each():
    fake, calls = fake_mlflow()
    md = _run_candidate(fake).metadata
    assert md["model_version"] == "7" and md["mlflow_run_id"] == "r1" and "test_roc_auc" in md
    assert [c[0] for c in calls] == ["start", "model", "batch", "files", "end"]
    assert "test_roc_auc" in calls[2][1] and "val_pr_auc" in calls[2][1]
    assert calls[3][1] == ["feature_rules.json", "per_class_validation.json", "validation_plot.png"]


def test_candidate_failures_transient_raised_as_is_others_fail_fast(monkeypatch):
    import dagster as dg

    from platform_assets.ml import assets as ml_assets

    fake, calls = fake_mlflow(fail_in="log_sklearn")
    with pytest.raises(ConnectionError, match="mlflow unreachable"):  # transient: raised as is, for IO_RETRY
        _run_candidate(fake)
    assert [c[0] for c in calls] == ["start", "failed"]

    def broken_plot(*args, **kwargs):
        raise ValueError("plot failed")

    monkeypatch.setattr(ml_assets.tr, "confusion_matrix_png", broken_plot)
    fake, calls = fake_mlflow()
    with pytest.raises(dg.Failure, match="plot failed"):  # not transient: fails fast
        _run_candidate(fake)
    assert calls == []  # nothing tracked or registered for a candidate whose report failed


@pytest.mark.parametrize("algorithm", ["random_forest", "gradient_boosting", "logistic_regression"])
def test_scores_predictions_are_what_predict_returns(algorithm):
    """The validation plot reuses the metrics' pass: its predictions must equal ``predict``'s."""
    rows = tr.check_inputs(frame(300), CLS, FS, "m")
    plan, splits = tr.plan_features(rows, CLS, FS, "m"), tr.split(rows, CLS, FS, "m")
    pipeline = tr.pipeline_for("classification", algorithm, PARAMS[algorithm]().model_dump(), plan)
    pipeline.fit(splits.train[plan.columns], splits.train["y"])
    val, pred = tr.scores("classification", pipeline, splits.validation[plan.columns], splits.validation["y"])
    assert val == tr.metrics("classification", pipeline, splits.validation[plan.columns], splits.validation["y"])
    assert (pred == pipeline.predict(splits.validation[plan.columns])).all() and len(pred) == len(splits.validation)
