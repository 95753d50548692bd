"""Calendar parts of date and timestamp columns, as a scikit-learn transformer inside the model.

Kept inside the logged pipeline, so the served model takes the original date columns (as dates,
timestamps or ISO strings in JSON) and expands them itself, exactly as in training. The module is
pickled by value into the model (``cloudpickle.register_pickle_by_value``), so loading the model
does not need this project on the path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

DATE_PARTS = ("year", "month", "day", "day_of_week")
TIMESTAMP_PARTS = (*DATE_PARTS, "hour")


class DateParts(TransformerMixin, BaseEstimator):
    """Each input column → year, month, day, day_of_week (Monday 0) and, with ``hour``, the hour (UTC).

    Unparseable or missing values become NaN (imputed after this step).
    """

    def __init__(self, hour: bool = False):
        self.hour = hour

    def fit(self, X, y=None):
        self.feature_names_in_ = np.asarray(list(pd.DataFrame(X).columns), dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def _parts(self) -> tuple[str, ...]:
        return TIMESTAMP_PARTS if self.hour else DATE_PARTS

    def transform(self, X):
        frame = pd.DataFrame(X)
        out = []
        for col in frame.columns:
            values = frame[col]
            if not pd.api.types.is_datetime64_any_dtype(values):
                values = pd.to_datetime(values.astype(object), errors="coerce", utc=True, format="mixed")
            elif values.dt.tz is not None:
                values = values.dt.tz_convert("UTC")
            dt = values.dt
            parts = {"year": dt.year, "month": dt.month, "day": dt.day, "day_of_week": dt.dayofweek, "hour": dt.hour}
            out += [parts[p].astype("float64").to_numpy() for p in self._parts()]
        return np.column_stack(out) if out else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features=None):
        cols = input_features if input_features is not None else self.feature_names_in_
        return np.asarray([f"{c}_{p}" for c in cols for p in self._parts()], dtype=object)
