"""The model catalogue (platform_assets/models.yaml), validated by pydantic.

A feature set is either built by a named builder (the fleet's point-in-time features) or read
from any lake or warehouse table asset with the columns to use; a model names its task, feature
set, target, algorithms, selection metric and floor, and optionally its split, positive class and
gate tolerance. Everything else is generated. Rules that need the data (is the target binary or
multiclass?) are checked at training time (platform_assets/ml/training.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from platform_assets.sources.config import load_validated

DEFAULT_MODELS = Path(__file__).resolve().parent.parent / "models.yaml"

CLASSIFIERS = ("random_forest", "gradient_boosting", "logistic_regression")
REGRESSORS = ("random_forest", "gradient_boosting", "linear_regression")
# Metric direction: True when larger is better.
METRICS = {"classification": {"accuracy": True, "balanced_accuracy": True, "f1_macro": True, "log_loss": False,
                              "roc_auc": True, "pr_auc": True, "f1": True},
           "regression": {"rmse": False, "mae": False, "r2": True}}
# Metrics of the positive class: defined for binary targets only (checked when the data is known).
BINARY_ONLY = ("pr_auc", "f1")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Split(_Strict):
    """How rows are split into training, validation and test (test is only reported, never chosen on).

    ``auto``: by time when the feature set has a ``time`` column, else a seeded shuffle (stratified
    by class for classification). ``time``: oldest rows train, newest test. ``shuffle``: seeded
    shuffle (stratified for classification). ``group``: whole groups of ``group_by`` (default: the
    feature set's entity) go to one split, so an entity never sits on both sides.
    """

    strategy: Literal["auto", "time", "shuffle", "group"] = "auto"
    validation: float = Field(default=0.2, gt=0, lt=1)
    test: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    group_by: str | None = None

    @model_validator(mode="after")
    def _room_for_training(self) -> Split:
        if self.validation + self.test >= 0.9:
            raise ValueError("validation + test must leave at least 10% for training")
        if self.group_by and self.strategy != "group":
            raise ValueError(f"group_by only applies to strategy: group (strategy is {self.strategy})")
        return self


class Gate(_Strict):
    """Promotion tolerance. ``max_test_drop`` is relative: the test metric may be worse than the
    validation metric by at most this fraction of the validation value's magnitude (0.25: a val
    R² of 0.8 needs test ≥ 0.6; a val RMSE of 10 needs test ≤ 12.5). The default, 1.0, only stops a
    collapse (test error more than double, or a higher-is-better score falling below zero, as a val
    R² of 0.55 with a test R² of -1.01); tighten it per model. ``null`` turns the check off."""

    max_test_drop: float | None = Field(default=1.0, ge=0)


class FeatureSetConfig(_Strict):
    builder: Literal["machine_hourly"] | None = None
    # Or an existing table asset, e.g. "lake/clean/wine" or "warehouse/marts/machine_daily_stats".
    table: str | None = None
    columns: tuple[str, ...] | None = None  # for table feature sets: the columns to keep (all if omitted)
    entity: str | None = None
    time: str | None = None  # ordering column for the time split
    # Label (outcome) columns of the set: never used as features of any model (a builder adds its own).
    labels: tuple[str, ...] = ()
    online: bool = False

    @model_validator(mode="after")
    def _one_origin(self) -> FeatureSetConfig:
        if (self.builder is None) == (self.table is None):
            raise ValueError("give exactly one of builder or table")
        if self.online and not self.entity:
            raise ValueError("an online feature set needs an entity column (the lookup key)")
        if self.columns:
            named = {"entity": self.entity, "time": self.time, **{f"labels[{i}]": c for i, c in enumerate(self.labels)}}
            missing = [f"{k} {v!r}" for k, v in named.items() if v and v not in self.columns]
            if missing:
                raise ValueError(f"{', '.join(missing)} not among columns: {', '.join(self.columns)}")
        return self


class ModelConfig(_Strict):
    task: Literal["classification", "regression"]
    feature_set: str
    target: str
    features: tuple[str, ...] | None = None  # default: every column but entity, time and labels
    algorithms: tuple[str, ...]
    selection_metric: str
    floor: float
    split: Split = Split()
    # The class binary metrics (pr_auc, f1, roc_auc) score; default: the greater of the two labels.
    positive_class: int | bool | str | None = None
    gate: Gate = Gate()

    @model_validator(mode="after")
    def _known_algorithms_and_metric(self) -> ModelConfig:
        allowed = CLASSIFIERS if self.task == "classification" else REGRESSORS
        unknown = [a for a in self.algorithms if a not in allowed]
        if unknown or not self.algorithms:
            raise ValueError(f"algorithms for {self.task} are {', '.join(allowed)}; got {list(self.algorithms)}")
        if self.selection_metric not in METRICS[self.task]:
            raise ValueError(f"selection_metric for {self.task} is one of {', '.join(METRICS[self.task])}; "
                             f"got {self.selection_metric!r}")
        if self.positive_class is not None and self.task != "classification":
            raise ValueError("positive_class only applies to task: classification")
        if self.features and self.target in self.features:
            raise ValueError(f"the target {self.target!r} cannot also be a feature")
        return self

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.task][self.selection_metric]


class ModelCatalogue(_Strict):
    feature_sets: dict[str, FeatureSetConfig]
    models: dict[str, ModelConfig]

    @model_validator(mode="after")
    def _feature_sets_exist(self) -> ModelCatalogue:
        for name, model in self.models.items():
            if not name.isidentifier():
                raise ValueError(f"model name {name!r} must be an identifier")
            fs = self.feature_sets.get(model.feature_set)
            if fs is None:
                raise ValueError(f"model {name}: feature_set {model.feature_set!r} is not declared")
            if model.split.strategy == "time" and not fs.time:
                raise ValueError(f"model {name}: split strategy time needs a time column in feature set "
                                 f"{model.feature_set} (set its time:, or use strategy: auto or shuffle)")
            if model.split.strategy == "group" and not (model.split.group_by or fs.entity):
                raise ValueError(f"model {name}: split strategy group needs group_by (or an entity column in "
                                 f"feature set {model.feature_set})")
            if fs.columns:
                absent = [c for c in (model.target, *(model.features or ()), model.split.group_by)
                          if c and c not in fs.columns]
                if absent:
                    raise ValueError(f"model {name}: {', '.join(absent)} not among the columns of feature set "
                                     f"{model.feature_set} ({', '.join(fs.columns)})")
        return self


def load_models(path: str | os.PathLike | None = None) -> ModelCatalogue:
    """The model catalogue from ``path``, or where this environment keeps it (``PLATFORM_MODELS_FILE``,
    ``PLATFORM_CATALOGUE_DIR``, else the demo's); an empty catalogue when a catalogue folder has none."""
    from platform_assets.sources.config import catalogue_path

    where = Path(path) if path else catalogue_path("models")
    if where is None:
        return ModelCatalogue(feature_sets={}, models={})
    return load_validated(where, ModelCatalogue, "model catalogue")
