"""The streams' JSON Schemas generated from the catalogue, and how framed messages are read.

The registry itself is replaced here by a stand-in that serves fixed schemas (the real one is in
tests/integration/test_schema_registry.py); what is tested is the schema generation, its agreement
with the contract, and the reading of Confluent's wire format.
"""

from __future__ import annotations

import itertools
import json
import socket

import pandas as pd
import pytest
from jsonschema import Draft7Validator

from platform_assets.sources.config import ColumnContract, Contract, load_catalogue
from platform_assets.sources.contract import apply_contract
from platform_assets.streaming import registry
from platform_assets.streaming.config import load_streams
from platform_assets.streaming.produce import FleetStream

SOURCES = load_catalogue()
STREAMS = load_streams(SOURCES)


def framed(schema_id: int, doc) -> bytes:
    return bytes([registry.MAGIC_BYTE]) + schema_id.to_bytes(4, "big") + json.dumps(doc).encode()


class ServedSchemas(registry.SchemaRegistry):
    """Answers schema lookups from a dict, counting them (a test double of the registry's API)."""

    def __init__(self, schemas: dict[int, dict]):
        super().__init__("http://registry.invalid")
        self.schemas, self.lookups = schemas, 0

    def schema(self, schema_id):
        self.lookups += 1
        if schema_id in self.schemas:
            return self.schemas[schema_id], ""
        return None, f"schema id {schema_id} unknown to the registry: Schema {schema_id} not found. (error 40403)"


def test_types_required_columns_and_allowed_values_come_from_the_contract():
    contract = Contract(columns={
        "id": ColumnContract(type="string", required=True),
        "n": ColumnContract(type="int", min=0, max=10),
        "x": ColumnContract(type="float", required=True),
        "ok": ColumnContract(type="bool"),
        "ts": ColumnContract(type="timestamp", required=True, format="%Y/%m/%d %H:%M"),
        "level": ColumnContract(type="string", allowed=("INFO", "WARN")),
        "ctx": ColumnContract(type="json"),
    })
    schema = registry.json_schema(contract, title="t", description="d")
    Draft7Validator.check_schema(schema)
    props = schema["properties"]
    assert props["id"] == {"type": "string"}
    assert props["n"] == {"type": ["integer", "null"]}  # optional: null allowed; no min/max (outliers are cleaning's)
    assert props["x"] == {"type": "number"}
    assert props["ok"] == {"type": ["boolean", "null"]}
    assert props["ts"] == {"type": "string", "description": "timestamp: %Y/%m/%d %H:%M"}
    assert props["level"] == {"type": ["string", "null"], "enum": ["INFO", "WARN", None]}
    assert props["ctx"] == {"type": ["object", "array", "string", "null"]}
    assert schema["required"] == ["id", "x", "ts"]
    assert schema["additionalProperties"] is True and schema["title"] == "t" and schema["description"] == "d"
    validator = Draft7Validator(schema)
    assert validator.is_valid({"id": "a", "x": 1, "ts": "2026/11/01 10:00", "n": 99, "extra": [1]})
    assert not validator.is_valid({"id": "a", "x": "1.5", "ts": "2026/11/01 10:00"})  # text is not a number
    assert not validator.is_valid({"id": "a", "x": 1.0, "ts": "t", "level": "DEBUG"})
    assert not validator.is_valid({"x": 1.0, "ts": "t"})


@pytest.mark.parametrize("stream", sorted(STREAMS.streams))
def test_every_generated_message_meets_both_its_schema_and_its_contract(stream):
    """The registered schema never refuses what the producer makes and the contract accepts."""
    schema = registry.stream_schema(STREAMS, stream, SOURCES)
    assert schema["title"] == stream
    validator = Draft7Validator(schema)
    docs = [json.loads(v) for _, v, _ in itertools.islice(FleetStream(stream, seed=3), 300)]
    assert all(validator.is_valid(d) for d in docs)
    frame = pd.DataFrame(docs).assign(_source_file="t", _source_row=range(len(docs)))
    assert apply_contract(stream, frame, STREAMS.contract(stream, SOURCES)).quarantine.empty


def test_subjects_follow_confluents_topic_naming():
    assert registry.subject("iot.sensor-readings") == "iot.sensor-readings-value"


def test_plain_json_is_passed_through_without_asking_the_registry():
    served = ServedSchemas({})
    reader = registry.FramedReader(served)
    for value in (b'{"a": 1}', b"not json", b"", None):
        assert registry.unframe(value, reader) == (value, None)
    assert served.lookups == 0


def test_a_framed_message_is_checked_against_the_schema_its_id_names():
    schema = registry.stream_schema(STREAMS, "sensor_readings", SOURCES)
    served = ServedSchemas({7: schema})
    reader = registry.FramedReader(served)
    good = {"machine_id": "M001", "ts": "2026-11-01T00:00:00+00:00", "temperature": 61.5}
    payload, reason = registry.unframe(framed(7, good), reader)
    assert reason is None and json.loads(payload) == good

    payload, reason = registry.unframe(framed(7, {**good, "temperature": "hot"}), reader)
    assert payload is None
    assert reason == "breaks registered schema 7 at $.temperature: 'hot' is not of type 'number', 'null'"
    _, reason = registry.unframe(framed(7, {"ts": "2026-11-01T00:00:00+00:00"}), reader)
    assert reason == "breaks registered schema 7 at $: 'machine_id' is a required property"
    _, reason = registry.unframe(framed(7, [1, 2]), reader)
    assert "is not of type 'object'" in reason
    _, reason = registry.unframe(framed(7, good)[:-1], reader)
    assert reason.startswith("invalid JSON")
    assert served.lookups == 1  # a schema of an id never changes: fetched once


def test_an_unknown_id_or_a_cut_header_is_a_reason_not_a_crash():
    served = ServedSchemas({})
    reader = registry.FramedReader(served)
    assert registry.unframe(framed(42, {}), reader) == (
        None, "schema id 42 unknown to the registry: Schema 42 not found. (error 40403)")
    assert registry.unframe(b"\x00\x00\x01", reader) == (None, "registry-framed value of 3 bytes has no schema id")


def test_an_unreachable_registry_fails_the_batch_instead_of_making_dead_letters():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reader = registry.FramedReader(registry.SchemaRegistry(f"http://127.0.0.1:{port}/apis/ccompat/v7", timeout=2))
    with pytest.raises(registry.RegistryUnavailable, match="unreachable"):
        registry.unframe(framed(1, {"a": 1}), reader)
