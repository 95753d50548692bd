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
body. Predictions are batched (``SERVING_BATCHING``, on by default): this process checks the
request and hands its records to serving/batching.py's runner, where BentoML's adaptive batching
merges the records of concurrent requests into one model call; with batching off the model runs
here, per request. Overload is bounded: ``SERVING_MAX_CONCURRENCY`` requests run,
``SERVING_MAX_QUEUE`` wait, and any more get 503 with ``Retry-After`` at once (``Admission``); the
runner also refuses, with the same answer, records that would wait longer than its latency bound.
"""

from __future__ import annotations

import asyncio
import collections
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
from serving.batching import PredictionRunner, about_name, api_name, refusals_name
from serving.contract import FeatureSpec, RequestError
from serving.prediction_log import PredictionLog
from serving.predictor import InputError, ModelSlot, RefusedRecord, StaleBatch, answer, key_of, rows_of

load_local_defaults()
CATALOGUE = load_models()
MODEL_NAMES = list(CATALOGUE.models)
BATCHING = os.environ.get("SERVING_BATCHING", "true").strip().lower() not in ("0", "false", "no", "off")
# Unbatched, predictions hold this process's GIL: about one per core. Batched, requests wait on the
# runner without using CPU, and the ones in flight together are what forms a batch.
MAX_CONCURRENCY = int(os.environ.get("SERVING_MAX_CONCURRENCY", "32" if BATCHING else "2"))
MAX_QUEUE = int(os.environ.get("SERVING_MAX_QUEUE", "16"))
WORKERS = int(os.environ.get("SERVING_WORKERS", "1"))  # front-end processes (HTTP, tokens, JSON, checks)
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
    slots = _service().slots
    if BATCHING:  # no prediction here checks for a new champion: its signature may differ
        for slot in slots.values():
            slot.current()
    key = tuple(slot.tag for slot in slots.values())
    if _state.get("specs_of") != key:  # built once per set of served versions, not per request
        _state["specs"], _state["specs_of"] = {name: FeatureSpec.of(slot) for name, slot in slots.items()}, key
    return _state["specs"]


async def _predict_handler(request: Request) -> JSONResponse:
    body, content_type, specs, service = await request.body(), request.headers.get("content-type"), _specs(), \
        _service()
    if BATCHING:
        if len(body) < SMALL_BODY_BYTES:  # a few records: checking them costs less than a thread hop
            parsed = contract.parse_predict(body, content_type, specs)
        else:  # parsing and checks off the event loop, which must keep answering
            parsed = await anyio.to_thread.run_sync(contract.parse_predict, body, content_type, specs)
        return contract.FastJSONResponse(await service.predict_batched(parsed))

    def work() -> dict:
        return service.predict_parsed(contract.parse_predict(body, content_type, specs))

    return JSONResponse(await anyio.to_thread.run_sync(work))


SMALL_BODY_BYTES = 16_384


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
    if BATCHING:
        runner = bentoml.depends(PredictionRunner)

    def __init__(self) -> None:
        # Batched, the runner holds the estimators; here only signatures (the contract) and tags.
        self.slots = {name: ModelSlot(name, load_model=not BATCHING) for name in MODEL_NAMES}
        _state["slots"] = self.slots
        self.prediction_log = PredictionLog(lambda: _resolved("warehouse"))
        self.online_store = _resolved("online_store")  # once, not per request
        self.abouts: dict[float, dict] = {}  # the runner's versions by key (predictor.version_key)
        _state["service"] = self

    async def predict_batched(self, request: contract.PredictRequest) -> dict:
        """Predictions for a request that passed the contract, from the batching runner."""
        model, rows, machine_ids = request.model, request.rows, request.machine_ids
        freshness = None
        slot = self.slots[model]
        try:
            if machine_ids is not None:
                records, freshness = await anyio.to_thread.run_sync(self._online_features, model, machine_ids)
                rows = rows_of(records, slot.columns, slot.types)
            else:
                rows = rows_of(request.records, slot.columns, slot.types, numbers=rows)
        except InputError as exc:
            raise RequestError(400, "invalid_input", f"input rejected by model {model}: {exc}") from None
        for _attempt in range(2):
            out = await self._run(model, rows)
            try:
                about = await self._about(model, key_of(out, model))
                if about is None:  # the runner no longer knows the version: predict again
                    continue
                prediction = answer(out, about)
                break
            except RefusedRecord as exc:
                reasons = await self._run(model, rows, refusals_name(model))
                raise RequestError(400, "invalid_input", f"input rejected by model {model}: record {exc.index}: "
                                   f"{reasons[exc.index] or 'refused in its batch'}") from None
            except StaleBatch:  # a new champion landed between two parts of this request: once more
                continue
        else:
            raise _unavailable(f"model {model} is being reloaded")
        return self._served(model, prediction, machine_ids, freshness)

    async def _about(self, model: str, key: float) -> dict | None:
        """The version a key names: asked of the runner once per version it loads."""
        if key not in self.abouts:
            known = await self._run(model, None, about_name(model))
            self.abouts.update({float(k): about for k, about in known.items()})
        return self.abouts.get(key)

    async def _run(self, model: str, rows, api: str | None = None):
        """A runner API (``predict_<model>`` unless ``api`` names another) on ``rows``."""
        from bentoml.exceptions import BentoMLException, ServiceUnavailable

        runner, api = self.runner, api or api_name(model)
        args = () if rows is None else (rows,)
        try:
            if hasattr(runner, "to_async"):  # served: the runner is a process of its own
                return await runner.to_async.call(api, *args)
            return await anyio.to_thread.run_sync(getattr(runner, api), *args)  # in-process
        except ServiceUnavailable:  # the dispatcher refused: it could not answer within its latency bound
            raise RequestError(503, "overloaded", "predictions are queued beyond the latency bound; retry shortly",
                               {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        except (BentoMLException, OSError) as exc:
            raise _unavailable(f"prediction runner unavailable: {str(exc)[:300]}") from None

    def predict_parsed(self, request: contract.PredictRequest) -> dict:
        """Predictions for a request that passed the contract, in this process (runs in a worker thread)."""
        model, records, machine_ids = request.model, request.records, request.machine_ids
        slot = self.slots[model]
        freshness = None
        if machine_ids is not None:
            records, freshness = self._online_features(model, machine_ids)
        try:
            frame = slot.frame(records)
            out = slot.predict(frame)
        except (InputError, ValueError, TypeError) as exc:  # the model refused these values: the client's to fix
            raise RequestError(400, "invalid_input", f"input rejected by model {model}: {exc}") from None
        return self._served(model, out, machine_ids, freshness)

    def _served(self, model: str, out: dict, machine_ids: list[str] | None, freshness: dict | None = None) -> dict:
        """Count and log a prediction, and add the request's machine ids to it."""
        if "probabilities" in out:
            for label, n in collections.Counter(map(str, out["predictions"])).items():
                PREDICTIONS.labels(model, label).inc(n)
        else:
            PREDICTIONS.labels(model, "value").inc(len(out["predictions"]))
        try:  # the log is off the request path: it must not fail a prediction either
            self.prediction_log.add(model, out["version"], out["predictions"], out.get("probabilities"), machine_ids)
        except Exception:
            ERRORS.labels("prediction_log").inc()
            logger.exception("prediction of %s not logged", model)
        if machine_ids is not None:
            out["machine_ids"] = machine_ids
            out["features"] = freshness
        return out

    def _online_features(self, model: str, machine_ids: list[str]) -> tuple[list[dict], dict]:
        """The machines' latest feature rows, and per machine how fresh they are (``feature_freshness``)."""
        import redis

        feature_set = CATALOGUE.models[model].feature_set
        try:
            rows = self.online_store.read_with_meta(feature_set, machine_ids)
        except redis.RedisError as exc:
            raise _unavailable(f"online feature store unavailable: {exc}") from None
        unknown = [m for m, row in rows.items() if row is None]
        FEATURE_LOOKUPS.labels("hit").inc(len(rows) - len(unknown))
        if unknown:
            FEATURE_LOOKUPS.labels("miss").inc(len(unknown))
            raise RequestError(404, "unknown_machine", f"no online features for machine(s) {', '.join(unknown)}")
        return [rows[m]["row"] for m in machine_ids], {m: feature_freshness(rows[m]) for m in machine_ids}


