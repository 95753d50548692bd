"""Training pieces with no I/O: input checks, splits, feature rules, scikit-learn pipelines, metrics, plots.

Classification targets may be integer, boolean or string labels, binary or multiclass. The labels
are kept as they are (floats holding whole numbers, e.g. 0.0/1.0, become integers), and the
scikit-learn estimators keep them in ``classes_``: the logged model predicts original labels.

Feature rules (recorded in each candidate's metadata under ``feature_rules``):
- entity, time, the feature set's labels (declared ``labels:`` or the builder's) and the target are
  never features unless listed in the model's ``features``;
- numbers are imputed (median) and scaled; booleans and strings are one-hot encoded (dense, at
  most ``MAX_CATEGORIES`` columns each, rarer values grouped);
- date and timestamp columns (typed so by the source contract) become year, month, day and
  day_of_week features, plus hour for timestamps that carry a time of day, inside the model;
- a string column with more than ``MAX_CATEGORIES`` distinct values, or with more than half its
  values distinct (and over 10 of them), is an identifier or free text: dropped;
- a column with no value at all is dropped.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
from typing import NamedTuple

import numpy as np
import pandas as pd

from platform_assets.ml.config import BINARY_ONLY, FeatureSetConfig, ModelConfig
from platform_assets.ml.features import BUILDER_NON_FEATURES

MAX_CATEGORIES = 50
# Below this many rows, native thread pools (OpenMP in gradient boosting, BLAS) run single-threaded.
SINGLE_THREAD_ROWS = 100_000
UNIQUE_FRACTION = 0.5
MIN_ROWS_PER_CLASS = 3  # one each for train, validation and test


@contextlib.contextmanager
def native_threads(rows: int):
    """Single-threaded OpenMP/BLAS for small data. Measured on the 2-core machine with other steps
    running: HistGradientBoosting's fit on 3,000 rows took 17-23 s with its default OpenMP threads and
    1.0-1.7 s with one (its threads spin-wait for busy cores); small fits gain nothing from threads."""
    if rows >= SINGLE_THREAD_ROWS:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


class TrainingInputError(ValueError):
    """The configuration does not fit the data; raised before any training starts."""


class Splits(NamedTuple):
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


class FeaturePlan(NamedTuple):
    """Which columns go in, how, and why the others do not."""

    numeric: list[str]
    categorical: list[str]
    dates: list[str]
    timestamps: list[str]
    dropped: dict[str, str]
    excluded: dict[str, str]

    @property
    def columns(self) -> list[str]:
        """The model's input columns (what serving must send)."""
        return [*self.numeric, *self.categorical, *self.dates, *self.timestamps]

    def rules(self) -> dict:
        expanded = {c: "year, month, day, day_of_week" for c in self.dates}
        expanded |= {c: "year, month, day, day_of_week, hour" for c in self.timestamps}
        return {"numeric": self.numeric, "categorical": self.categorical, "expanded": expanded,
                "dropped": self.dropped, "excluded": self.excluded}


def excluded_columns(model: ModelConfig, fs: FeatureSetConfig) -> dict[str, str]:
    """Columns that are never default features, with the reason."""
    out = {c: "label of the feature set" for c in (*fs.labels, *BUILDER_NON_FEATURES.get(fs.builder or "", ()))}
    if fs.entity:
        out[fs.entity] = "entity (row key)"
    if fs.time:
        out[fs.time] = "time column (orders the split)"
    if model.split.group_by:
        out[model.split.group_by] = "group_by column of the split"
    out[model.target] = "target"
    return out


def feature_columns(frame: pd.DataFrame, model: ModelConfig, fs: FeatureSetConfig, name: str) -> list[str]:
    """The model's candidate features: as configured, or every column but keys, time, labels and the target."""
    if model.features:
        missing = [c for c in model.features if c not in frame.columns]
        if missing:
            raise TrainingInputError(
                f"model {name}: feature column(s) {', '.join(missing)} not in feature set {model.feature_set} "
                f"(columns: {', '.join(frame.columns)})")
        return list(model.features)
    skip = excluded_columns(model, fs)
    return [c for c in frame.columns if c not in skip]


def _is_date_objects(values: pd.Series) -> bool:
    sample = values.dropna().head(200)
    return len(sample) > 0 and all(isinstance(v, dt.date) for v in sample)


