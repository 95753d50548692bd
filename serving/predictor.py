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

import os
import threading
import time
from typing import TypedDict

import numpy as np
import pandas as pd


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
        self.model, self.tag = model, str(ref.tag)
        self.info = {"model": self.name, "bento_model": self.tag, **{k: v for k, v in ref.info.metadata.items()}}

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
        frame = pd.DataFrame.from_records(records)
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
        return predict_with(self.current(), frame, model=self.name, version=self.info.get("mlflow_version"),
                            bento_model=self.tag)


def predict_batch(slot: ModelSlot, records: list[dict]) -> list[tuple]:
    """Per record ``(about, prediction, probabilities)`` for records that many requests sent, merged
    by BentoML's adaptive batching: one input frame and one model call for the whole batch, where
    the model's fixed cost per call (~15 ms for a 150-tree forest, nearly the same for 1 record or
    1,000) is paid once. ``about`` (model, version, bento_model, classes) is one shared dict, so it
    is pickled once per response. If the batch as a whole is refused, each record is tried alone and
    a refused one comes back as ``(None, reason, None)``: one client's bad record must not fail the
    other requests of its batch."""
    try:
        return _scored(slot.predict(slot.frame(records)))
    except (InputError, ValueError, TypeError):
        out = []
        for record in records:
            try:
                out.extend(_scored(slot.predict(slot.frame([record]))))
            except (InputError, ValueError, TypeError) as exc:
                out.append((None, str(exc).removesuffix(" in record 0"), None))
        return out


def _scored(out: Prediction) -> list[tuple]:
    about = {"model": out["model"], "version": out["version"], "bento_model": out["bento_model"],
             "classes": out.get("classes")}
    probabilities = out.get("probabilities") or [None] * len(out["predictions"])
    return [(about, p, q) for p, q in zip(out["predictions"], probabilities, strict=True)]


def merge_batch(items: list[tuple]) -> Prediction:
    """A request's ``predict_batch`` items back in the service's shape, in the records' order.

    Raises InputError naming the first record the model refused, and ``StaleBatch`` when the
    request's records were split over two batches that a model reload fell between."""
    for i, (about, prediction, _) in enumerate(items):
        if about is None:
            raise InputError(f"record {i}: {prediction}")
    about = items[0][0]
    if any(item[0]["bento_model"] != about["bento_model"] for item in items):
        raise StaleBatch(about["model"])
    out: Prediction = {"model": about["model"], "version": about["version"],  # type: ignore[typeddict-item]
                       "bento_model": about["bento_model"], "predictions": [item[1] for item in items]}
    if about["classes"] is not None:
        out["classes"] = list(about["classes"])
        out["probabilities"] = [item[2] for item in items]
    return out


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
