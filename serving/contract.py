"""The prediction service's published contract: its OpenAPI document and the checks that enforce it.

One description of each model's input (``FeatureSpec``, read from the model's MLflow signature)
gives both the JSON Schema in ``/docs.json`` and the request checks, so what the document allows the
service accepts and what it forbids the service refuses with a 4xx. Every error, whatever its
status and wherever it is raised (authentication, validation, overload, a missing route), has the
one body ``{"error": <message>, "code": <machine-readable>}``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass

import numpy as np
from pydantic_core import from_json, to_json
from starlette.responses import JSONResponse

MAX_RECORDS = int(os.environ.get("PREDICTION_MAX_RECORDS", "1000"))
# Physical features are far smaller; the bound keeps every input finite through scaling and the model.
MAX_ABS_VALUE = 1e9
MAX_ID_LENGTH = 128
NUMERIC_TYPES = ("double", "float", "long", "integer")
TOP_LEVEL = ("model", "records", "machine_ids")


class RequestError(Exception):
    """A response other than 2xx, with the service's one error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers)


class FastJSONResponse(JSONResponse):
    """JSON rendered by pydantic-core (Rust, already installed with pydantic): a 1,000-record answer
    costs a fraction of ``json.dumps``'. Predictions are checked finite where they are made
    (predictor.answer), as ``JSONResponse`` would refuse NaN."""

    def render(self, content) -> bytes:
        return to_json(content)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


@dataclass(frozen=True)
class FeatureSpec:
    """A model's input columns and their MLflow signature types."""

    columns: tuple[str, ...]
    types: tuple[str, ...]

    @classmethod
    def of(cls, slot) -> FeatureSpec:
        return cls(tuple(slot.columns), tuple(slot.types[c] for c in slot.columns))

    def json_schema(self) -> dict:
        return {"type": "object", "required": list(self.columns), "additionalProperties": True,
                "description": "One feature row; every feature is required and may be null (imputed). "
                               "Other fields are ignored.",
                "properties": {c: _value_schema(t) for c, t in zip(self.columns, self.types, strict=True)}}


def _value_schema(mlflow_type: str) -> dict:
    if mlflow_type in NUMERIC_TYPES:
        return {"type": ["number", "null"], "minimum": -MAX_ABS_VALUE, "maximum": MAX_ABS_VALUE}
    if mlflow_type == "boolean":
        return {"type": ["boolean", "null"]}
    if mlflow_type == "string":
        return {"type": ["string", "null"]}
    if mlflow_type == "datetime":  # date features: the model derives year, month, day... itself
        return {"type": ["string", "null"], "format": "date-time",
                "description": "ISO 8601 date or timestamp (e.g. 2026-11-03 or 2026-11-03T08:00:00Z)"}
    return {"type": ["string", "null"], "description": f"MLflow type {mlflow_type}"}


def _check_value(value, mlflow_type: str) -> str | None:
    """Why ``value`` breaks the declared type, or None."""
    if value is None:
        return None
    if mlflow_type in NUMERIC_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number; got {value!r}"
        if not math.isfinite(value) or abs(value) > MAX_ABS_VALUE:
            return f"must be a finite number within ±{MAX_ABS_VALUE:g}; got {value!r}"
        return None
    if mlflow_type == "boolean":
        return None if isinstance(value, bool) else f"must be true or false; got {value!r}"
    if mlflow_type == "datetime":
        try:
            dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00") if isinstance(value, str) else "")
        except ValueError:
            return f"must be an ISO 8601 date or timestamp; got {value!r}"
        return None
    return None if isinstance(value, str) else f"must be a string; got {value!r}"


# -- /predict request ---------------------------------------------------------------------------------
@dataclass
class PredictRequest:
    model: str
    records: list[dict] | None
    machine_ids: list[str] | None
    rows: np.ndarray | None = None  # the records' numeric features as a float64 matrix, in the model's
    # column order (checked vectorised; see _numeric_rows)