def plan_features(frame: pd.DataFrame, model: ModelConfig, fs: FeatureSetConfig, name: str) -> FeaturePlan:
    """Apply the module's feature rules to the candidate columns (see the module docstring)."""
    columns = feature_columns(frame, model, fs, name)
    excluded = {} if model.features else {c: why for c, why in excluded_columns(model, fs).items()
                                          if c in frame.columns}
    numeric, categorical, dates, timestamps, dropped = [], [], [], [], {}
    for col in columns:
        values = frame[col]
        if values.isna().all():
            dropped[col] = "no values"
        elif pd.api.types.is_bool_dtype(values):
            categorical.append(col)
        elif pd.api.types.is_numeric_dtype(values):
            numeric.append(col)
        elif pd.api.types.is_datetime64_any_dtype(values):
            clock = values.dropna()
            clock = clock.dt.tz_convert("UTC") if clock.dt.tz is not None else clock
            has_time = bool((clock != clock.dt.normalize()).any())
            (timestamps if has_time else dates).append(col)
        elif _is_date_objects(values):
            (timestamps if isinstance(values.dropna().iloc[0], dt.datetime) else dates).append(col)
        else:
            present = values.dropna()
            distinct = present.astype(str).nunique()
            if distinct > MAX_CATEGORIES or (distinct > 10 and distinct > UNIQUE_FRACTION * len(present)):
                dropped[col] = (f"high cardinality: {distinct} distinct values in {len(present)} rows (rule: more "
                                f"than {MAX_CATEGORIES} distinct, or more than {UNIQUE_FRACTION:.0%} distinct)")
            else:
                categorical.append(col)
    plan = FeaturePlan(numeric, categorical, dates, timestamps, dropped, excluded)
    if not plan.columns:
        raise TrainingInputError(f"model {name}: no usable feature column in feature set {model.feature_set} "
                                 f"(dropped: {dropped or 'none'}; excluded: {', '.join(excluded) or 'none'})")
    return plan


def prepare_target(values: pd.Series, task: str, name: str, target: str) -> pd.Series:
    """The target as training uses it: float for regression; labels as they are for classification,
    except whole-number floats (0.0/1.0), which become integers."""
    if task == "regression":
        try:
            return values.astype(float)
        except (TypeError, ValueError) as exc:
            raise TrainingInputError(f"model {name}: regression target {target!r} is not numeric ({exc})") from None
    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)
    if pd.api.types.is_float_dtype(values):
        whole = np.isclose(values, np.round(values))
        if not whole.all():
            raise TrainingInputError(
                f"model {name}: classification target {target!r} holds fractional values (e.g. "
                f"{values[~whole].iloc[0]!r}); use task: regression, or integer, boolean or string labels")
        return values.astype("int64")
    if pd.api.types.is_integer_dtype(values):
        return values.astype("int64")
    return values.astype(str)


def check_inputs(frame: pd.DataFrame, model: ModelConfig, fs: FeatureSetConfig, name: str) -> pd.DataFrame:
    """Rows usable for training (target known, labels normalised), after the checks that must fail first."""
    if model.target not in frame.columns:
        raise TrainingInputError(f"model {name}: target column {model.target!r} not in feature set "
                                 f"{model.feature_set} (columns: {', '.join(frame.columns)})")
    if fs.time and fs.time not in frame.columns:
        raise TrainingInputError(f"model {name}: time column {fs.time!r} not in feature set {model.feature_set} "
                                 f"(columns: {', '.join(frame.columns)})")
    rows = frame[frame[model.target].notna()]
    if rows.empty:
        raise TrainingInputError(f"model {name}: the training window is empty (no row of {model.feature_set} "
                                 f"has a known {model.target})")
    rows = rows.assign(**{model.target: prepare_target(rows[model.target], model.task, name, model.target)})
    if model.task == "classification":
        classes = rows[model.target].unique()
        if len(classes) < 2:
            raise TrainingInputError(f"model {name}: target {model.target!r} has a single class "
                                     f"({classes[0]!r}); a classifier needs at least two")
        binary_only = [m for m in (model.selection_metric,) if m in BINARY_ONLY]
        if len(classes) > 2 and binary_only:
            raise TrainingInputError(
                f"model {name}: selection_metric {binary_only[0]} is for binary targets, but {model.target!r} has "
                f"{len(classes)} classes; use roc_auc (one-vs-rest), f1_macro, balanced_accuracy, accuracy or log_loss")
        if model.positive_class is not None:
            positive_class(sorted(classes), model.positive_class, name)
    return rows


