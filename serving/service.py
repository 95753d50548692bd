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

The HTTP contract is ours, not derived from Python signatures: the routes are a Starlette app mounted
in the BentoML service, ``/docs.json`` is serving/contract.py's document built from the served
models' signatures, requests are checked against the same description, and every error has one
body. Overload is bounded: ``SERVING_MAX_CONCURRENCY`` requests run, ``SERVING_MAX_QUEUE`` wait, and
any more get 503 with ``Retry-After`` at once (``Admission``), so latency cannot grow without limit.
"""

from __future__ import annotations

import asyncio
import logging
import os

import anyio
import bentoml
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from platform_assets.ml.config import load_models
from platform_assets.settings import load_local_defaults
from serving import contract
from serving.auth import OPEN_PATHS, JWTAuthMiddleware
from serving.contract import FeatureSpec, RequestError
from serving.prediction_log import PredictionLog
from serving.predictor import InputError, ModelSlot

load_local_defaults()
CATALOGUE = load_models()
MODEL_NAMES = list(CATALOGUE.models)
MAX_CONCURRENCY = int(os.environ.get("SERVING_MAX_CONCURRENCY", "2"))  # predictions hold the GIL: ~cores
MAX_QUEUE = int(os.environ.get("SERVING_MAX_QUEUE", "16"))
RETRY_AFTER_SECONDS = 1
logger = logging.getLogger("fleet_predictions")

PREDICTIONS = Counter("platform_predictions", "Predictions served", ["model", "outcome"])
FEATURE_LOOKUPS = Counter("platform_feature_lookups", "Online-store lookups", ["result"])
ERRORS = Counter("platform_prediction_errors", "Rejected or failed prediction requests", ["reason"])

_state: dict = {}


def _models_handler(request: Request) -> JSONResponse:
    from mlflow.exceptions import MlflowException

    try:
        return _models()
    except (MlflowException, OSError) as exc:  # the registry is down: the client may retry
        raise _unavailable(f"MLflow registry unavailable: {str(exc)[:300]}") from None


def _models() -> JSONResponse:
    from mlflow import MlflowClient

    from resources.mlflow_tracking import registered_name

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    prefix = os.environ.get("MLFLOW_REGISTRY_PREFIX", "")
    out = []
    for name in MODEL_NAMES:
        registered = registered_name(prefix, name)
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


def _unavailable(what: str) -> RequestError:
    return RequestError(503, "unavailable", what, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def _train_status_handler(request: Request) -> JSONResponse:
    from dagster_graphql import DagsterGraphQLClientError

    run_id = request.path_params["run_id"]
    try:
        status = _dagster().get_run_status(run_id)
    except DagsterGraphQLClientError as exc:
        if exc.args and exc.args[0] in ("RunNotFoundError", "PipelineNotFoundError", "PythonError"):
            raise RequestError(404, "unknown_run", f"no run {run_id!r} in Dagster") from None
        raise _unavailable(f"Dagster unavailable: {exc}") from None
    return JSONResponse({"run_id": run_id, "status": status.value})


def _train_handler(request: Request) -> JSONResponse:
    """Launch ml_pipeline in Dagster; the run id comes back at once (training runs asynchronously)."""
    from dagster_graphql import DagsterGraphQLClientError

    try:
        run_id = _dagster().submit_job_execution("ml_pipeline")
    except DagsterGraphQLClientError as exc:
        raise _unavailable(f"Dagster did not accept the run: {exc}") from None
    return JSONResponse({"run_id": run_id, "status_url": f"/train/{run_id}"})


def _service():
    service = _state.get("service")
    if service is None:
        raise _unavailable("the service is starting")
    return service


def _specs() -> dict[str, FeatureSpec]:
    return {name: FeatureSpec.of(slot) for name, slot in _service().slots.items()}


async def _predict_handler(request: Request) -> JSONResponse:
    body, content_type, specs = await request.body(), request.headers.get("content-type"), _specs()

    def work() -> dict:  # parsing and checks too: off the event loop, which must keep answering
        return _service().predict_parsed(contract.parse_predict(body, content_type, specs))

    return JSONResponse(await anyio.to_thread.run_sync(work))


async def _openapi_handler(request: Request) -> JSONResponse:
    return JSONResponse(contract.openapi(_specs()))


def _errors_as_contract(app):
    """Every error raised in the routes, and Starlette's own 404/405, in the contract's one body."""

    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        if exc.code != "unavailable":
            ERRORS.labels(exc.code).inc()
        return exc.response()

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return contract.error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(HTTPException, http_error)
    return app


def _resolved(name: str):
    """A platform resource with today's settings (imported late: resources pull in Spark's client)."""
    from resources import build_resources

    return build_resources(resolved=True)[name]


def _dagster():
    from urllib.parse import urlparse

    from dagster_graphql import DagsterGraphQLClient

    url = urlparse(os.environ.get("DAGSTER_GRAPHQL_URL", "http://127.0.0.1:23000/graphql"))
    return DagsterGraphQLClient(url.hostname, port_number=url.port, use_https=url.scheme == "https")


extra = _errors_as_contract(Starlette(routes=[
    Route("/predict", _predict_handler, methods=["POST"]),
    Route("/models", _models_handler, methods=["GET"]),
    Route("/train", _train_handler, methods=["POST"]),
    Route("/train/{run_id}", _train_status_handler, methods=["GET"]),
]))


class Admission:
    """ASGI middleware: at most ``limit`` requests in the handlers and ``queue`` waiting for a turn;
    any more are answered 503 with ``Retry-After`` at once. Health and metrics are never held back.
    BentoML's own ``max_concurrency`` answers 429 without Retry-After and has no queue."""

    def __init__(self, app, limit: int = MAX_CONCURRENCY, queue: int = MAX_QUEUE):
        self.app, self.limit, self.queue = app, limit, queue
        self._slots: asyncio.Semaphore | None = None
        self._admitted = 0  # running + waiting

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self._admitted >= self.limit + self.queue:
            ERRORS.labels("overloaded").inc()
            response = contract.error_response(
                503, "overloaded", f"more than {self.limit + self.queue} requests in flight; retry shortly",
                {"Retry-After": str(RETRY_AFTER_SECONDS)})
            return await response(scope, receive, send)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        self._admitted += 1
        try:
            async with self._slots:
                return await self.app(scope, receive, send)
        finally:
            self._admitted -= 1


