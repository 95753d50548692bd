"""Split strategies, feature rules, the collapse gate, catalogue rules and registry names."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from platform_assets.ml import training as tr
from platform_assets.ml.config import FeatureSetConfig, ModelConfig, load_models
from platform_assets.ml.params import PARAMS
from platform_assets.sources.config import CatalogueError
from resources.mlflow_tracking import registered_name

TABLE = FeatureSetConfig(table="lake/clean/x", entity="id")
TIMED = FeatureSetConfig(table="lake/clean/x", entity="id", time="t")


def model(**update) -> ModelConfig:
    return ModelConfig.model_validate({"task": "classification", "feature_set": "x", "target": "y",
                                       "algorithms": ("random_forest",), "selection_metric": "roc_auc", "floor": 0.5,
                                       **update})


def sorted_by_class(n=300, classes=("a", "b", "c")) -> pd.DataFrame:
    """Rows sorted by class and by time: row order or time order leaves the last class out of training."""
    rng = np.random.default_rng(0)
    y = np.repeat(classes, n // len(classes))
    x = np.array([classes.index(v) for v in y]) + rng.normal(0, 0.3, len(y))
    return pd.DataFrame({"id": np.arange(len(y)), "t": pd.date_range("2026-01-01", periods=len(y), freq="h"),
                         "site": np.arange(len(y)) // 25, "x": x, "y": y})


# -- splits ------------------------------------------------------------------------------------------
def test_auto_without_time_is_a_stratified_seeded_shuffle():
    rows = tr.check_inputs(sorted_by_class(), model(), TABLE, "m")
    parts = tr.split(rows, model(), TABLE, "m")
    assert tr.split_strategy(model(), TABLE) == "shuffle"
    for part in parts:
        assert part["y"].value_counts().to_dict() == pytest.approx(
            {c: len(part) / 3 for c in "abc"}, abs=1)  # stratified: every class, in proportion
    again = tr.split(rows, model(), TABLE, "m")
    assert all(a.index.equals(b.index) for a, b in zip(parts, again))  # seeded
    other = tr.split(rows, model(split={"seed": 7}), TABLE, "m")
    assert not parts.test.index.equals(other.test.index)
    assert sum(map(len, parts)) == len(rows) and not set(parts.train.index) & set(parts.test.index)


def test_auto_with_time_splits_by_time():
    rows = tr.check_inputs(sorted_by_class().sample(frac=1, random_state=1), model(), TIMED, "m")
    rows = rows.assign(y=np.tile(["a", "b", "c"], 100))
    parts = tr.split(rows, model(), TIMED, "m")
    assert tr.split_strategy(model(), TIMED) == "time"
    assert parts.train["t"].max() < parts.validation["t"].min() <= parts.validation["t"].max() < parts.test["t"].min()


def test_time_split_on_rows_sorted_by_class_is_refused_naming_split_and_class():
    rows = tr.check_inputs(sorted_by_class(), model(), TIMED, "m")
    with pytest.raises(tr.TrainingInputError, match=r"the train split lacks class\(es\) 'c' of 'y' under split "
                                                    r"strategy time: every class needs training rows \(try split "
                                                    r"strategy shuffle"):
        tr.split(rows, model(), TIMED, "m")
    # Classes only missing from validation and test are refused too, with the reason.
    idx = np.arange(len(rows))  # time order: 180 train, 60 validation, 60 test rows
    gap = rows.assign(y=np.where((idx >= 180) & (idx < 240), "a", np.tile(["a", "b", "c"], 100)))
    with pytest.raises(tr.TrainingInputError, match=r"the validation split lacks class\(es\) 'b'.* of 'y' under "
                                                    r"split strategy time: validation metrics .* need every class"):
        tr.split(gap, model(), TIMED, "m")


def test_shuffle_refuses_a_class_too_small_to_stratify():
    frame = sorted_by_class()
    frame.loc[frame.index[-1], "y"] = "rare"
    rows = tr.check_inputs(frame, model(), TABLE, "m")
    with pytest.raises(tr.TrainingInputError, match=r"class\(es\) 'rare' \(1 rows\) of 'y' have fewer than 3 rows"):
        tr.split(rows, model(split={"strategy": "shuffle"}), TABLE, "m")


def test_regression_shuffle_is_not_stratified_and_keeps_all_rows():
    frame = sorted_by_class().assign(y=lambda f: f["x"] * 2)
    cfg = ModelConfig(task="regression", feature_set="x", target="y", algorithms=("linear_regression",),
                      selection_metric="rmse", floor=10)
    parts = tr.split(tr.check_inputs(frame, cfg, TABLE, "m"), cfg, TABLE, "m")
    assert [len(p) for p in parts] == [180, 60, 60]
    assert parts.test["id"].max() - parts.test["id"].min() > 200  # drawn from the whole file, not its tail


def test_group_split_keeps_each_group_on_one_side():
    cfg = model(split={"strategy": "group", "group_by": "site"})
    rows = tr.check_inputs(sorted_by_class().assign(y=lambda f: np.tile(["a", "b", "c"], 100)), cfg, TABLE, "m")
    parts = tr.split(rows, cfg, TABLE, "m")
    sites = [set(p["site"]) for p in parts]
    assert not (sites[0] & sites[1]) and not (sites[0] & sites[2]) and not (sites[1] & sites[2])
    assert set().union(*sites) == set(range(12))
    assert "site" not in tr.plan_features(rows, cfg, TABLE, "m").columns  # the group key is no feature
    by_entity = model(split={"strategy": "group"})  # group_by defaults to the entity
    ids = [set(p["id"]) for p in tr.split(rows, by_entity, TABLE, "m")]
    assert not (ids[0] & ids[2])
    with pytest.raises(tr.TrainingInputError, match="group_by column 'site' has 1 null values"):
        tr.split(rows.assign(site=rows["site"].where(rows.index != 5)), cfg, TABLE, "m")


# -- features ----------------------------------------------------------------------------------------
def table(n=120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "id": np.arange(n), "x": rng.normal(size=n), "colour": rng.choice(["red", "green", "blue"], n),
        "name": [f"person {i}" for i in range(n)],  # free text: one value per row
        "code": [f"c{i % 60}" for i in range(n)],  # 60 distinct: above the cap of 50
        "flag": rng.choice([True, False], n),
        "date": [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(n)],
        "seen_at": pd.date_range("2024-01-01 06:30", periods=n, freq="7h", tz="UTC"),
        "day_only": pd.date_range("2024-03-01", periods=n, freq="D"),
        "empty": [None] * n, "y": rng.choice(["a", "b"], n), "other_label": rng.normal(size=n),
    })


def test_feature_rules_expand_dates_drop_high_cardinality_and_report_why():
    fs = FeatureSetConfig(table="lake/clean/x", entity="id", labels=("other_label",))
    plan = tr.plan_features(table(), model(), fs, "m")
    assert plan.numeric == ["x"] and plan.categorical == ["colour", "flag"]
    assert plan.dates == ["date", "day_only"] and plan.timestamps == ["seen_at"]
    assert set(plan.dropped) == {"name", "code", "empty"}
    assert plan.dropped["name"].startswith("high cardinality: 120 distinct values in 120 rows")
    assert plan.dropped["code"].startswith("high cardinality: 60 distinct") and plan.dropped["empty"] == "no values"
    assert plan.excluded == {"other_label": "label of the feature set", "id": "entity (row key)", "y": "target"}
    rules = plan.rules()
    assert rules["expanded"]["seen_at"].endswith("hour") and rules["expanded"]["date"] == "year, month, day, day_of_week"


def test_date_parts_are_features_inside_the_model_and_serving_may_send_strings():
    frame = table()
    frame["y"] = np.where(pd.to_datetime(frame["seen_at"]).dt.hour < 12, "morning", "later")
    plan = tr.plan_features(frame, model(), TABLE, "m")
    pipe = tr.pipeline_for("classification", "gradient_boosting", PARAMS["gradient_boosting"]().model_dump(), plan)
    pipe.fit(frame[plan.columns], frame["y"])
    names = list(pipe.named_steps["prep"].get_feature_names_out())
    assert "timestamps__seen_at_hour" in names and "dates__date_day_of_week" in names
    assert not any("name" in n for n in names)
    as_json = frame[plan.columns].head(20).astype(object).assign(
        seen_at=lambda f: f["seen_at"].map(lambda v: v.isoformat()), date=lambda f: f["date"].map(str))
    assert (pipe.predict(as_json) == pipe.predict(frame[plan.columns].head(20))).all()


def test_no_sparse_matrix_reaches_gradient_boosting_with_many_categories():
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"x": rng.normal(size=n), "cat": [f"v{i % 45}" for i in range(n)],  # kept: 45 ≤ 50
                          "y": rng.choice(["a", "b", "c"], n)})
    plan = tr.plan_features(frame, model(), FeatureSetConfig(table="t"), "m")
    assert plan.categorical == ["cat"]
    pipe = tr.pipeline_for("classification", "gradient_boosting", {"max_iter": 5}, plan)
    transformed = pipe.named_steps["prep"].fit_transform(frame[plan.columns])
    assert isinstance(transformed, np.ndarray) and transformed.shape[1] <= 1 + tr.MAX_CATEGORIES
    pipe.fit(frame[plan.columns], frame["y"])  # HistGradientBoosting refuses sparse input: this proves dense


def test_builder_labels_are_excluded_without_demo_names_in_training_code():
    import inspect

    assert "failure_within_24h" not in inspect.getsource(tr)
    fs = FeatureSetConfig(builder="machine_hourly", entity="machine_id", time="as_of")
    frame = pd.DataFrame({"machine_id": ["M1"] * 4, "as_of": pd.date_range("2026-01-01", periods=4, freq="h"),
                          "source_cutoff": pd.date_range("2026-01-01", periods=4, freq="h"), "x": [1.0, 2, 3, 4],
                          "failure_within_24h": [0.0, 1, 0, 1], "hours_to_failure": [1.0, 2, 3, 4]})
    cfg = model(target="failure_within_24h")
    assert tr.feature_columns(frame, cfg, fs, "m") == ["x"]


# -- the collapse gate -------------------------------------------------------------------------------
@pytest.mark.parametrize("val, test, higher, drop", [
    (0.55, -1.01, True, (0.55 + 1.01) / 0.55),  # the issue's regressor: R² 0.55 on validation, −1.01 on test
    (0.8, 0.6, True, 0.25), (0.8, 0.9, True, 0.0),
    (10.0, 12.5, False, 0.25), (10.0, 8.0, False, 0.0),
])
def test_metric_drop_is_relative_and_direction_aware(val, test, higher, drop):
    assert tr.metric_drop(val, test, higher) == pytest.approx(drop)
    assert np.isnan(tr.metric_drop(float("nan"), 0.3, True))


def test_collapse_rule_blocks_the_issue_regressor_and_respects_tolerance_and_off():
    assert tr.collapsed(0.55, -1.01, True, 1.0)  # default tolerance
    assert not tr.collapsed(0.8, 0.7, True, 1.0) and tr.collapsed(0.8, 0.5, True, 0.25)
    assert tr.collapsed(10.0, 25.0, False, 1.0) and not tr.collapsed(10.0, 19.0, False, 1.0)
    assert not tr.collapsed(0.55, -1.01, True, None)  # gate: {max_test_drop: null}
    assert not tr.collapsed(0.9, float("nan"), True, 0.1)
    assert ModelConfig.model_validate({"task": "regression", "feature_set": "f", "target": "y",
                                       "algorithms": ["linear_regression"], "selection_metric": "r2",
                                       "floor": 0}).gate.max_test_drop == 1.0


# -- catalogue rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("body, message", [
    ("task: regression, selection_metric: rmse, positive_class: 1", "positive_class only applies to task: classification"),
    ("task: regression, selection_metric: roc_auc", "selection_metric for regression is one of rmse, mae, r2"),
    ("task: classification, selection_metric: rmse", "selection_metric for classification is one of accuracy"),
    ("task: classification, selection_metric: f1_macro, split: {strategy: time}",
     "split strategy time needs a time column in feature set f"),
    ("task: classification, selection_metric: f1_macro, split: {strategy: shuffle, group_by: site}",
     "group_by only applies to strategy: group"),
    ("task: classification, selection_metric: f1_macro, split: {strategy: group}", "split strategy group needs group_by"),
    ("task: classification, selection_metric: f1_macro, gate: {max_test_drop: -1}", "max_test_drop"),
])
def test_catalogue_checks_metric_task_split_and_positive_class(tmp_path, body, message):
    path = tmp_path / "models.yaml"
    path.write_text("feature_sets: {f: {table: lake/clean/x}}\n"
                    f"models:\n  m: {{feature_set: f, target: y, algorithms: [random_forest], floor: 1, {body}}}\n")
    with pytest.raises(CatalogueError, match=message):
        load_models(path)


def test_catalogue_accepts_the_new_options(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("feature_sets: {f: {table: lake/clean/x, entity: id, labels: [y, z]}}\nmodels:\n"
                    "  m: {task: classification, feature_set: f, target: y, algorithms: [logistic_regression],\n"
                    "      selection_metric: balanced_accuracy, floor: 0.5, positive_class: yes,\n"
                    "      split: {strategy: group, validation: 0.25, test: 0.25, seed: 3}, gate: {max_test_drop: 0.1}}\n")
    m = load_models(path).models["m"]
    assert m.positive_class is True and m.split.seed == 3 and m.gate.max_test_drop == 0.1 and m.higher_is_better
    assert load_models().models["failure_within_24h"].positive_class == 1


# -- registry names ----------------------------------------------------------------------------------
def test_registry_prefix_gets_a_separator():
    assert registered_name("acme", "temp_max") == "acme.temp_max"
    assert registered_name("staging_", "temp_max") == "staging_temp_max"
    assert registered_name("acme-", "temp_max") == "acme-temp_max"
    assert registered_name("", "temp_max") == "temp_max"


def test_time_split_orders_parquet_dates_and_refuses_missing_times():
    frame = sorted_by_class().assign(y=lambda f: np.tile(["a", "b", "c"], 100))
    frame["t"] = [dt.date(2024, 1, 1) + dt.timedelta(days=int(i)) for i in frame["id"]][::-1]  # newest first
    fs = FeatureSetConfig(table="lake/clean/x", entity="id", time="t")
    parts = tr.split(frame, model(), fs, "m")
    assert max(parts.train["t"]) < min(parts.validation["t"]) and max(parts.validation["t"]) < min(parts.test["t"])
    with pytest.raises(tr.TrainingInputError, match="time column 't' has 1 missing or unreadable values"):
        tr.split(frame.assign(t=frame["t"].where(frame.index != 3)), model(), fs, "m")


def test_small_data_trains_with_single_threaded_native_pools():
    import sklearn.ensemble  # noqa: F401  (loads OpenMP)
    from threadpoolctl import threadpool_info

    def threads():
        return {p["user_api"]: p["num_threads"] for p in threadpool_info()}

    before = threads()
    assert "openmp" in before
    with tr.native_threads(1461):
        assert set(threads().values()) == {1}
    assert threads() == before  # restored afterwards
    with tr.native_threads(tr.SINGLE_THREAD_ROWS):
        assert threads() == before  # untouched for large data