def positive_class(classes, wanted, name: str = "model"):
    """The class binary metrics score: ``wanted`` matched by its text (``1`` matches 1 and 1.0 is never
    a label), or the greater of two labels when not configured."""
    classes = list(classes)
    if wanted is None:
        return classes[-1]
    for c in classes:
        if str(c).lower() == str(wanted).lower():
            return c
    raise TrainingInputError(f"{name}: positive_class {wanted!r} is not one of the target's classes "
                             f"({', '.join(map(repr, classes))})")


def split_strategy(model: ModelConfig, fs: FeatureSetConfig) -> str:
    """The strategy ``auto`` resolves to: time when the feature set has a time column, else shuffle."""
    if model.split.strategy == "auto":
        return "time" if fs.time else "shuffle"
    return model.split.strategy


def _by_time(rows: pd.DataFrame, model: ModelConfig, fs: FeatureSetConfig, name: str) -> Splits:
    """Oldest rows train, then validation, newest test. The cut points are times, so rows of one
    instant never straddle two splits."""
    if not fs.time:
        raise TrainingInputError(f"model {name}: split strategy time needs a time column in {model.feature_set}")
    times = rows[fs.time]
    if not pd.api.types.is_datetime64_any_dtype(times) and not pd.api.types.is_numeric_dtype(times):
        times = pd.to_datetime(times.astype(object), utc=True, errors="coerce", format="mixed")  # e.g. Parquet dates
    if times.isna().any():
        raise TrainingInputError(f"model {name}: time column {fs.time!r} has {int(times.isna().sum())} missing or "
                                 f"unreadable values; every row needs a time for the time split")
    order = times.sort_values(kind="stable").index
    rows, times = rows.loc[order], times.loc[order]
    t_valid = times.quantile(1 - model.split.validation - model.split.test, interpolation="nearest")
    t_test = times.quantile(1 - model.split.test, interpolation="nearest")
    return Splits(rows[times < t_valid], rows[(times >= t_valid) & (times < t_test)], rows[times >= t_test])


def _shuffled(rows: pd.DataFrame, model: ModelConfig, name: str) -> Splits:
    """Seeded shuffle; stratified by class for classification, so every split holds every class."""
    from sklearn.model_selection import train_test_split

    cfg, target = model.split, model.target
    stratify = model.task == "classification"
    if stratify:
        counts = rows[target].value_counts()
        few = counts[counts < MIN_ROWS_PER_CLASS]
        if len(few):
            raise TrainingInputError(
                f"model {name}: class(es) {', '.join(f'{c!r} ({n} rows)' for c, n in few.items())} of {target!r} "
                f"have fewer than {MIN_ROWS_PER_CLASS} rows: a stratified split needs one in each of train, "
                f"validation and test")
    try:
        rest, test = train_test_split(rows, test_size=cfg.test, random_state=cfg.seed,
                                      stratify=rows[target] if stratify else None)
        train, val = train_test_split(rest, test_size=cfg.validation / (1 - cfg.test), random_state=cfg.seed,
                                      stratify=rest[target] if stratify else None)
    except ValueError as exc:  # too few rows for the fractions
        raise TrainingInputError(f"model {name}: cannot split {len(rows)} rows as configured: {exc}") from None
    return Splits(*(part.sort_index() for part in (train, val, test)))


