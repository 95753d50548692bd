"""Adaptive batching: the process that runs the models, behind the public ``/predict``.

A scikit-learn pipeline pays a fixed cost per call that dwarfs its cost per record (the demo's
150-tree forest: ~15 ms for 1 record, ~20 ms for 1,000, with one thread), so requests that arrive
together are predicted together. ``PredictionRunner`` is a BentoML service that the public service
depends on (``bentoml.depends``); ``bentoml serve`` runs it as a process of its own, so the model's
CPU never competes for the front end's GIL. Each catalogue model gets an internal API
``predict_<model>`` declared with ``@bentoml.api(batchable=True)``: BentoML's dispatcher merges the
records of the requests waiting (up to ``SERVING_MAX_BATCH_SIZE`` records), the runner builds one
input frame and calls the model once, and the dispatcher hands each request its own records back,
in order. Requests that would wait longer than ``SERVING_MAX_LATENCY_MS`` are refused by the
dispatcher (503), which the front end answers as ``overloaded`` with ``Retry-After``.

Estimators run single-threaded (``ModelSlot``): one batch at a time per runner worker, and the front
end's work (HTTP, tokens, JSON, checks) runs on the other core. Both figures were chosen by
measurement on two cores (tests/benchmarks/bench_serving.py; README, "Serving").
"""

from __future__ import annotations

import os
import re

import bentoml

from platform_assets.ml.config import load_models
from platform_assets.settings import load_local_defaults
from serving.predictor import ModelSlot, predict_batch

load_local_defaults()
MAX_BATCH_SIZE = int(os.environ.get("SERVING_MAX_BATCH_SIZE", "1000"))  # records, not requests
MAX_LATENCY_MS = int(os.environ.get("SERVING_MAX_LATENCY_MS", "1000"))
RUNNER_WORKERS = int(os.environ.get("SERVING_RUNNER_WORKERS", "1"))


def api_name(model: str) -> str:
    """The runner's API for a catalogue model (model names may hold characters a route cannot)."""
    return "predict_" + re.sub(r"\W", "_", model)


class _PredictionRunner:
    def __init__(self) -> None:
        self.slots = {name: ModelSlot(name) for name in load_models().models}


def _batched_api(model: str):
    def predict(self, records: list) -> list:
        return predict_batch(self.slots[model], records)

    predict.__name__ = predict.__qualname__ = api_name(model)
    return bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS,
                       route=f"/{api_name(model)}")(predict)


for _model in load_models().models:
    setattr(_PredictionRunner, api_name(_model), _batched_api(_model))

# The front end's client to the runner would otherwise renew its HTTP session every 100 requests,
# closing it under the requests still in flight on it (ServerDisconnectedError; bentoml 1.4.40,
# _bentoml_impl/client/proxy2.py SessionManager): one session for the life of the process.
PredictionRunner = bentoml.service(name="fleet_predictions_runner", workers=RUNNER_WORKERS, threads=1,
                                   traffic={"timeout": 60},
                                   runner_connection={"max_requests": 2**31 - 1, "max_age": 10.0**9})(_PredictionRunner)