def _bad(message: str, code: str = "invalid_request") -> RequestError:
    return RequestError(400, code, message)


def parse_predict(body: bytes, content_type: str | None, specs: dict[str, FeatureSpec]) -> PredictRequest:
    """The request as the document declares it, or RequestError saying what is wrong."""
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise RequestError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    try:  # pydantic-core's parser (Rust) is about twice json's; json words the errors
        data = from_json(body)
    except ValueError:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad("body must be a JSON object with model and records or machine_ids")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise _bad(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(TOP_LEVEL)}")
    model = data.get("model", next(iter(specs)))
    if not isinstance(model, str) or model not in specs:
        raise _bad(f"unknown model {model!r}; known: {', '.join(specs)}", "unknown_model")
    if ("records" in data) == ("machine_ids" in data):
        raise _bad("send exactly one of records or machine_ids")
    name = "records" if "records" in data else "machine_ids"
    items = data[name]
    if not isinstance(items, list):
        raise _bad(f"{name} must be a list")
    if not items:
        raise _bad(f"{name} is empty: send at least one")
    if len(items) > MAX_RECORDS:
        raise _bad(f"{len(items)} {name} is more than the limit of {MAX_RECORDS}", "too_large")
    if name == "machine_ids":
        for i, m in enumerate(items):
            if not isinstance(m, str) or not 1 <= len(m) <= MAX_ID_LENGTH:
                raise _bad(f"machine_ids[{i}] must be a string of 1 to {MAX_ID_LENGTH} characters; got {m!r}")
        return PredictRequest(model, None, items)
    spec = specs[model]
    numeric = [c for c, t in zip(spec.columns, spec.types, strict=True) if t in NUMERIC_TYPES]
    rows = _numeric_rows(items, numeric)
    if rows is None or len(numeric) < len(spec.columns):  # a problem to word, or features not numbers
        _check_records(items, spec, model, numbers_checked=rows is not None)
    return PredictRequest(model, items, None, rows)


_NUMBER_TYPES = {float, int, type(None)}


def _numeric_rows(records: list, numeric: list[str]) -> np.ndarray | None:
    """The numeric features of every record as a float64 matrix, checked in a few vectorised passes:
    every record has them, each is an exact ``float`` or ``int`` (not ``bool``) or null, finite and
    within the bounds. None as soon as anything is off: ``_check_records`` then finds the first
    problem in order and words it, so the errors are those of the record-by-record check."""
    try:
        values = [record[column] for record in records for column in numeric]
    except (KeyError, TypeError):  # a record without a feature, or not an object
        return None
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return None
    try:
        matrix = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        return None
    finite = np.isfinite(matrix)
    nulls = values.count(None)
    if matrix.size - int(np.count_nonzero(finite)) != nulls:  # NaN or infinity sent as a number
        return None
    magnitudes = np.abs(matrix[finite] if nulls else matrix)
    if magnitudes.size and magnitudes.max() > MAX_ABS_VALUE:
        return None
    return matrix.reshape(len(records), len(numeric))


def _check_records(records: list, spec: FeatureSpec, model: str, numbers_checked: bool = False) -> None:
    """Every record against the spec, in order; the first problem is the error. Numbers take a fast
    path (exact ``float``/``int`` within the bounds; NaN fails the comparison; skipped when
    ``_numeric_rows`` passed them); anything else, and every refusal, goes through ``_check_value``,
    which words the error."""
    required = set(spec.columns)
    numeric = [] if numbers_checked else \
        [c for c, t in zip(spec.columns, spec.types, strict=True) if t in NUMERIC_TYPES]
    other = [(c, t) for c, t in zip(spec.columns, spec.types, strict=True) if t not in NUMERIC_TYPES]
    low, high = -MAX_ABS_VALUE, MAX_ABS_VALUE
    for i, record in enumerate(records):
        if type(record) is not dict:
            raise _bad(f"records[{i}] must be an object of feature values")
        if not required <= record.keys():
            shown = sorted(required - record.keys())
            raise _bad(f"records[{i}]: missing field(s) {', '.join(shown[:10])}{' ...' if len(shown) > 10 else ''} "
                       f"for model {model}")
        for column in numeric:
            value = record[column]
            if value is None or ((type(value) is float or type(value) is int) and low <= value <= high):
                continue
            raise _bad(f"records[{i}]: field {column!r} {_check_value(value, NUMERIC_TYPES[0])}")
        for column, mlflow_type in other:
            problem = _check_value(record[column], mlflow_type)
            if problem:
                raise _bad(f"records[{i}]: field {column!r} {problem}")