def _grouped(rows: pd.DataFrame, model: ModelConfig, fs: FeatureSetConfig, name: str) -> Splits:
    """Whole groups to one split (seeded), so one entity's rows never sit on both sides."""
    from sklearn.model_selection import GroupShuffleSplit

    cfg = model.split
    column = cfg.group_by or fs.entity
    if column not in rows.columns:
        raise TrainingInputError(f"model {name}: group_by column {column!r} not in feature set {model.feature_set}")
    if rows[column].isna().any():
        raise TrainingInputError(f"model {name}: group_by column {column!r} has {int(rows[column].isna().sum())} "
                                 f"null values; every row needs a group")
    groups = rows[column].astype(str)
    if groups.nunique() < 3:
        raise TrainingInputError(f"model {name}: group split needs at least 3 distinct {column!r} values; "
                                 f"found {groups.nunique()}")

    def cut(frame: pd.DataFrame, size: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        splitter = GroupShuffleSplit(n_splits=1, test_size=size, random_state=cfg.seed)
        keep, held = next(splitter.split(frame, groups=groups.loc[frame.index]))
        return frame.iloc[keep], frame.iloc[held]

    rest, test = cut(rows, cfg.test)
    train, val = cut(rest, cfg.validation / (1 - cfg.test))
    return Splits(*(part.sort_index() for part in (train, val, test)))


def split(rows: pd.DataFrame, model: ModelConfig, fs: FeatureSetConfig, name: str) -> Splits:
    """Training, validation and test rows by the model's split strategy (deterministic for a seed), refused
    when a split is empty or lacks a class."""
    strategy = split_strategy(model, fs)
    if strategy == "time":
        parts = _by_time(rows, model, fs, name)
    elif strategy == "group":
        parts = _grouped(rows, model, fs, name)
    else:
        parts = _shuffled(rows, model, name)
    for label, part in zip(Splits._fields, parts):
        if part.empty:
            raise TrainingInputError(f"model {name}: the {label} split is empty ({len(rows)} usable rows, "
                                     f"split strategy {strategy})")
    if model.task == "classification":
        classes = set(rows[model.target].unique())
        for label, part in zip(Splits._fields, parts):
            missing = classes - set(part[model.target].unique())
            if missing:
                why = ("every class needs training rows" if label == "train" else
                       f"{label} metrics (roc_auc, log_loss, balanced accuracy) and the gate need every class")
                hint = " (try split strategy shuffle, which stratifies by class)" if strategy != "shuffle" else ""
                raise TrainingInputError(
                    f"model {name}: the {label} split lacks class(es) {', '.join(map(repr, sorted(missing, key=str)))} "
                    f"of {model.target!r} under split strategy {strategy}: {why}{hint}")
    return parts


def split_by_time(rows: pd.DataFrame, model: ModelConfig, fs: FeatureSetConfig, name: str) -> Splits:
    """Former name of :func:`split` (the benchmark uses it)."""
    return split(rows, model, fs, name)


def build_pipeline(task: str, algorithm: str, params: dict, numeric: list[str], categorical: list[str],
                   dates: list[str] = (), timestamps: list[str] = ()):
    """Preprocessing (impute, scale, dense one-hot, date parts) and the estimator, as one Pipeline.

    The one-hot output is dense (``sparse_output=False``) and capped at ``MAX_CATEGORIES`` columns per
    feature, so estimators that need dense input (gradient boosting) never get a sparse matrix.
    """
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

    from platform_assets.ml.dateparts import DateParts

    estimators = {
        ("classification", "random_forest"): lambda p: RandomForestClassifier(class_weight="balanced", n_jobs=-1,
                                                                               random_state=0, **p),
        ("classification", "gradient_boosting"): lambda p: HistGradientBoostingClassifier(random_state=0, **p),
        ("classification", "logistic_regression"): lambda p: LogisticRegression(class_weight="balanced", **p),
        ("regression", "random_forest"): lambda p: RandomForestRegressor(n_jobs=-1, random_state=0, **p),
        ("regression", "gradient_boosting"): lambda p: HistGradientBoostingRegressor(random_state=0, **p),
        ("regression", "linear_regression"): lambda p: LinearRegression(**p),
    }

    def numbers():
        return [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", StandardScaler())]

    parts = [
        ("numeric", Pipeline(numbers()), list(numeric)),
        ("categorical", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                                  ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", sparse_output=False,
                                                           max_categories=MAX_CATEGORIES))]), list(categorical)),
    ]
    if dates:
        parts.append(("dates", Pipeline([("parts", DateParts()), *numbers()]), list(dates)))
    if timestamps:
        parts.append(("timestamps", Pipeline([("parts", DateParts(hour=True)), *numbers()]), list(timestamps)))
    prep = ColumnTransformer(parts, sparse_threshold=0.0)
    return Pipeline([("prep", prep), ("model", estimators[(task, algorithm)](params))])