def feature_freshness(meta: dict, now: float | None = None) -> dict:
    """How old a served feature row is: the stream's rows carry the time they were written (seconds
    old), the batch pipeline's only the hour they describe (hours old)."""
    import time

    import pandas as pd

    now = time.time() if now is None else now
    stamp = meta.get("updated_at") or meta.get("as_of")
    try:
        age = round(now - pd.Timestamp(stamp).timestamp(), 3) if stamp else None
    except (TypeError, ValueError):
        age = None
    return {"writer": meta.get("writer") or "batch", "as_of": meta.get("as_of"), "updated_at": meta.get("updated_at"),
            "age_seconds": age, "source": meta.get("source")}


for _name in MODEL_NAMES:  # model references at class level, so a built Bento carries the models
    setattr(_FleetPredictions, f"model_{_name}", bentoml.models.BentoModel(f"{_name}:latest"))

FleetPredictions = bentoml.service(name="fleet_predictions", workers=WORKERS, traffic={"timeout": 60})(_FleetPredictions)
# The first added is the outermost: the document, then authentication.
FleetPredictions.add_asgi_middleware(ContractDocument)
FleetPredictions.add_asgi_middleware(JWTAuthMiddleware)


class _AdmittedService(type(FleetPredictions)):
    """The service with ``Admission`` outside BentoML's own middlewares. BentoML puts middlewares
    added with ``add_asgi_middleware`` behind its metrics, tracing, access-log and timeout layers,
    which cost about a millisecond per request: under 4x overload, refusing there let the refusals
    themselves saturate the event loop, and requests queued in front of the gate for seconds
    (measured with tests/benchmarks/bench_serving.py). Refused here, a 503 costs a fraction of it."""

    __slots__ = ()

    def to_asgi(self, is_main: bool = True):
        return Admission(super().to_asgi(is_main))


FleetPredictions.__class__ = _AdmittedService
