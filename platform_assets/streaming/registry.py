"""The streams' schema registry: JSON Schemas from the catalogue, and registry-framed messages.

Kafka users agree on a message's shape through a schema registry, so producers in any language can
check what they send. Each stream's contract (the catalogue's source contract) is published as a
JSON Schema under the subject ``<topic>-value`` (Confluent's default naming) of a registry that
speaks Confluent's Schema Registry API (``SCHEMA_REGISTRY_URL``; locally Apicurio Registry).

A producer may opt in to registry-framed messages: Confluent's wire format, a zero byte, the
schema id in 4 bytes (big-endian), then the JSON document. ``unframe`` is how the stream's decode
step reads them: plain JSON passes untouched; a framed message is checked against the schema its id
names, and one that breaks it, or names an id the registry does not know, gets the validator's or
the registry's reason (a dead letter). The contract still judges every message afterwards: the
schema is the producers' side of the agreement, not a replacement for it. A registry that cannot
be reached raises ``RegistryUnavailable``, so the batch fails and is redone rather than turning
good messages into dead letters.

    python -m platform_assets.streaming.registry register    # every stream's schema (services.sh up)
    python -m platform_assets.streaming.registry schema sensor_readings   # print one, registering nothing
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import requests

from platform_assets.sources.config import Catalogue, ColumnContract, Contract
from platform_assets.streaming.config import StreamCatalogue

if TYPE_CHECKING:
    from jsonschema import Draft7Validator

MAGIC_BYTE = 0
HEADER_BYTES = 5  # magic byte + 4-byte schema id
DRAFT = "http://json-schema.org/draft-07/schema#"
# Catalogue column types as JSON types. Timestamps and dates are text (the contract reads ISO 8601
# and the common forms, so no "format" is asserted); json columns hold a document or its text.
JSON_TYPES = {"string": ["string"], "int": ["integer"], "float": ["number"], "bool": ["boolean"],
              "timestamp": ["string"], "date": ["string"], "json": ["object", "array", "string"]}
NOT_FOUND_RETRY_SECONDS = 30.0  # an unknown id is asked again after this long (it may be registered since)


class RegistryUnavailable(ConnectionError):
    """The registry did not answer, or answered with a server error: nothing can be judged now."""


def subject(topic: str) -> str:
    """Confluent's TopicNameStrategy for message values."""
    return f"{topic}-value"


def column_schema(col: ColumnContract) -> dict:
    types = JSON_TYPES[col.type] + ([] if col.required else ["null"])
    prop: dict = {"type": types[0] if len(types) == 1 else types}
    if col.allowed is not None:
        prop["enum"] = [*col.allowed, *([] if col.required else [None])]
    if col.type in ("timestamp", "date"):
        prop["description"] = f"{col.type}: {col.format or 'ISO 8601'}"
    return prop


def json_schema(contract: Contract, title: str, description: str = "") -> dict:
    """The contract as a JSON Schema (draft 7): types, required columns and allowed values.

    Range limits (min/max) are left out on purpose: outside them a value is an outlier for the
    cleaning step, not a broken message. Columns outside the contract are allowed, as the contract
    allows them.
    """
    schema = {"$schema": DRAFT, "title": title, "type": "object",
              "properties": {name: column_schema(col) for name, col in contract.columns.items()},
              "required": [name for name, col in contract.columns.items() if col.required],
              "additionalProperties": True}
    if description:
        schema["description"] = description
    return schema


def stream_schema(streams: StreamCatalogue, name: str, sources: Catalogue) -> dict:
    """A stream's schema, titled by the stream and described by its source."""
    stream = streams.streams[name]
    return json_schema(streams.contract(name, sources), title=name, description=sources.sources[stream.contract_of].description)


