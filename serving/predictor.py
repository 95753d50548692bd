"""Champion models for serving: loaded from the BentoML model store, reloaded when a newer one lands.

The packaging asset imports each champion from the MLflow registry into the BentoML store as
``<model>:<version>``; ``ModelSlot`` serves ``<model>:latest`` and checks the store every
``MODEL_RELOAD_SECONDS`` (default 10), so a new champion is served without a restart.
Input records are checked against the model's MLflow signature: a missing column or a value of the
wrong type is a client error that names the field, never a server error.
Classifiers answer with their original labels (strings, integers or booleans, as trained) and the
probability of every class keyed by the class name: see ``Prediction``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from typing import TypedDict

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
REFUSED = -1.0  # the key of a row the model refused (predict_rows)


class _PredictionBase(TypedDict):
    model: str  # the catalogue's model name
    version: str | None  # the MLflow registry version served
    bento_model: str  # the BentoML model tag
    predictions: list  # per record: the class label as trained (str, int or bool), or a float (regression)


class Prediction(_PredictionBase, total=False):
    """What ``ModelSlot.predict`` returns (the service's response body adds request fields to it).

    Classifiers only: ``classes`` lists every label the model knows (as in ``predictions``) and
    ``probabilities`` holds, per record, ``{str(label): probability}`` over all classes (sums to 1).
    """

    classes: list
    probabilities: list[dict[str, float]]


def plain(value):
    """A label as plain JSON: numpy integers, floats and booleans become Python ones; text stays text."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    return str(value)


class InputError(ValueError):
    """The request does not fit the model's inputs (maps to HTTP 400)."""


class ModelSlot:
    """A served model: its estimator (``load_model``), its input columns and types, its tag and
    metadata. The batching front end keeps slots without the estimator: it checks requests against
    the signature and reports what is served, while the runner process predicts."""

    def __init__(self, name: str, reload_seconds: float | None = None, load_model: bool = True):
        self.name, self.load_model = name, load_model
        self.reload_seconds = reload_seconds if reload_seconds is not None else \
            float(os.environ.get("MODEL_RELOAD_SECONDS", "10"))
        self._lock = threading.Lock()
        self._checked = 0.0
        self.tag = None
        self.model = None
        self.columns: list[str] = []
        self.types: dict[str, str] = {}
        self.info: dict = {}
        self.key = 0.0
        self.abouts: dict[float, dict] = {}  # version key -> about, for every version this process served
        self._load()

    def _load(self) -> None:
        import bentoml
        import mlflow.sklearn
        from _bentoml_impl.frameworks.mlflow import MLFLOW_MODEL_FOLDER

        ref = bentoml.models.get(f"{self.name}:latest")
        model = mlflow.sklearn.load_model(ref.path_of(MLFLOW_MODEL_FOLDER)) if self.load_model else None
        # One thread per prediction: requests already run in parallel, and joblib's thread start-up
        # dominates small predict_proba calls (40 ms with n_jobs=-1 against 15 ms with 1, measured).
        estimator = model.steps[-1][1] if hasattr(model, "steps") else model
        if model is not None and "n_jobs" in estimator.get_params():
            estimator.set_params(n_jobs=1)
        # Likewise OpenMP (gradient boosting) and BLAS: one thread each, for the whole serving process.
        # Under load, OpenMP's threads spin-wait for busy cores (predict 7x slower here, measured).
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        from mlflow.models import Model

        signature = Model.load(ref.path_of(MLFLOW_MODEL_FOLDER)).signature
        self.columns = signature.inputs.input_names()
        self.types = {c.name: getattr(c.type, "name", str(c.type)) for c in signature.inputs.inputs}
        self.info = {"model": self.name, "bento_model": str(ref.tag), **{k: v for k, v in ref.info.metadata.items()}}
        if model is not None:
            about = {"model": self.name, "version": self.info.get("mlflow_version"), "bento_model": str(ref.tag),
                     "classes": [plain(c) for c in model.classes_] if hasattr(model, "predict_proba") else None}
            self.abouts = {**dict(list(self.abouts.items())[-7:]), version_key(str(ref.tag)): about}
        self.model, self.tag, self.key = model, str(ref.tag), version_key(str(ref.tag))

    def current(self):
        """The model to use now; reloads when the store has a newer ``latest``."""
        now = time.monotonic()
        if now - self._checked >= self.reload_seconds:
            with self._lock:
                if now - self._checked >= self.reload_seconds:
                    self._checked = now
                    import bentoml

                    if str(bentoml.models.get(f"{self.name}:latest").tag) != self.tag:
                        self._load()
        return self.model

    def frame(self, records: list[dict]) -> pd.DataFrame:
        """Records as the model's input frame, or InputError naming what is wrong."""
        if not records:
            raise InputError("records is empty: send at least one record")
        return self._validated(pd.DataFrame.from_records(records))

    def frame_of(self, rows: np.ndarray) -> pd.DataFrame:
        """Rows in the model's column order (``rows_of``) as its input frame: a float matrix as it is,
        a structured array (or an object matrix) through the same checks as records."""
        if rows.dtype == np.float64:
            return pd.DataFrame(rows, columns=self.columns, copy=False)
        if rows.dtype.names:  # numbers and text: the numbers are float64 fields already, text is checked
            for column in (c for c in self.columns if self.types[c] == "string"):
                bad = next((v for v in rows[column] if v is not None and not isinstance(v, str)), None)
                if bad is not None:
                    raise InputError(f"field {column!r} must be a string; got {bad!r}")
            return pd.DataFrame({c: rows[c] for c in self.columns})
        return self._validated(pd.DataFrame(rows, columns=self.columns))

    def _validated(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise InputError(f"missing field(s) {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''} "
                             f"for model {self.name}")
        frame = frame[self.columns].copy()
        numeric = [c for c in self.columns if self.types[c] in ("double", "float", "long", "integer")]
        # Columns that JSON already typed as numbers pass as they are; only object columns are inspected.
        for col in (c for c in numeric if frame[c].dtype == object):
            values = pd.to_numeric(frame[col], errors="coerce")
            bad = (frame[col].notna() & values.isna()) | frame[col].map(lambda v: isinstance(v, bool))
            if bad.any():
                raise InputError(f"field {col!r} must be a number; got {frame[col][bad].iloc[0]!r} "
                                 f"in record {int(np.flatnonzero(bad.to_numpy())[0])}")
            frame[col] = values
        if numeric:
            frame[numeric] = frame[numeric].astype("float64")
        for col in (c for c in self.columns if self.types[c] == "string"):
            bad = frame[col].notna() & ~frame[col].map(lambda v: isinstance(v, str))
            if bad.any():
                raise InputError(f"field {col!r} must be a string; got {frame[col][bad].iloc[0]!r}")
        return frame

    def predict(self, frame: pd.DataFrame) -> Prediction:
        one_thread_here()
        return predict_with(self.current(), frame, model=self.name, version=self.info.get("mlflow_version"),
                            bento_model=self.tag)


def version_key(tag: str) -> float:
    """A bento model tag as a number a float64 holds exactly (48 bits of its hash): the first column
    of ``predict_rows``' answer, so a request's records carry the version that predicted them."""
    return float(int.from_bytes(hashlib.blake2b(tag.encode(), digest_size=6).digest(), "big"))


NUMERIC = ("double", "float", "long", "integer")
_NUMBERS = {float, int, type(None)}


def rows_of(records: list[dict], columns: list[str], types: dict[str, str],
            numbers: np.ndarray | None = None) -> np.ndarray:
    """Records as the runner's input, so they travel as buffers, not as a Python object per value:
    a float64 matrix in the model's column order when every feature is a number (None is NaN), or a
    structured array (numbers as float64 fields, other features as object fields) when some are
    text or dates. ``numbers``: the numeric features as a matrix already (the contract's check made
    it). Every request of a model has the same dtype, so BentoML can concatenate them into a batch.
    InputError names a numeric feature that is not a number."""
    numeric = [c for c in columns if types[c] in NUMERIC]
    if numbers is None:
        values = [r.get(c) for r in records for c in numeric]
        if not set(map(type, values)) <= _NUMBERS:  # bool and text are refused, as the contract does
            i, column = next((i, c) for i, r in enumerate(records) for c in numeric if type(r.get(c)) not in _NUMBERS)
            raise InputError(f"field {column!r} must be a number; got {records[i].get(column)!r} in record {i}")
        try:
            numbers = np.array(values, dtype=np.float64).reshape(len(records), len(numeric))
        except OverflowError:
            raise InputError("a numeric field is beyond a float64") from None
    if len(numeric) == len(columns):
        return numbers
    rows = np.empty(len(records), dtype=np.dtype([(c, "f8" if types[c] in NUMERIC else "O") for c in columns]))
    for j, column in enumerate(numeric):
        rows[column] = numbers[:, j]
    for column in (c for c in columns if types[c] not in NUMERIC):
        rows[column] = [r.get(column) for r in records]
    return rows


def predict_rows(slot: ModelSlot, rows: np.ndarray) -> np.ndarray:
    """The runner's batch: one input frame and one model call for the records of all the requests
    BentoML's adaptive batching merged (the model's fixed cost per call, ~15 ms for a 150-tree
    forest, nearly the same for 1 record or 1,000, is paid once). Returns a float matrix, one row per
    record: the version key, then the probability of each class (``classes`` order) or the value.
    Numbers both ways, so the answer too travels as one buffer and is split per request without a
    Python object per record. If the batch as a whole is refused, each record is tried alone and a
    refused one comes back with the key ``REFUSED``: one client's bad record must not fail the
    other requests of its batch (``refusals`` then words why)."""
    model, key = slot.current(), slot.key
    try:
        values = _values(model, slot.frame_of(rows))
    except (InputError, ValueError, TypeError):
        parts = []
        for i in range(len(rows)):
            try:
                parts.append(_values(model, slot.frame_of(rows[i:i + 1])))
            except (InputError, ValueError, TypeError) as exc:
                log.warning("model %s refused a record: %s", slot.name, exc)
                parts.append(None)
        width = next((p.shape[1] for p in parts if p is not None), 1)
        values = np.vstack([p if p is not None else np.full((1, width), np.nan) for p in parts])
        keys = np.array([key if p is not None else REFUSED for p in parts])
        return np.column_stack([keys, values])
    return np.column_stack([np.full(len(values), key), values])


def refusals(slot: ModelSlot, rows: np.ndarray) -> list[str | None]:
    """Why the model refuses each row (None: it does not), for the error of a request ``predict_rows``
    marked ``REFUSED`` (the error path only)."""
    out: list[str | None] = []
    for i in range(len(rows)):
        try:
            _values(slot.current(), slot.frame_of(rows[i:i + 1]))
            out.append(None)
        except (InputError, ValueError, TypeError) as exc:
            out.append(str(exc).removesuffix(" in record 0"))
    return out


_thread_state = threading.local()


def one_thread_here() -> None:
    """One OpenMP/BLAS thread for predictions made on this thread. ``threadpool_limits`` sets
    OpenMP's thread count for the calling thread only, and predictions run on worker threads (the
    runner's, anyio's): without this a gradient-boosting model there started a thread per core,
    spinning for busy cores (measured: 109 ms CPU for one record against 23 ms limited)."""
    if not getattr(_thread_state, "limited", False):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        _thread_state.limited = True


def _values(model, frame: pd.DataFrame) -> np.ndarray:
    one_thread_here()
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(frame), dtype=np.float64)
    return np.asarray(model.predict(frame), dtype=np.float64).reshape(len(frame), 1)


def answer(out: np.ndarray, about: dict) -> Prediction:
    """A request's rows of ``predict_rows`` in the service's shape, equal to ``predict_with``'s.
    ``about`` is the version the rows' key names (the runner's ``about`` answer)."""
    values = out[:, 1:]
    if not np.isfinite(values).all():  # as JSONResponse would: no NaN in an answer
        raise ValueError(f"model {about['model']} answered a value that is not a finite number")
    prediction: Prediction = {"model": about["model"], "version": about["version"],  # type: ignore[typeddict-item]
                              "bento_model": about["bento_model"]}
    classes = about["classes"]
    if classes is None:
        prediction["predictions"] = values[:, 0].tolist()
        return prediction
    labels = [str(c) for c in classes]
    prediction["predictions"] = [classes[i] for i in values.argmax(axis=1).tolist()]
    prediction["classes"] = list(classes)
    prediction["probabilities"] = [dict(zip(labels, row)) for row in values.tolist()]
    return prediction


def key_of(out: np.ndarray, model: str) -> float:
    """The one version key of a request's rows. Raises InputError naming the first record the model
    refused (reason filled in by the caller), and ``StaleBatch`` when the request's records were
    split over two batches that a model reload fell between."""
    keys = out[:, 0]
    refused = np.flatnonzero(keys == REFUSED)
    if refused.size:
        raise RefusedRecord(int(refused[0]))
    if not (keys == keys[0]).all():
        raise StaleBatch(model)
    return float(keys[0])


class RefusedRecord(InputError):
    """The model refused the record at ``index`` of a request."""

    def __init__(self, index: int):
        super().__init__(f"record {index}")
        self.index = index


class StaleBatch(RuntimeError):
    """A request's records were predicted by two model versions (a reload between two batches)."""


def predict_with(pipeline, frame: pd.DataFrame, **about) -> Prediction:
    """Predictions of a fitted pipeline in the service's shape (``about``: model, version, bento_model)."""
    out: Prediction = {**about}  # type: ignore[typeddict-item]
    if hasattr(pipeline, "predict_proba"):
        proba = pipeline.predict_proba(frame)
        # Whole-number float labels (0.0/1.0 from older models) are served as integers, like new ones.
        classes = [plain(c) for c in pipeline.classes_]
        out["predictions"] = [classes[i] for i in proba.argmax(axis=1)]
        out["classes"] = classes
        out["probabilities"] = [dict(zip(map(str, classes), map(float, row))) for row in proba]
    else:
        out["predictions"] = [float(v) for v in pipeline.predict(frame)]
    return out
