"""Adaptive batching: the process that runs the models, behind the public ``/predict``.

A scikit-learn pipeline pays a fixed cost per call that dwarfs its cost per record, so requests that
arrive together are predicted together. ``PredictionRunner`` is a BentoML service that the public
service depends on (``bentoml.depends``); ``bentoml serve`` runs it as a process of its own, so the
model's CPU never competes for the front end's GIL. Each catalogue model gets an internal API
``predict_<model>`` declared with ``@bentoml.api(batchable=True)``. Its input is the request's
records as numbers (predictor.rows_of: a float64 matrix, or a structured array when some features
are text), so they travel pickled as one buffer and BentoML concatenates them into one batch (up to
``SERVING_MAX_BATCH_SIZE`` records); the runner builds one input frame, calls the model once and
answers a float matrix (version key, then probabilities), which BentoML splits back per request in
order. ``about_<model>`` names the versions behind the keys and ``refusals_<model>`` words why the
model refused a record (the error path only).

Batches start as soon as the model is free, with every record waiting (serving/dispatch.py); requests
that could not be answered within ``SERVING_MAX_LATENCY_MS`` are refused (503), which the front end
answers as ``overloaded`` with ``Retry-After``. Estimators run single-threaded (``ModelSlot``,
``one_thread_here``): one batch at a time per runner worker, and the front end's work (HTTP, tokens,
JSON, checks) runs on the other core. Both figures were chosen by measurement on two cores
(tests/benchmarks/bench_serving.py; README, "Serving").
"""

from __future__ import annotations

import os
import re

import bentoml
import numpy as np

from platform_assets.ml.config import load_models
from platform_assets.settings import load_local_defaults
from serving import dispatch
from serving.predictor import ModelSlot, predict_rows, refusals

load_local_defaults()
dispatch.install()  # batches start when the model is free, not after BentoML's learnt wait
MAX_BATCH_SIZE = int(os.environ.get("SERVING_MAX_BATCH_SIZE", "1000"))  # records, not requests
MAX_LATENCY_MS = int(os.environ.get("SERVING_MAX_LATENCY_MS", "1000"))
RUNNER_WORKERS = int(os.environ.get("SERVING_RUNNER_WORKERS", "1"))


def api_name(model: str) -> str:
    """The runner's API for a catalogue model (model names may hold characters a route cannot)."""
    return "predict_" + re.sub(r"\W", "_", model)


def about_name(model: str) -> str:
    """The runner's API naming the versions of a model it has served, by key (predictor.version_key)."""
    return "about_" + re.sub(r"\W", "_", model)


def refusals_name(model: str) -> str:
    """The runner's API saying why the model refuses records (the error path only)."""
    return "refusals_" + re.sub(r"\W", "_", model)


class _PredictionRunner:
    def __init__(self) -> None:
        self.slots = {name: ModelSlot(name) for name in load_models().models}


def _batched_api(model: str):
    def predict(self, rows: np.ndarray) -> np.ndarray:
        return predict_rows(self.slots[model], rows)

    predict.__name__ = predict.__qualname__ = api_name(model)
    return bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS,
                       route=f"/{api_name(model)}")(predict)


def _about_api(model: str):
    def about(self) -> dict:
        slot = self.slots[model]
        slot.current()
        return {repr(key): value for key, value in slot.abouts.items()}

    about.__name__ = about.__qualname__ = about_name(model)
    return bentoml.api(route=f"/{about_name(model)}")(about)


def _refusals_api(model: str):
    def why(self, rows: np.ndarray) -> list:
        return refusals(self.slots[model], rows)

    why.__name__ = why.__qualname__ = refusals_name(model)
    return bentoml.api(route=f"/{refusals_name(model)}")(why)


for _model in load_models().models:
    setattr(_PredictionRunner, api_name(_model), _batched_api(_model))
    setattr(_PredictionRunner, about_name(_model), _about_api(_model))
    setattr(_PredictionRunner, refusals_name(_model), _refusals_api(_model))

# The front end's client to the runner would otherwise renew its HTTP session every 100 requests,
# closing it under the requests still in flight on it (ServerDisconnectedError; bentoml 1.4.40,
# _bentoml_impl/client/proxy2.py SessionManager): one session for the life of the process.
# Its metrics and access log are nobody's (the front end publishes both) and cost per request.
PredictionRunner = bentoml.service(name="fleet_predictions_runner", workers=RUNNER_WORKERS, threads=1,
                                   traffic={"timeout": 60}, metrics={"enabled": False},
                                   logging={"access": {"enabled": False}},
                                   runner_connection={"max_requests": 2**31 - 1, "max_age": 10.0**9})(_PredictionRunner)