class SchemaRegistry:
    """The two calls of Confluent's REST API the platform needs: register a schema, fetch one by id."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/vnd.schemaregistry.v1+json, application/json"

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"schema registry {self.url} unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise RegistryUnavailable(f"schema registry {self.url}: {method} {path} answered "
                                      f"{response.status_code}: {response.text[:300]}")
        return response

    def register(self, subject_name: str, schema: dict) -> int:
        """The schema's id (the same id again when this schema is already registered under the subject)."""
        response = self._call("POST", f"/subjects/{subject_name}/versions",
                              json={"schemaType": "JSON", "schema": json.dumps(schema)},
                              headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        if response.status_code != 200:
            raise ValueError(f"schema registry refused the schema of {subject_name}: {_error(response)}")
        return int(response.json()["id"])

    def schema(self, schema_id: int) -> tuple[dict | None, str]:
        """(schema, "") for a JSON Schema; (None, the registry's reason) when it has no such id or
        the id names another kind of schema."""
        response = self._call("GET", f"/schemas/ids/{schema_id}")
        if response.status_code != 200:
            return None, f"schema id {schema_id} unknown to the registry: {_error(response)}"
        body = response.json()
        kind = body.get("schemaType", "AVRO")  # Confluent leaves schemaType out for Avro
        if kind != "JSON":
            return None, f"schema id {schema_id} is a {kind} schema; framed messages here are JSON"
        return json.loads(body["schema"]), ""


def _error(response: requests.Response) -> str:
    try:
        body = response.json()
        return f"{body.get('message', body)} (error {body.get('error_code', response.status_code)})"
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"


class FramedReader:
    """Reads framed messages against the schemas their ids name (a registry's schema of an id never
    changes, so each is fetched once; an unknown id is asked again after a while)."""

    def __init__(self, registry: SchemaRegistry):
        self.registry = registry
        self._schemas: dict[int, tuple[Draft7Validator | None, str, float]] = {}
        self._lock = threading.Lock()

    def _validator(self, schema_id: int) -> tuple[Draft7Validator | None, str]:
        with self._lock:
            known = self._schemas.get(schema_id)
        if known is None or (known[0] is None and time.monotonic() - known[2] > NOT_FOUND_RETRY_SECONDS):
            schema, reason = self.registry.schema(schema_id)
            validator = None
            if schema is not None:
                from jsonschema import Draft7Validator  # only needed once a framed message arrives

                Draft7Validator.check_schema(schema)
                validator = Draft7Validator(schema)
            known = (validator, reason, time.monotonic())
            with self._lock:
                self._schemas[schema_id] = known
        return known[0], known[1]

    def unframe(self, value: bytes) -> tuple[bytes | None, str | None]:
        """(the JSON payload, None) when it meets its schema, else (None, the reason)."""
        if len(value) < HEADER_BYTES:
            return None, f"registry-framed value of {len(value)} bytes has no schema id"
        schema_id = int.from_bytes(value[1:HEADER_BYTES], "big")
        validator, reason = self._validator(schema_id)
        if validator is None:
            return None, reason
        payload = value[HEADER_BYTES:]
        try:
            doc = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return None, f"invalid JSON: {exc}"
        from jsonschema.exceptions import best_match

        error = best_match(validator.iter_errors(doc))
        if error is not None:
            return None, f"breaks registered schema {schema_id} at {error.json_path}: {error.message}"
        return payload, None


@functools.lru_cache(maxsize=4)
def _reader(url: str) -> FramedReader:
    return FramedReader(SchemaRegistry(url))


def default_reader() -> FramedReader:
    """The reader for ``SCHEMA_REGISTRY_URL`` (one per process: its schema cache is shared)."""
    from platform_assets.settings import setting

    return _reader(setting("SCHEMA_REGISTRY_URL"))


def is_framed(value: bytes | None) -> bool:
    """Confluent's wire format starts with a zero byte; JSON text never does."""
    return bool(value) and value[0] == MAGIC_BYTE


def unframe(value: bytes | None, reader: FramedReader | None = None) -> tuple[bytes | None, str | None]:
    """Plain values unchanged; a framed value → (its JSON payload, None) or (None, reason)."""
    if not is_framed(value):
        return value, None
    return (reader or default_reader()).unframe(value)


def register_streams(registry: SchemaRegistry, streams: StreamCatalogue, sources: Catalogue) -> dict[str, int]:
    """Every stream's schema under ``<topic>-value``: subject → id (idempotent)."""
    return {subject(s.topic): registry.register(subject(s.topic), stream_schema(streams, name, sources))
            for name, s in streams.streams.items()}


def stream_framer(streams: StreamCatalogue, name: str, sources: Catalogue, url: str,
                  topic: str | None = None) -> Callable[[bytes], bytes]:
    """For producers that opt in: JSON bytes → a framed message, through confluent-kafka's
    JSONSerializer, which registers (or finds) the stream's schema under ``<topic>-value`` and
    refuses a document that breaks it before anything is sent."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.json_schema import JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    serializer = JSONSerializer(json.dumps(stream_schema(streams, name, sources)), SchemaRegistryClient({"url": url}))
    context = SerializationContext(topic or streams.streams[name].topic, MessageField.VALUE)
    return lambda value: serializer(json.loads(value), context)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from platform_assets.settings import load_local_defaults, setting
    from platform_assets.sources.config import load_catalogue
    from platform_assets.streaming.config import load_streams

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("register", help="register every stream's schema under <topic>-value")
    show = sub.add_parser("schema", help="print a stream's JSON Schema")
    show.add_argument("stream")
    args = parser.parse_args(argv)
    load_local_defaults()
    sources = load_catalogue()
    streams = load_streams(sources)
    if args.command == "schema":
        if args.stream not in streams.streams:
            parser.error(f"unknown stream {args.stream!r}; known: {', '.join(streams.streams)}")
        print(json.dumps(stream_schema(streams, args.stream, sources), indent=2))
        return 0
    url = setting("SCHEMA_REGISTRY_URL")
    for name, schema_id in register_streams(SchemaRegistry(url), streams, sources).items():
        print(f"{'registry':<10} {name}: schema id {schema_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
