"""Kafka through confluent-kafka: watermarks for sensors, exact offset ranges for micro-batches.

The same settings reach a production cluster and the local Apache Kafka broker (SASL_SSL with
SCRAM-SHA-512 locally, mutual TLS through the certificate fields); nothing here depends on the local
broker. Calls are bounded by timeouts: a sensor tick must never block on the broker.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import dagster as dg
from pydantic import Field


class OffsetRange(NamedTuple):
    partition: int
    start: int  # inclusive
    end: int  # exclusive


class KafkaMessage(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class TopicNotFound(LookupError):
    pass


class KafkaUnavailable(ConnectionError):
    pass


def produce_waiting(producer, topic: str, key, value, on_delivery) -> None:
    """Produce one message, serving delivery reports while the local queue is full."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class KafkaResource(dg.ConfigurableResource):
    """One set of connection settings for every client (producer, consumer, admin).

    Security settings are passed to librdkafka only when set, so a plaintext broker and a TLS/SASL
    cluster use the same code; each comes from a ``KAFKA_*`` environment variable through
    the resource's config (resources/__init__.py), secrets as ``dg.EnvVar``.
    """

    bootstrap_servers: str
    security_protocol: str | None = Field(default=None, description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str | None = Field(default=None, description="e.g. PLAIN, SCRAM-SHA-512, OAUTHBEARER")
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = Field(default=None, description="PEM file of the CA that signed the brokers' certificates")
    ssl_certificate_location: str | None = Field(default=None, description="client certificate (mutual TLS)")
    ssl_key_location: str | None = Field(default=None, description="client private key (mutual TLS)")
    ssl_key_password: str | None = None
    client_id: str = "dagster-ml-platform"
    timeout_seconds: float = 10.0

    def client_config(self) -> dict:
        """librdkafka settings shared by every client; fails early on settings that cannot work together."""
        protocol = (self.security_protocol or "").upper() or None
        if protocol and protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"Kafka security_protocol {self.security_protocol!r}: expected one of {SECURITY_PROTOCOLS}")
        sasl = {"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                "sasl.password": self.sasl_password}
        ssl = {"ssl.ca.location": self.ssl_ca_location, "ssl.certificate.location": self.ssl_certificate_location,
               "ssl.key.location": self.ssl_key_location, "ssl.key.password": self.ssl_key_password}
        if any(sasl.values()) and not (protocol or "").startswith("SASL_"):
            raise ValueError("Kafka SASL settings are set but security_protocol is not SASL_SSL or SASL_PLAINTEXT: "
                             "the credentials would not be used")
        if any(ssl.values()) and protocol not in ("SSL", "SASL_SSL"):
            raise ValueError("Kafka TLS files are set but security_protocol is not SSL or SASL_SSL: "
                             "the connection would not be encrypted")
        conf = {"bootstrap.servers": self.bootstrap_servers, "client.id": self.client_id}
        if protocol:
            conf["security.protocol"] = protocol
        conf.update({k: v for k, v in {**sasl, **ssl}.items() if v})
        return conf

    # -- clients ---------------------------------------------------------------------------------
    def admin(self, **overrides):
        from confluent_kafka.admin import AdminClient

        return AdminClient({**self.client_config(), **overrides})

    def producer(self, **overrides):
        from confluent_kafka import Producer

        return Producer({**self.client_config(), "enable.idempotence": True, "linger.ms": 5, **overrides})

    def consumer(self, group_id: str, **overrides):
        from confluent_kafka import Consumer

        return Consumer({**self.client_config(), "group.id": group_id, "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "auto.offset.reset": "earliest", **overrides})

    # -- metadata --------------------------------------------------------------------------------
    def partitions(self, topic: str, admin=None) -> list[int]:
        try:
            # All topics, not list_topics(topic=...): asking for one topic by name makes brokers with
            # auto.create.topics.enable create it, which would hide a misspelt topic.
            md = (admin or self.admin()).list_topics(timeout=self.timeout_seconds)
        except Exception as exc:  # KafkaException: broker unreachable within the timeout
            raise KafkaUnavailable(f"Kafka at {self.bootstrap_servers} did not answer: {exc}") from exc
        info = md.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise TopicNotFound(f"topic {topic!r} does not exist on {self.bootstrap_servers}")
        return sorted(info.partitions)

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        """(low, high) offsets per partition; reads metadata only, never messages.

        Through the admin API (ListOffsets), not a consumer: a consumer made and closed at each
        sensor tick would also open (and abandon mid-login) a connection to its group coordinator.
        """
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        # Notices and worse only: librdkafka tells at info level that it drops an internal event
        # of list_offsets when the handle goes, at every call.
        admin = self.admin(log_level=5)
        parts = [TopicPartition(topic, p) for p in self.partitions(topic, admin)]
        ends = {}
        for name, spec in (("low", OffsetSpec.earliest()), ("high", OffsetSpec.latest())):
            futures = admin.list_offsets({tp: spec for tp in parts}, request_timeout=self.timeout_seconds)
            try:
                ends[name] = {tp.partition: f.result(self.timeout_seconds).offset for tp, f in futures.items()}
            except Exception as exc:  # KafkaException, TimeoutError: the broker did not answer in time
                raise KafkaUnavailable(f"topic {topic}: offsets not readable from {self.bootstrap_servers}: {exc}") from exc
        return {tp.partition: (ends["low"][tp.partition], ends["high"][tp.partition]) for tp in parts}

    def committed(self, group_id: str, topic: str) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        consumer = self.consumer(group_id=group_id)
        try:
            parts = [TopicPartition(topic, p) for p in self.partitions(topic)]
            return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=self.timeout_seconds)}
        finally:
            consumer.close()

    # -- data ------------------------------------------------------------------------------------
    def read_ranges(self, topic: str, ranges: Sequence[OffsetRange], timeout_seconds: float = 60.0) -> list[KafkaMessage]:
        """Exactly the messages of ``ranges``: assign, seek to each start, stop at each end."""
        from confluent_kafka import KafkaError, TopicPartition

        wanted = {r.partition: r for r in ranges if r.end > r.start}
        if not wanted:
            return []
        consumer = self.consumer(group_id=f"{self.client_id}.reader", **{"enable.partition.eof": True})
        messages: list[KafkaMessage] = []
        try:
            consumer.assign([TopicPartition(topic, r.partition, r.start) for r in wanted.values()])
            position = {p: r.start for p, r in wanted.items()}
            deadline = time.monotonic() + timeout_seconds
            while wanted:
                if time.monotonic() > deadline:
                    missing = {p: (position[p], r.end) for p, r in wanted.items()}
                    raise KafkaUnavailable(f"topic {topic}: offsets {missing} not readable within {timeout_seconds:.0f} s")
                for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                    p = msg.partition()
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            if p in wanted and msg.offset() < wanted[p].end:
                                continue  # the end is beyond what has arrived so far: keep waiting
                            continue
                        raise KafkaUnavailable(f"topic {topic} partition {p}: {msg.error()}")
                    if p not in wanted:
                        continue
                    off = msg.offset()
                    if off < position[p]:
                        continue
                    if off >= wanted[p].end:
                        del wanted[p]
                        consumer.incremental_unassign([TopicPartition(topic, p)])
                        continue
                    messages.append(KafkaMessage(p, off, msg.key(), msg.value(), msg.timestamp()[1]))
                    position[p] = off + 1
                    if position[p] >= wanted[p].end:
                        del wanted[p]
                        consumer.incremental_unassign([TopicPartition(topic, p)])
        finally:
            consumer.close()
        return messages

    def commit(self, group_id: str, topic: str, offsets: dict[int, int]) -> None:
        """Record progress in the consumer group (for lag monitoring); called once data is durable."""
        from confluent_kafka import TopicPartition

        consumer = self.consumer(group_id=group_id)
        try:
            consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
        finally:
            consumer.close()

    def produce(self, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
        """Produce and wait for every delivery report; raises if any message was not delivered."""
        producer = self.producer()
        errors: list[str] = []
        sent = 0

        def on_delivery(err, _msg):
            if err is not None:
                errors.append(str(err))

        for key, value in records:
            produce_waiting(producer, topic, key, value, on_delivery)
            sent += 1
        remaining = producer.flush(self.timeout_seconds)
        if remaining or errors:
            raise KafkaUnavailable(f"topic {topic}: {remaining} messages undelivered, errors: {errors[:3]}")
        return sent
