"""A source contract and a model drafted from the data itself (pure: a frame in, catalogue entries out).

The rules, in order, on each column's present values (null markers and blanks are missing):
- type: ``int`` (every value a whole number), ``float``, ``bool`` (true/false, yes/no), ``date`` or
  ``timestamp`` (ISO 8601, or one common form, declared as the column's ``format``), ``json``
  (nested objects or arrays), else ``string``. The tests are the contract's own coercions, so what
  is inferred is what the platform then reads without quarantining a row.
- ``required`` when no value is missing; ``allowed`` for strings with at most ``MAX_CATEGORIES``
  distinct values, each seen twice on average; ``min``/``max`` for numbers, widened by ``MARGIN``
  of the observed span (never below 0 for data that is not negative).
- candidate primary keys: unique, complete int or string columns; the first whose name looks like
  an identifier becomes the feature set's entity (so it is never used as a feature).
- task from the target: classification for string, bool or an int with at most ``MAX_CLASSES``
  values; regression otherwise. Selection metric and floor: balanced accuracy above chance, or R²
  above 0 (better than predicting the mean).
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from platform_assets.sources.config import DEFAULT_NULL_VALUES, ColumnContract
from platform_assets.sources.contract import _coerce, _is_blank, common_date_format
from platform_assets.sources.parse import SOURCE_FILE, SOURCE_ROW

MAX_CATEGORIES = 20
MAX_CLASSES = 20
MARGIN = 0.1
_ID_NAME = re.compile(r"(^|_)(id|key|code|uuid)$|id$", re.IGNORECASE)


def snake_case(name: str) -> str:
    """A column or model name as a lower-case identifier ("Sepal Length (cm)" → "sepal_length_cm")."""
    text = re.sub(r"[^0-9a-zA-Z]+", "_", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))).strip("_").lower()
    text = text or "column"
    return f"c_{text}" if text[0].isdigit() else text


def _fits(values: pd.Series, kind: str, fmt: str | None = None) -> bool:
    return bool(_coerce(values, ColumnContract(type=kind, format=fmt)).notna().all())


def _nested(values: pd.Series) -> bool:
    return values.map(lambda v: isinstance(v, (dict, list))).any()


def _rounded(value: float, up: bool) -> float:
    """A limit rounded outwards to 2 significant digits of its own size (3.14159 → 3.2 up, 3.1 down)."""
    if value == 0:
        return 0.0
    exponent = math.floor(math.log10(abs(value))) - 1
    step = 10.0 ** exponent
    return round((math.ceil if up else math.floor)(value / step) * step, max(0, -exponent))


def infer_type(present: pd.Series) -> tuple[str, str | None]:
    """The column type of the present values, and the date format when it is not ISO 8601."""
    if len(present) == 0:
        return "string", None
    if _nested(present):
        return "json", None
    is_bool = present.map(lambda v: isinstance(v, bool)).all()
    if not is_bool:
        for kind in ("int", "float"):
            if _fits(present, kind):
                return kind, None
    if _fits(present, "bool"):
        return "bool", None
    text = present.astype(str)
    iso = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    fmt = None if iso.notna().all() else common_date_format(text)
    if iso.notna().all() or (fmt and _fits(text, "timestamp", fmt)):
        ts = iso if fmt is None else pd.to_datetime(text, errors="coerce", utc=True, format=fmt)
        midnight = ((ts.dt.hour == 0) & (ts.dt.minute == 0) & (ts.dt.second == 0)).all()
        return ("date" if midnight and text.str.len().max() <= 11 else "timestamp"), fmt
    return "string", None


def infer_column(values: pd.Series, null_values=DEFAULT_NULL_VALUES) -> dict[str, Any]:
    """The contract entry of one column (as it would be written in sources.yaml)."""
    missing = _is_blank(values.astype(object), null_values)
    present = values[~missing].astype(object).reset_index(drop=True)
    kind, fmt = infer_type(present)
    spec: dict[str, Any] = {"type": kind}
    if fmt:
        spec["format"] = fmt
    if not missing.any() and len(values):
        spec["required"] = True
    if kind in ("int", "float") and len(present):
        nums = pd.to_numeric(present)
        lo, hi = float(nums.min()), float(nums.max())
        pad = MARGIN * (hi - lo) if hi > lo else MARGIN * max(abs(hi), 1.0)
        low, high = _rounded(lo - pad, up=False), _rounded(hi + pad, up=True)
        if lo >= 0:
            low = max(low, 0.0)
        spec["min"], spec["max"] = (math.floor(low), math.ceil(high)) if kind == "int" else (low, high)
    if kind == "string" and len(present):
        distinct = present.astype(str).unique()
        if len(distinct) <= MAX_CATEGORIES and len(distinct) * 2 <= len(present):
            spec["allowed"] = sorted(distinct.tolist())
    return spec


def looks_like_id(column: str) -> bool:
    return bool(_ID_NAME.search(column))


def candidate_keys(frame: pd.DataFrame, columns: dict[str, dict]) -> list[str]:
    """Columns that identify a row: complete, unique, int or string; identifier-like names first."""
    keys = [c for c, spec in columns.items()
            if spec["type"] in ("int", "string") and spec.get("required") and frame[c].astype(str).is_unique]
    return sorted(keys, key=lambda c: not _ID_NAME.search(c))


def infer_task(target_spec: dict, target: pd.Series) -> str:
    if target_spec["type"] in ("string", "bool"):
        return "classification"
    if target_spec["type"] == "int" and pd.to_numeric(target, errors="coerce").nunique() <= MAX_CLASSES:
        return "classification"
    return "regression"


def draft_contract(frame: pd.DataFrame) -> tuple[dict[str, dict], dict[str, str]]:
    """Contract columns by clean name, and the renames {raw name: clean name} where they differ."""
    columns, rename = {}, {}
    for raw in frame.columns:
        if raw in (SOURCE_FILE, SOURCE_ROW):
            continue
        clean = snake_case(raw)
        while clean in columns:
            clean += "_"
        if clean != raw:
            rename[str(raw)] = clean
        columns[clean] = infer_column(frame[raw])
    return columns, rename


def draft_model(name: str, target: str, columns: dict[str, dict], values: pd.Series) -> dict:
    """The model entry for ``target``: task, every algorithm of it, a selection metric and a floor."""
    from platform_assets.ml.config import CLASSIFIERS, REGRESSORS

    task = infer_task(columns[target], values)
    if task == "classification":
        classes = values.dropna().nunique()
        metric, floor = "balanced_accuracy", round(1 / max(classes, 2) + 0.05, 2)  # chance level + 0.05
    else:
        metric, floor = "r2", 0.0  # at least as good as predicting the mean
    return {"task": task, "feature_set": name, "target": target,
            "algorithms": list(CLASSIFIERS if task == "classification" else REGRESSORS),
            "selection_metric": metric, "floor": floor}
