"""The prediction service: the champion models behind authenticated HTTP endpoints.

    bentoml serve serving.service:FleetPredictions --port 23001      (or `make serve`)

- ``POST /predict``: ``{"model": ..., "records": [...]}`` or ``{"model": ..., "machine_ids": [...]}``
  (features from the online store) → predictions, class probabilities, model name and version.
- ``GET /models``: registered models with versions, aliases and key metrics (MLflow registry).
- ``POST /train``: launches ``ml_pipeline`` in Dagster through its GraphQL API → run id;
  ``GET /train/<run_id>``: the run's status.
- ``GET /metrics``: BentoML's Prometheus metrics and ours; ``/livez`` and ``/readyz`` are open.
Every prediction is also logged to the warehouse (``serving.predictions``), off the request path.
Every other endpoint needs a bearer JWT with the right role (serving/auth.py).
"""

from __future__ import annotations

import os

import bentoml
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from platform_assets.ml.config import load_models
from platform_assets.settings import load_local_defaults
from serving.auth import JWTAuthMiddleware
from serving.prediction_log import PredictionLog
from serving.predictor import InputError, ModelSlot

load_local_defaults()
CATALOGUE = load_models()
MODEL_NAMES = list(CATALOGUE.models)
MAX_RECORDS = int(os.environ.get("PREDICTION_MAX_RECORDS", "1000"))

PREDICTIONS = Counter("platform_predictions", "Predictions served", ["model", "outcome"])
FEATURE_LOOKUPS = Counter("platform_feature_lookups", "Online-store lookups", ["result"])
ERRORS = Counter("platform_prediction_errors", "Rejected or failed prediction requests", ["reason"])

_state: dict = {}


def _models_handler(request: Request) -> JSONResponse:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    prefix = os.environ.get("MLFLOW_REGISTRY_PREFIX", "")
    out = []
    for name in MODEL_NAMES:
        registered = f"{prefix}{name}"
        versions = client.search_model_versions(f"name = '{registered}'")
        aliases = dict(client.get_registered_model(registered).aliases) if versions else {}
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        metric = CATALOGUE.models[name].selection_metric
        rows = [{"version": v.version, "algorithm": v.tags.get("algorithm"), "aliases": by_version.get(v.version, []),
                 f"val_{metric}": _float(v.tags.get(f"val_{metric}")), "run_id": v.run_id}
                for v in sorted(versions, key=lambda v: int(v.version), reverse=True)[:20]]
        slot = _state.get("slots", {}).get(name)
        out.append({"model": name, "registered_name": registered, "task": CATALOGUE.models[name].task,
                    "aliases": aliases, "versions": rows, "serving": slot.info if slot else None})
    return JSONResponse({"models": out})


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _train_status_handler(request: Request) -> JSONResponse:
    from dagster_graphql import DagsterGraphQLClientError

    try:
        status = _dagster().get_run_status(request.path_params["run_id"])
    except DagsterGraphQLClientError as exc:
        return JSONResponse({"error": f"unknown run or Dagster unavailable: {exc}"}, status_code=404)
    return JSONResponse({"run_id": request.path_params["run_id"], "status": status.value})


def _resolved(name: str):
    """A platform resource with today's settings (imported late: resources pull in Spark's client)."""
    from resources import build_resources

    return build_resources(resolved=True)[name]


def _dagster():
    from urllib.parse import urlparse

    from dagster_graphql import DagsterGraphQLClient

    url = urlparse(os.environ.get("DAGSTER_GRAPHQL_URL", "http://127.0.0.1:23000/graphql"))
    return DagsterGraphQLClient(url.hostname, port_number=url.port, use_https=url.scheme == "https")


extra = Starlette(routes=[Route("/models", _models_handler, methods=["GET"]),
                          Route("/train/{run_id}", _train_status_handler, methods=["GET"])])


@bentoml.asgi_app(extra, path="/")
class _FleetPredictions:
    def __init__(self) -> None:
        self.slots = {name: ModelSlot(name) for name in MODEL_NAMES}
        _state["slots"] = self.slots
        self.prediction_log = PredictionLog(lambda: _resolved("warehouse"))
        self.online_store = _resolved("online_store")  # once, not per request

    @bentoml.api(route="/predict")
    def predict(self, model: str = MODEL_NAMES[0], records: list[dict] | None = None,
                machine_ids: list[str] | None = None) -> dict:
        slot = self.slots.get(model)
        if slot is None:
            ERRORS.labels("unknown_model").inc()
            raise bentoml.exceptions.InvalidArgument(f"unknown model {model!r}; known: {', '.join(self.slots)}")
        if (records is None) == (machine_ids is None):
            ERRORS.labels("bad_request").inc()
            raise bentoml.exceptions.InvalidArgument("send exactly one of records or machine_ids")
        size = len(records if records is not None else machine_ids)
        if size > MAX_RECORDS:
            ERRORS.labels("too_large").inc()
            raise bentoml.exceptions.InvalidArgument(f"{size} records is more than the limit of {MAX_RECORDS}")
        if machine_ids is not None:
            records = self._online_features(model, machine_ids)
        try:
            frame = slot.frame(records)
        except InputError as exc:
            ERRORS.labels("invalid_input").inc()
            raise bentoml.exceptions.InvalidArgument(str(exc)) from None
        try:
            out = slot.predict(frame)
        except (ValueError, TypeError) as exc:  # the model refused these values: the client's to fix
            ERRORS.labels("invalid_input").inc()
            raise bentoml.exceptions.InvalidArgument(f"input rejected by model {model}: {exc}") from None
        for p in out["predictions"]:
            PREDICTIONS.labels(model, str(p) if "probabilities" in out else "value").inc()
        self.prediction_log.add(model, out["version"], out["predictions"], out.get("probabilities"), machine_ids)
        if machine_ids is not None:
            out["machine_ids"] = machine_ids
        return out

    def _online_features(self, model: str, machine_ids: list[str]) -> list[dict]:
        if not machine_ids:
            raise bentoml.exceptions.InvalidArgument("machine_ids is empty")
        feature_set = CATALOGUE.models[model].feature_set
        rows = self.online_store.read(feature_set, machine_ids)
        unknown = [m for m, row in rows.items() if row is None]
        FEATURE_LOOKUPS.labels("hit").inc(len(rows) - len(unknown))
        if unknown:
            FEATURE_LOOKUPS.labels("miss").inc(len(unknown))
            ERRORS.labels("unknown_machine").inc()
            raise bentoml.exceptions.NotFound(f"no online features for machine(s) {', '.join(unknown)}")
        return [rows[m] for m in machine_ids]

    @bentoml.api(route="/train")
    def train(self) -> dict:
        """Launch ml_pipeline in Dagster; the run id comes back at once (training runs asynchronously)."""
        from dagster_graphql import DagsterGraphQLClientError

        try:
            run_id = _dagster().submit_job_execution("ml_pipeline")
        except DagsterGraphQLClientError as exc:
            raise bentoml.exceptions.ServiceUnavailable(f"Dagster did not accept the run: {exc}") from None
        return {"run_id": run_id, "status_url": f"/train/{run_id}"}


for _name in MODEL_NAMES:  # model references at class level, so a built Bento carries the models
    setattr(_FleetPredictions, f"model_{_name}", bentoml.models.BentoModel(f"{_name}:latest"))

# Two threads: predictions release the GIL in numpy/scikit-learn, so two overlap on two cores.
FleetPredictions = bentoml.service(name="fleet_predictions", traffic={"timeout": 60}, threads=2)(_FleetPredictions)
FleetPredictions.add_asgi_middleware(JWTAuthMiddleware)