def pipeline_for(task: str, algorithm: str, params: dict, plan: FeaturePlan):
    return build_pipeline(task, algorithm, params, plan.numeric, plan.categorical, plan.dates, plan.timestamps)


def split_columns(frame: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[str]]:
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    return numeric, [c for c in columns if c not in numeric]


def metrics(task: str, pipeline, X: pd.DataFrame, y: pd.Series, positive=None) -> dict[str, float]:
    """Validation or test metrics. Classification: accuracy, balanced_accuracy, f1_macro, log_loss and
    roc_auc (one-vs-rest macro when multiclass) always; pr_auc and f1 of ``positive`` (default: the
    greater label) when binary. Regression: rmse, mae, r2."""
    return scores(task, pipeline, X, y, positive)[0]


def scores(task: str, pipeline, X: pd.DataFrame, y: pd.Series, positive=None) -> tuple[dict[str, float], np.ndarray]:
    """:func:`metrics` and the predictions they were computed from (for classification the most probable
    class, which is what ``predict`` returns), so plots need no second pass over ``X``."""
    from sklearn import metrics as m

    if task != "classification":
        pred = pipeline.predict(X)
        return {"rmse": float(np.sqrt(m.mean_squared_error(y, pred))), "mae": float(m.mean_absolute_error(y, pred)),
                "r2": float(m.r2_score(y, pred)), "rows": float(len(y))}, pred
    classes = list(pipeline.classes_)
    y = np.asarray(y)
    proba = pipeline.predict_proba(X)
    pred = np.asarray(pipeline.classes_)[proba.argmax(axis=1)]
    out = {"accuracy": float(m.accuracy_score(y, pred)),
           "balanced_accuracy": float(m.balanced_accuracy_score(y, pred)),
           "f1_macro": float(m.f1_score(y, pred, labels=classes, average="macro", zero_division=0)),
           "log_loss": float(m.log_loss(y, proba, labels=classes)), "rows": float(len(y))}
    present = set(y.tolist())
    if len(classes) == 2:
        pos = positive_class(classes, positive)
        score, truth = proba[:, classes.index(pos)], y == pos
        both = 0 < truth.sum() < len(truth)
        out |= {"roc_auc": float(m.roc_auc_score(truth, score)) if both else float("nan"),
                "pr_auc": float(m.average_precision_score(truth, score)) if both else float("nan"),
                "f1": float(m.f1_score(truth, pred == pos, zero_division=0)), "positives": float(truth.sum())}
    else:
        every = present >= set(classes)
        out["roc_auc"] = float(m.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes)) \
            if every else float("nan")
    return out, pred


def per_class(classes, y: pd.Series, pred) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class (keyed by the label as text)."""
    from sklearn.metrics import precision_recall_fscore_support

    classes = list(classes)
    p, r, f, s = precision_recall_fscore_support(np.asarray(y), np.asarray(pred), labels=classes, zero_division=0)
    return {str(c): {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)}


def metric_drop(val: float, test: float, higher_is_better: bool) -> float:
    """How much worse test is than validation, relative to the validation value's magnitude (0 when not worse)."""
    if val is None or test is None or np.isnan(val) or np.isnan(test):
        return float("nan")
    worse = (val - test) if higher_is_better else (test - val)
    return max(0.0, worse) / max(abs(val), 1e-12)


def collapsed(val: float, test: float, higher_is_better: bool, max_drop: float | None) -> bool:
    """The gate's collapse rule: test worse than validation by more than ``max_drop`` (relative, see
    :func:`metric_drop`). Off when ``max_drop`` is None; a metric that could not be computed is no collapse."""
    drop = metric_drop(val, test, higher_is_better)
    return max_drop is not None and not np.isnan(drop) and drop > max_drop


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


def confusion_matrix_png(y_true, y_pred, title: str, labels=None) -> bytes:
    """Confusion matrix with the class names on both axes (``labels`` in order; default: sorted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    labels = list(labels) if labels is not None else sorted(set(np.asarray(y_true).tolist()) |
                                                            set(np.asarray(y_pred).tolist()), key=str)
    matrix = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=np.asarray(labels))
    size = max(3.6, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ConfusionMatrixDisplay(matrix, display_labels=[str(c) for c in labels]).plot(ax=ax, colorbar=False,
                                                                               xticks_rotation=45)
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
