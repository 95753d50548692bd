"""One Kafka producer kept for a consumer's life, for what a batch publishes (alerts, predictions).

A new producer costs a TLS and SASL handshake plus a metadata round trip: about 0.5 s on the local
broker, measured, which ``KafkaResource.produce`` pays on every call. A long-running consumer
publishes every second, so it keeps one; a micro-batch run publishes once and needs none of this.
"""

from __future__ import annotations

from collections.abc import Iterable

from resources.kafka import KafkaResource, KafkaUnavailable, produce_waiting


class Publisher:
    """Produces and waits for every delivery report, like ``KafkaResource.produce``, on one producer."""

    def __init__(self, kafka: KafkaResource):
        self.kafka = kafka
        self._producer = None

    def produce(self, messages: Iterable[tuple[str, bytes | None, bytes]]) -> int:
        """(topic, key, value) messages; raises ``KafkaUnavailable`` if any was not delivered."""
        if self._producer is None:
            self._producer = self.kafka.producer()
        errors: list[str] = []
        sent = 0
        for topic, key, value in messages:
            produce_waiting(self._producer, topic, key, value,
                            lambda err, _msg: errors.append(str(err)) if err is not None else None)
            sent += 1
        remaining = self._producer.flush(self.kafka.timeout_seconds) if sent else 0
        if remaining or errors:
            self._producer = None  # a new one next time (a producer may be left in a fatal state)
            raise KafkaUnavailable(f"{remaining} messages undelivered, errors: {errors[:3]}")
        return sent

    def topic(self, topic: str):
        """``KafkaResource.produce``'s signature for one topic: ``(key, value)`` records."""
        def produce(records) -> int:
            try:
                return self.produce((topic, key, value) for key, value in records)
            except KafkaUnavailable as exc:
                raise KafkaUnavailable(f"topic {topic}: {exc}") from exc
        return produce