class ContractDocument:
    """ASGI middleware: ``/docs.json`` is the contract's document, not BentoML's."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/docs.json":
            try:
                response = await _openapi_handler(None)
            except RequestError as exc:
                response = exc.response()
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


@bentoml.asgi_app(extra, path="/")
class _FleetPredictions:
    def __init__(self) -> None:
        self.slots = {name: ModelSlot(name) for name in MODEL_NAMES}
        _state["slots"] = self.slots
        self.prediction_log = PredictionLog(lambda: _resolved("warehouse"))
        self.online_store = _resolved("online_store")  # once, not per request
        _state["service"] = self

    def predict_parsed(self, request: contract.PredictRequest) -> dict:
        """Predictions for a request that passed the contract (runs in a worker thread)."""
        model, records, machine_ids = request.model, request.records, request.machine_ids
        slot = self.slots[model]
        if machine_ids is not None:
            records = self._online_features(model, machine_ids)
        try:
            frame = slot.frame(records)
            out = slot.predict(frame)
        except (InputError, ValueError, TypeError) as exc:  # the model refused these values: the client's to fix
            raise RequestError(400, "invalid_input", f"input rejected by model {model}: {exc}") from None
        for p in out["predictions"]:
            PREDICTIONS.labels(model, str(p) if "probabilities" in out else "value").inc()
        try:  # the log is off the request path: it must not fail a prediction either
            self.prediction_log.add(model, out["version"], out["predictions"], out.get("probabilities"), machine_ids)
        except Exception:
            ERRORS.labels("prediction_log").inc()
            logger.exception("prediction of %s not logged", model)
        if machine_ids is not None:
            out["machine_ids"] = machine_ids
        return out

    def _online_features(self, model: str, machine_ids: list[str]) -> list[dict]:
        import redis

        feature_set = CATALOGUE.models[model].feature_set
        try:
            rows = self.online_store.read(feature_set, machine_ids)
        except redis.RedisError as exc:
            raise _unavailable(f"online feature store unavailable: {exc}") from None
        unknown = [m for m, row in rows.items() if row is None]
        FEATURE_LOOKUPS.labels("hit").inc(len(rows) - len(unknown))
        if unknown:
            FEATURE_LOOKUPS.labels("miss").inc(len(unknown))
            raise RequestError(404, "unknown_machine", f"no online features for machine(s) {', '.join(unknown)}")
        return [rows[m] for m in machine_ids]


for _name in MODEL_NAMES:  # model references at class level, so a built Bento carries the models
    setattr(_FleetPredictions, f"model_{_name}", bentoml.models.BentoModel(f"{_name}:latest"))

FleetPredictions = bentoml.service(name="fleet_predictions", traffic={"timeout": 60})(_FleetPredictions)
# The first added is the outermost: the document, then authentication, then admission.
FleetPredictions.add_asgi_middleware(ContractDocument)
FleetPredictions.add_asgi_middleware(JWTAuthMiddleware)
FleetPredictions.add_asgi_middleware(Admission)
