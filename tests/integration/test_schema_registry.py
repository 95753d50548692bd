"""The streams' schema registry for real: Apicurio Registry (Confluent's API) from services.sh,
confluent-kafka's JSONSerializer on the producer side, the real broker, sensor, job and warehouse.

Topics (and so subjects, ``<topic>-value``) get a suffix of their own per test.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
import requests

from platform_assets.settings import load_local_defaults
from platform_assets.sources.config import load_catalogue
from platform_assets.streaming import registry
from platform_assets.streaming.config import load_streams
from platform_assets.streaming.produce import FleetStream, produce
from platform_assets.streaming.topics import ensure_topics
from tests.integration.streaming_harness import (
    STREAM,
    Harness,
    assert_exactly_once,
    drop_topics,
    lake_offsets,
    renamed,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def url() -> str:
    load_local_defaults()
    url = os.environ["SCHEMA_REGISTRY_URL"]
    try:
        requests.get(f"{url}/subjects", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        pytest.fail(f"the schema registry is not reachable at {url} ({exc}): start it with `services.sh up registry`")
    return url


@pytest.fixture()
def harness(platform, url, tmp_path, monkeypatch):
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    sources = load_catalogue()
    streams = renamed(load_streams(sources), uuid.uuid4().hex[:8])
    h = Harness(streams)
    h.lake_root, h.sources = tmp_path / "lake", sources
    ensure_topics(h.kafka.admin(), streams.topics)
    yield h
    drop_topics(h.kafka.admin(), streams.topics)
    for topic in streams.topics:  # the test's subjects go too (soft delete first, as the API requires)
        for params in ({}, {"permanent": "true"}):
            requests.delete(f"{url}/subjects/{registry.subject(topic)}", params=params, timeout=10)


def latest(url: str, subject: str) -> dict:
    response = requests.get(f"{url}/subjects/{subject}/versions/latest", timeout=10)
    response.raise_for_status()
    return response.json()


def test_services_up_registered_the_catalogue_and_registration_is_idempotent(url, harness):
    sources, streams = harness.sources, load_streams(harness.sources)
    for name, stream in streams.streams.items():  # `services.sh up registry` registered the committed catalogue
        got = latest(url, registry.subject(stream.topic))
        assert got["schemaType"] == "JSON"
        assert json.loads(got["schema"]) == registry.stream_schema(streams, name, sources)

    client = registry.SchemaRegistry(url)
    ids = registry.register_streams(client, harness.streams, sources)
    assert set(ids) == {f"{s.topic}-value" for s in harness.streams.streams.values()}
    assert registry.register_streams(client, harness.streams, sources) == ids  # same schema, same id
    subject = registry.subject(harness.topic())
    assert latest(url, subject)["id"] == ids[subject]
    schema, reason = client.schema(ids[subject])
    assert reason == "" and schema == registry.stream_schema(harness.streams, STREAM, sources)


def test_framed_and_plain_messages_land_and_schema_breakers_become_dead_letters(url, harness):
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.json_schema import JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    topic = harness.topic()
    frame = registry.stream_framer(harness.streams, STREAM, harness.sources, url)
    framed = produce(harness.kafka, topic, FleetStream(STREAM, machines=4, seed=5), rate=1e6, count=300,
                     duration=None, progress=False, frame=frame)
    plain = produce(harness.kafka, topic, FleetStream(STREAM, machines=4, seed=6), rate=1e6, count=200,
                    duration=None, progress=False)
    assert framed["delivered"] == 300 and plain["delivered"] == 200
    schema_id = latest(url, registry.subject(topic))["id"]  # the serializer registered (found) the stream's schema

    # A producer that does not check what it frames (confluent-kafka's serializer with validation
    # off), and one naming an id the registry never gave out.
    careless = JSONSerializer(json.dumps(registry.stream_schema(harness.streams, STREAM, harness.sources)),
                              SchemaRegistryClient({"url": url}), conf={"validate": False})
    breaking = careless({"machine_id": "M001", "ts": "2026-11-01T00:00:00+00:00", "temperature": "hot"},
                        SerializationContext(topic, MessageField.VALUE))
    assert breaking[0] == 0 and int.from_bytes(breaking[1:5], "big") == schema_id
    unknown = b"\x00" + (2**31 - 1).to_bytes(4, "big") + b'{"machine_id": "M002", "ts": "2026-11-01T00:00:00Z"}'
    harness.kafka.produce(topic, [(b"M001", breaking), (b"M002", unknown)])

    harness.drain()

    marks = assert_exactly_once(harness)  # all 502 once, in the lake or among the dead letters
    assert sum(high for _, high in marks.values()) == 502
    assert len(lake_offsets(harness)) == 500  # framed and plain alike
    dead = harness.resources["warehouse"].query(
        'SELECT reason, raw FROM streaming.dead_letters WHERE topic = %s ORDER BY reason', (topic,))
    assert dead["reason"].tolist() == [
        f"breaks registered schema {schema_id} at $.temperature: 'hot' is not of type 'number', 'null'",
        f"schema id {2**31 - 1} unknown to the registry: Schema {2**31 - 1} not found. (error 40403)",
    ]
    assert bytes(dead["raw"].iloc[0]) == breaking  # the bytes as sent, for a replay