# -- the OpenAPI document -----------------------------------------------------------------------------
LABEL = {"type": ["string", "number", "boolean"], "description": "A class label as trained, or a regression value."}


def _json(schema: dict | str) -> dict:
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"application/json": {"schema": ref}}


def _errors(*statuses: int) -> dict:
    why = {400: "The request breaks the contract; the message says how.", 401: "No token, or a bad or expired one.",
           403: "The token lacks the role this path needs.", 404: "An unknown machine or run.",
           415: "The body is not JSON.", 503: "Overloaded or a dependency is down: retry after Retry-After seconds.",
           504: "Not answered within the service's timeout."}
    out = {}
    for status in statuses:
        out[str(status)] = {"description": why[status], "content": _json("Error")}
        if status == 401:
            out["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if status == 503:
            out["503"]["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}
    return out


def openapi(specs: dict[str, FeatureSpec], version: str = "1") -> dict:
    """The document served at /docs.json, for the models being served now."""
    distinct = set(specs.values())
    schemas: dict = {
        "Error": {"type": "object", "required": ["error"], "additionalProperties": False,
                  "properties": {"error": {"type": "string", "description": "What is wrong, for a person."},
                                 "code": {"type": "string", "description": "What is wrong, for a program."}}},
        "Label": LABEL,
    }
    names = list(specs)
    if len(distinct) == 1:
        schemas["Record"] = next(iter(distinct)).json_schema()
        records_items: dict = {"$ref": "#/components/schemas/Record"}
        per_model: list = []
    else:  # models with different inputs: the records' schema follows the model named
        for name, spec in specs.items():
            schemas[f"Record_{name}"] = spec.json_schema()
        records_items = {"type": "object"}
        per_model = [{"if": {"properties": {"model": {"const": n}}, **({"required": ["model"]} if i else {})},
                      "then": {"properties": {"records": {"items": {"$ref": f"#/components/schemas/Record_{n}"}}}}}
                     for i, n in enumerate(names)]
    schemas["PredictRequest"] = {
        "type": "object", "additionalProperties": False,
        "description": "Exactly one of records (feature rows) or machine_ids (latest features from the online store).",
        "properties": {
            "model": {"type": "string", "enum": names, "default": names[0]},
            "records": {"type": "array", "minItems": 1, "maxItems": MAX_RECORDS, "items": records_items},
            "machine_ids": {"type": "array", "minItems": 1, "maxItems": MAX_RECORDS,
                            "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}},
        },
        "oneOf": [{"required": ["records"]}, {"required": ["machine_ids"]}],
        **({"allOf": per_model} if per_model else {}),
    }
    schemas["PredictResponse"] = {
        "type": "object", "required": ["model", "version", "bento_model", "predictions"],
        "properties": {
            "model": {"type": "string"}, "version": {"type": ["string", "null"]}, "bento_model": {"type": "string"},
            "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Label"}},
            "classes": {"type": "array", "items": {"$ref": "#/components/schemas/Label"},
                        "description": "Classifiers: every label the model knows."},
            "probabilities": {"type": "array", "description": "Classifiers: per record, probability by str(label).",
                              "items": {"type": "object", "additionalProperties": {"type": "number"}}},
            "machine_ids": {"type": "array", "items": {"type": "string"}},
            "features": {
                "type": "object", "description": "With machine_ids: per machine, how fresh its online feature row is. "
                "writer 'stream' rows are seconds old (written by the stream's consumer), 'batch' rows hours old.",
                "additionalProperties": {"type": "object", "required": ["writer", "age_seconds"], "properties": {
                    "writer": {"type": "string", "enum": ["stream", "batch"]},
                    "as_of": {"type": ["string", "null"], "description": "the hour the row describes"},
                    "updated_at": {"type": ["string", "null"], "description": "when the stream wrote it"},
                    "age_seconds": {"type": ["number", "null"]},
                    "source": {"type": ["string", "null"], "description": "topic:partition:offset of its last reading"},
                }}},
        },
    }
    nullable_str = {"type": ["string", "null"]}
    schemas["ModelsResponse"] = {
        "type": "object", "required": ["models"],
        "properties": {"models": {"type": "array", "items": {
            "type": "object", "required": ["model", "registered_name", "task", "aliases", "versions", "serving"],
            "properties": {
                "model": {"type": "string"}, "registered_name": {"type": "string"},
                "task": {"type": "string"},
                "aliases": {"type": "object", "additionalProperties": {"type": "string"}},
                "versions": {"type": "array", "items": {
                    "type": "object", "required": ["version", "algorithm", "aliases", "run_id"],
                    "properties": {"version": {"type": "string"}, "algorithm": nullable_str,
                                   "aliases": {"type": "array", "items": {"type": "string"}}, "run_id": nullable_str},
                    "additionalProperties": {"type": ["number", "string", "null", "array"]}}},
                "serving": {"type": ["object", "null"]},
            }}}},
    }
    schemas["TrainResponse"] = {"type": "object", "required": ["run_id", "status_url"],
                                "properties": {"run_id": {"type": "string"}, "status_url": {"type": "string"}}}
    schemas["TrainStatus"] = {"type": "object", "required": ["run_id", "status"],
                              "properties": {"run_id": {"type": "string"}, "status": {"type": "string"}}}
    text = {"text/plain": {"schema": {"type": "string"}}}
    open_ = {"security": []}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Fleet predictions", "version": version,
                 "description": "Champion models of the Dagster ML platform. Bearer JWT with roles predict, train "
                                "or admin. Errors: one body, the Error schema."},
        "security": [{"bearer": []}],
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "paths": {
            "/predict": {"post": {
                "operationId": "predict", "summary": "Predict from feature rows or by machine id (role predict).",
                "requestBody": {"required": True, "content": _json("PredictRequest")},
                "responses": {"200": {"description": "Predictions", "content": _json("PredictResponse")},
                              **_errors(400, 401, 403, 404, 415, 503, 504)}}},
            "/models": {"get": {
                "operationId": "models", "summary": "Registered models, versions, aliases, metrics (role predict).",
                "responses": {"200": {"description": "Models", "content": _json("ModelsResponse")},
                              **_errors(401, 403, 503, 504)}}},
            "/train": {"post": {
                "operationId": "train", "summary": "Launch ml_pipeline in Dagster (role train).",
                "responses": {"200": {"description": "The run launched", "content": _json("TrainResponse")},
                              **_errors(401, 403, 503, 504)}}},
            "/train/{run_id}": {"get": {
                "operationId": "train_status", "summary": "A training run's status (role train).",
                "parameters": [{"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "Status", "content": _json("TrainStatus")},
                              **_errors(401, 403, 404, 503, 504)}}},
            "/livez": {"get": {**open_, "operationId": "livez", "responses": {"200": {"description": "Alive",
                                                                                       "content": text}}}},
            "/readyz": {"get": {**open_, "operationId": "readyz", "responses": {
                "200": {"description": "Ready", "content": text},
                "503": {"description": "Not ready", "content": _json("Error")}}}},
        },
    }
