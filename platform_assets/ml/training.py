"""Training pieces with no I/O: input checks, the time split, scikit-learn pipelines, metrics, plots."""

from __future__ import annotations

import base64
import io
from typing import NamedTuple

import numpy as np
import pandas as pd

from platform_assets.ml.config import FeatureSetConfig, ModelConfig

EXCLUDED = ("source_cutoff", "failure_within_24h", "hours_to_failure")


class TrainingInputError(ValueError):
    """The configuration does not fit the data; raised before any training starts."""


class Splits(NamedTuple):
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def feature_columns(frame: pd.DataFrame, model: ModelConfig, fs: FeatureSetConfig, name: str) -> list[str]:
    """The model's features: as configured, or every column but keys, time, labels and the target."""
    if model.features:
        missing = [c for c in model.features if c not in frame.columns]
        if missing:
            raise TrainingInputError(
                f"model {name}: feature column(s) {', '.join(missing)} not in feature set {model.feature_set} "
                f"(columns: {', '.join(frame.columns)})")
        return list(model.features)
    skip = {model.target, fs.entity, fs.time, *EXCLUDED}
    return [c for c in frame.columns if c not in skip]


def check_inputs(frame: pd.DataFrame, model: ModelConfig, fs: FeatureSetConfig, name: str) -> pd.DataFrame:
    """Rows usable for training (target known), after the checks that must fail before training."""
    if model.target not in frame.columns:
        raise TrainingInputError(f"model {name}: target column {model.target!r} not in feature set "
                                 f"{model.feature_set} (columns: {', '.join(frame.columns)})")
    if fs.time and fs.time not in frame.columns:
        raise TrainingInputError(f"model {name}: time column {fs.time!r} not in feature set {model.feature_set}")
    rows = frame[frame[model.target].notna()]
    if rows.empty:
        raise TrainingInputError(f"model {name}: the training window is empty (no row of {model.feature_set} "
                                 f"has a known {model.target})")
    if model.task == "classification" and rows[model.target].nunique() < 2:
        raise TrainingInputError(f"model {name}: target {model.target!r} has a single class "
                                 f"({rows[model.target].iloc[0]!r}); a classifier needs at least two")
    return rows


def split_by_time(rows: pd.DataFrame, model: ModelConfig, fs: FeatureSetConfig, name: str) -> Splits:
    """Oldest rows train, then validation, newest test (row order when the feature set has no time).

    With a time column the cut points are times, so rows of one instant never straddle two splits.
    """
    if fs.time:
        rows = rows.sort_values(fs.time, kind="stable")
        times = rows[fs.time]
        t_valid = times.quantile(1 - model.split.validation - model.split.test, interpolation="nearest")
        t_test = times.quantile(1 - model.split.test, interpolation="nearest")
        parts = Splits(rows[times < t_valid], rows[(times >= t_valid) & (times < t_test)], rows[times >= t_test])
    else:
        n = len(rows)
        a, b = int(n * (1 - model.split.validation - model.split.test)), int(n * (1 - model.split.test))
        parts = Splits(rows.iloc[:a], rows.iloc[a:b], rows.iloc[b:])
    for label, part in zip(Splits._fields, parts):
        if part.empty:
            raise TrainingInputError(f"model {name}: the {label} split is empty ({len(rows)} usable rows)")
    if model.task == "classification" and parts.train[model.target].nunique() < 2:
        raise TrainingInputError(f"model {name}: the training split holds a single class of {model.target!r}")
    return parts


def build_pipeline(task: str, algorithm: str, params: dict, numeric: list[str], categorical: list[str]):
    """Preprocessing (impute, scale, one-hot) and the estimator, as one scikit-learn Pipeline."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    estimators = {
        ("classification", "random_forest"): lambda p: RandomForestClassifier(class_weight="balanced", n_jobs=-1,
                                                                               random_state=0, **p),
        ("classification", "gradient_boosting"): lambda p: HistGradientBoostingClassifier(random_state=0, **p),
        ("classification", "logistic_regression"): lambda p: LogisticRegression(class_weight="balanced", **p),
        ("regression", "random_forest"): lambda p: RandomForestRegressor(n_jobs=-1, random_state=0, **p),
        ("regression", "gradient_boosting"): lambda p: HistGradientBoostingRegressor(random_state=0, **p),
        ("regression", "linear_regression"): lambda p: LinearRegression(**p),
    }
    prep = ColumnTransformer([
        ("numeric", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                              ("scale", StandardScaler())]), numeric),
        ("categorical", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                                  ("onehot", OneHotEncoder(handle_unknown="ignore"))]), categorical),
    ])
    return Pipeline([("prep", prep), ("model", estimators[(task, algorithm)](params))])


def split_columns(frame: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[str]]:
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    return numeric, [c for c in columns if c not in numeric]


def metrics(task: str, pipeline, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    from sklearn import metrics as m

    if task == "classification":
        y = y.astype(int)
        proba = pipeline.predict_proba(X)[:, 1]
        pred = (proba >= 0.5).astype(int)
        both = y.nunique() > 1
        return {"roc_auc": float(m.roc_auc_score(y, proba)) if both else float("nan"),
                "pr_auc": float(m.average_precision_score(y, proba)) if both else float("nan"),
                "f1": float(m.f1_score(y, pred, zero_division=0)),
                "positives": float(y.sum()), "rows": float(len(y))}
    pred = pipeline.predict(X)
    return {"rmse": float(np.sqrt(m.mean_squared_error(y, pred))), "mae": float(m.mean_absolute_error(y, pred)),
            "r2": float(m.r2_score(y, pred)), "rows": float(len(y))}


def better(a: float | None, b: float | None, higher_is_better: bool) -> bool:
    """Is ``a`` strictly better than ``b``? A missing ``b`` loses; a missing ``a`` never wins."""
    if a is None or np.isnan(a):
        return False
    if b is None or np.isnan(b):
        return True
    return a > b if higher_is_better else a < b


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def confusion_matrix_png(y_true, y_pred, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ConfusionMatrixDisplay.from_predictions(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int), ax=ax,
                                            colorbar=False)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def residuals_png(y_true, y_pred, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    ax.scatter(y_pred, np.asarray(y_true) - np.asarray(y_pred), s=6, alpha=0.5)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual - predicted")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def png_markdown(png: bytes, alt: str) -> str:
    """A PNG inline in Markdown metadata: the Dagster UI shows the picture."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
