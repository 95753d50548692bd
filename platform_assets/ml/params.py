"""Hyper-parameters per algorithm, as Dagster Config: they show and validate in the launchpad."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class RandomForestParams(dg.Config):
    n_estimators: int = Field(default=150, ge=1, le=2000)
    max_depth: int | None = Field(default=12, ge=1)
    min_samples_leaf: int = Field(default=2, ge=1)


class GradientBoostingParams(dg.Config):
    max_iter: int = Field(default=200, ge=1, le=5000, description="boosting rounds")
    learning_rate: float = Field(default=0.08, gt=0, le=1)
    max_depth: int | None = Field(default=6, ge=1)


class LogisticRegressionParams(dg.Config):
    C: float = Field(default=1.0, gt=0, description="inverse regularisation strength")
    max_iter: int = Field(default=2000, ge=10)


class LinearRegressionParams(dg.Config):
    fit_intercept: bool = True


PARAMS = {
    "random_forest": RandomForestParams,
    "gradient_boosting": GradientBoostingParams,
    "logistic_regression": LogisticRegressionParams,
    "linear_regression": LinearRegressionParams,
}
