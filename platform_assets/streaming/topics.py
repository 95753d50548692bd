"""Create the catalogue's topics (idempotent): `python -m platform_assets.streaming.topics`.

Existing topics with fewer partitions than declared are grown; partitions are never removed (Kafka
cannot), and a running stream sensor picks up added partitions at its next tick. Counts and the
replication factor come from streams.yaml or, per environment, STREAM_TOPIC_PARTITIONS and
STREAM_TOPIC_REPLICATION_FACTOR (platform_assets/streaming/config.py). Names are this environment's:
with ``PLATFORM_NAMESPACE=acme`` the topics made are ``<topic>.acme`` (platform_assets/namespace.py).
"""

from __future__ import annotations

import sys

from confluent_kafka.admin import NewPartitions, NewTopic


def ensure_topics(admin, topics: dict, timeout: float = 10.0) -> dict[str, str]:
    """{topic: 'created' | 'exists' | 'grown to N'} for each declared topic."""
    existing = admin.list_topics(timeout=timeout).topics
    outcome, create, grow = {}, [], []
    for name, spec in topics.items():
        if name not in existing:
            create.append(NewTopic(name, num_partitions=spec.partitions, replication_factor=spec.replication_factor))
        elif len(existing[name].partitions) < spec.partitions:
            grow.append(NewPartitions(name, spec.partitions))
        else:
            outcome[name] = "exists"
    for name, future in (admin.create_topics(create) if create else {}).items():
        future.result(timeout)
        outcome[name] = "created"
    for name, future in (admin.create_partitions(grow) if grow else {}).items():
        future.result(timeout)
        outcome[name] = f"grown to {topics[name].partitions} partitions"
    return outcome


def main() -> int:
    from platform_assets.catalogue import load_catalogues
    from resources import build_resources

    streams = load_catalogues().streams
    if streams is None:
        print("no stream catalogue: no topics to make")
        return 0
    admin = build_resources(resolved=True)["kafka"].admin()  # the platform's client settings (SASL, TLS)
    for name, what in ensure_topics(admin, streams.topics).items():
        spec = streams.topics[name]
        print(f"{'topic':<10} {name} ({spec.partitions} partitions, replication {spec.replication_factor}): {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
