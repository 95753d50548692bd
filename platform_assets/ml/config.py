"""The model catalogue (platform_assets/models.yaml), validated by pydantic.

A feature set is either built by a named builder (the fleet's point-in-time features) or read
from any lake or warehouse table asset with the columns to use; a model names its task, feature
set, target, algorithms, selection metric and floor. Everything else is generated.
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
METRICS = {"classification": {"roc_auc": True, "pr_auc": True, "f1": True},
           "regression": {"rmse": False, "mae": False, "r2": True}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Split(_Strict):
    """Time-ordered split: the last ``test`` fraction is test, the ``validation`` fraction before it
    validation, the rest training. The test split is only ever reported, never used to choose."""

    validation: float = Field(default=0.2, gt=0, lt=1)
    test: float = Field(default=0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _room_for_training(self) -> Split:
        if self.validation + self.test >= 0.9:
            raise ValueError("validation + test must leave at least 10% for training")
        return self


class FeatureSetConfig(_Strict):
    builder: Literal["machine_hourly"] | None = None
    # Or an existing table asset, e.g. "lake/clean/wine" or "warehouse/marts/machine_daily_stats".
    table: str | None = None
    columns: tuple[str, ...] | None = None  # for table feature sets: the columns to keep (all if omitted)
    entity: str | None = None
    time: str | None = None  # ordering column for the time split; row order when absent
    online: bool = False

    @model_validator(mode="after")
    def _one_origin(self) -> FeatureSetConfig:
        if (self.builder is None) == (self.table is None):
            raise ValueError("give exactly one of builder or table")
        if self.online and not self.entity:
            raise ValueError("an online feature set needs an entity column (the lookup key)")
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

    @model_validator(mode="after")
    def _known_algorithms_and_metric(self) -> ModelConfig:
        allowed = CLASSIFIERS if self.task == "classification" else REGRESSORS
        unknown = [a for a in self.algorithms if a not in allowed]
        if unknown or not self.algorithms:
            raise ValueError(f"algorithms for {self.task} are {', '.join(allowed)}; got {list(self.algorithms)}")
        if self.selection_metric not in METRICS[self.task]:
            raise ValueError(f"selection_metric for {self.task} is one of {', '.join(METRICS[self.task])}")
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
            if model.feature_set not in self.feature_sets:
                raise ValueError(f"model {name}: feature_set {model.feature_set!r} is not declared")
            if not name.isidentifier():
                raise ValueError(f"model name {name!r} must be an identifier")
        return self


def load_models(path: str | os.PathLike | None = None) -> ModelCatalogue:
    return load_validated(Path(path or os.environ.get("PLATFORM_MODELS_FILE") or DEFAULT_MODELS),
                          ModelCatalogue, "model catalogue")
