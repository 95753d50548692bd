"""Classification of integer, boolean and string labels, binary and multiclass: labels come back as trained."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from platform_assets.ml import training as tr
from platform_assets.ml.config import FeatureSetConfig, ModelConfig
from platform_assets.ml.params import PARAMS
from serving.predictor import predict_with

FS = FeatureSetConfig(table="lake/clean/x", entity="id")
ALGORITHMS = ["random_forest", "gradient_boosting", "logistic_regression"]


def iris(sort_by_class=True) -> pd.DataFrame:
    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = data.target_names[frame.pop("target")]
    frame.insert(0, "id", np.arange(len(frame)))
    return frame.sort_values("species", kind="stable") if sort_by_class else frame


def model(**update) -> ModelConfig:
    base = ModelConfig(task="classification", feature_set="iris", target="species", algorithms=("random_forest",),
                       selection_metric="f1_macro", floor=0.5)
    return base.model_copy(update=update)


def train(frame, cfg, algorithm="random_forest", fs=FS):
    rows = tr.check_inputs(frame, cfg, fs, "m")
    plan = tr.plan_features(rows, cfg, fs, "m")
    splits = tr.split(rows, cfg, fs, "m")
    pipe = tr.pipeline_for("classification", algorithm, PARAMS[algorithm]().model_dump(), plan)
    pipe.fit(splits.train[plan.columns], splits.train[cfg.target])
    return pipe, plan, splits


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_multiclass_string_labels_train_and_predict_original_labels(algorithm):
    cfg = model()
    pipe, plan, splits = train(iris(), cfg, algorithm)
    assert list(pipe.classes_) == ["setosa", "versicolor", "virginica"]
    scores = tr.metrics("classification", pipe, splits.validation[plan.columns], splits.validation["species"])
    assert set(scores) >= {"accuracy", "balanced_accuracy", "f1_macro", "log_loss", "roc_auc"}
    assert "pr_auc" not in scores and "f1" not in scores  # binary-only metrics
    assert scores["accuracy"] > 0.8 and scores["roc_auc"] > 0.9 and scores["log_loss"] > 0
    served = predict_with(pipe, splits.test[plan.columns].head(4), model="iris")
    assert set(served["predictions"]) <= {"setosa", "versicolor", "virginica"}
    assert served["classes"] == ["setosa", "versicolor", "virginica"]
    assert all(set(p) == set(served["classes"]) and abs(sum(p.values()) - 1) < 1e-9 for p in served["probabilities"])


@pytest.mark.parametrize("labels, positive, expected", [
    ({0: "no", 1: "yes"}, "yes", "yes"),
    ({0: False, 1: True}, None, True),
    ({0: 0, 1: 1}, None, 1),
    ({0: 0.0, 1: 1.0}, 1, 1),  # whole-number floats (the demo's 0.0/1.0) become integers
    ({0: 3, 1: 7}, 3, 3),
])
def test_binary_labels_of_every_type_and_the_positive_class(labels, positive, expected):
    frame = iris(sort_by_class=False)
    frame["species"] = (frame["species"] == "virginica").astype(int).map(labels)
    cfg = model(selection_metric="pr_auc", positive_class=positive)
    pipe, plan, splits = train(frame, cfg, "logistic_regression")
    served_classes = predict_with(pipe, splits.test[plan.columns].head(1))["classes"]
    assert [type(c) for c in served_classes] == [type(expected)] * 2
    assert tr.positive_class(pipe.classes_, positive) == expected
    served = predict_with(pipe, splits.test[plan.columns], model="m")
    assert set(served["predictions"]) <= set(served["classes"]) and expected in served["classes"]
    scores = tr.metrics("classification", pipe, splits.validation[plan.columns], splits.validation["species"], positive)
    truth = splits.validation["species"] == expected
    assert scores["positives"] == truth.sum() and 0.5 < scores["pr_auc"] <= 1 + 1e-9


def test_positive_class_changes_the_binary_metrics():
    frame = iris(sort_by_class=False)
    frame["species"] = np.where(frame["species"] == "virginica", "virginica", "other")
    cfg = model(selection_metric="pr_auc")
    pipe, plan, splits = train(frame, cfg, "logistic_regression")
    X, y = splits.validation[plan.columns], splits.validation["species"]
    a = tr.metrics("classification", pipe, X, y, "virginica")
    b = tr.metrics("classification", pipe, X, y, "other")
    assert a["positives"] == (y == "virginica").sum() and b["positives"] == (y == "other").sum()
    assert a["pr_auc"] != b["pr_auc"] and a["roc_auc"] == pytest.approx(b["roc_auc"])
    assert a["accuracy"] == b["accuracy"]  # not a per-class metric
    with pytest.raises(tr.TrainingInputError, match="positive_class 'maybe' is not one of the target's classes"):
        tr.check_inputs(frame, model(positive_class="maybe"), FS, "m")


def test_binary_only_metric_on_a_multiclass_target_is_refused_clearly():
    with pytest.raises(tr.TrainingInputError, match="selection_metric pr_auc is for binary targets, but 'species' "
                                                    "has 3 classes"):
        tr.check_inputs(iris(), model(selection_metric="pr_auc"), FS, "m")


def test_fractional_float_target_is_refused_for_classification():
    frame = iris().assign(species=lambda f: f["sepal_length"])
    with pytest.raises(tr.TrainingInputError, match="holds fractional values"):
        tr.check_inputs(frame, model(), FS, "m")


def test_confusion_matrix_carries_class_names():
    import matplotlib

    matplotlib.use("Agg")
    from unittest import mock

    from sklearn.metrics import ConfusionMatrixDisplay

    seen = {}
    original = ConfusionMatrixDisplay.plot

    def spy(self, *args, **kwargs):
        seen["labels"], seen["matrix"] = list(self.display_labels), self.confusion_matrix.tolist()
        return original(self, *args, **kwargs)

    with mock.patch.object(ConfusionMatrixDisplay, "plot", spy):
        png = tr.confusion_matrix_png(["cat", "dog", "dog", "eel"], ["cat", "dog", "cat", "eel"], "cm",
                                      labels=["cat", "dog", "eel"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen["labels"] == ["cat", "dog", "eel"]
    assert seen["matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]


def test_per_class_report_names_each_class():
    cfg = model()
    pipe, plan, splits = train(iris(), cfg)
    report = tr.per_class(pipe.classes_, splits.validation["species"], pipe.predict(splits.validation[plan.columns]))
    assert set(report) == {"setosa", "versicolor", "virginica"}
    assert report["setosa"]["support"] == (splits.validation["species"] == "setosa").sum()


def test_regression_is_unchanged():
    frame = iris(sort_by_class=False).drop(columns="species")
    cfg = ModelConfig(task="regression", feature_set="iris", target="petal_width", algorithms=("linear_regression",),
                      selection_metric="r2", floor=0)
    rows = tr.check_inputs(frame, cfg, FS, "m")
    plan = tr.plan_features(rows, cfg, FS, "m")
    splits = tr.split(rows, cfg, FS, "m")
    pipe = tr.pipeline_for("regression", "linear_regression", {}, plan)
    pipe.fit(splits.train[plan.columns], splits.train["petal_width"])
    scores = tr.metrics("regression", pipe, splits.validation[plan.columns], splits.validation["petal_width"])
    assert set(scores) == {"rmse", "mae", "r2", "rows"} and scores["r2"] > 0.8
    assert predict_with(pipe, splits.test[plan.columns].head(2), model="m")["predictions"][0] > 0
