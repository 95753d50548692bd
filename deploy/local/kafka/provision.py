"""Users, ACLs and topics of the local Apache Kafka broker; run by deploy/local/services.sh.

    provision.py ready    exit 0 when the broker answers the admin over mutual TLS
    provision.py apply    SCRAM users, the platform user's ACLs, the catalogue's topics (idempotent)

The admin connects over the mutual-TLS listener with a certificate from the local CA (CN=admin, a
super user), so users can be (re)made at every start without a password on any command line: the
SCRAM passwords come from the environment (KAFKA_SASL_PASSWORD for the platform's user, the
generated admin password through KAFKA_ADMIN_PASSWORD). The platform's user may use only its own
topics (prefixed by each catalogue topic, so per-test copies such as ``iot.sensor-readings.<id>``
are its own too) and consumer groups (``platform.`` and its client id's prefix); ACLs of that user
that the catalogue no longer implies are removed. ACLs are derived from the names without a
namespace, whatever ``PLATFORM_NAMESPACE`` says: a namespace is a suffix (``iot.sensor-readings.acme``,
platform_assets/namespace.py), so the same ACLs allow every namespace, and provisioning for one
namespace never removes another's. The topics made are those of this environment's namespace.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

SCRAM_ITERATIONS = 8192


def admin_conf() -> dict:
    """librdkafka settings of the admin: mutual TLS with its certificate (CN=admin, a super user)."""
    return {"bootstrap.servers": os.environ["KAFKA_ADMIN_BOOTSTRAP"], "security.protocol": "SSL",
            "ssl.ca.location": os.environ["KAFKA_ADMIN_CA"], "ssl.certificate.location": os.environ["KAFKA_ADMIN_CERT"],
            "ssl.key.location": os.environ["KAFKA_ADMIN_KEY"], "client.id": "services.sh", "log_level": 0}


def admin_client(timeout_ms: int = 5000):
    from confluent_kafka.admin import AdminClient

    return AdminClient({**admin_conf(), "socket.timeout.ms": timeout_ms})


def ready() -> int:
    try:
        admin_client(2000).list_topics(timeout=2)
        return 0
    except Exception:  # noqa: BLE001 (not up yet: the caller retries)
        return 1


@contextlib.contextmanager
def without_namespace():
    """Names as the catalogue writes them: each is the prefix of that name in every namespace."""
    from platform_assets.namespace import SETTING

    saved = os.environ.get(SETTING)
    os.environ[SETTING] = ""
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(SETTING, None)
        else:
            os.environ[SETTING] = saved


def wanted_acls(user: str) -> list:
    """The platform user's ACL bindings, derived from the stream catalogue and the group naming
    (without a namespace: the prefix ACLs cover every namespace's topics and groups)."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    from platform_assets.sources.config import load_catalogue
    from platform_assets.streaming.assets import group_id
    from platform_assets.streaming.config import load_streams
    from resources.kafka import KafkaResource

    with without_namespace():
        streams = load_streams(load_catalogue())
        topics = sorted({*streams.topics, streams.alerts_topic})
        groups = sorted({group_id(""), KafkaResource.model_fields["client_id"].default + "."})

    def allow(kind, name):
        return AclBinding(kind, name, ResourcePatternType.PREFIXED, f"User:{user}", "*",
                          AclOperation.ALL, AclPermissionType.ALLOW)

    return [allow(ResourceType.TOPIC, t) for t in topics] + [allow(ResourceType.GROUP, g) for g in groups]


def apply() -> int:
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    from platform_assets.settings import load_local_defaults
    from platform_assets.sources.config import load_catalogue
    from platform_assets.streaming.config import load_streams
    from platform_assets.streaming.topics import ensure_topics

    load_local_defaults()
    user, password = os.environ["KAFKA_SASL_USERNAME"], os.environ["KAFKA_SASL_PASSWORD"]
    admin = admin_client()
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    users = {"admin": os.environ["KAFKA_ADMIN_PASSWORD"], user: password}
    upserts = [UserScramCredentialUpsertion(u, info, p.encode()) for u, p in users.items()]
    for name, future in admin.alter_user_scram_credentials(upserts).items():
        future.result()
    print(f"{'kafka':<10} SCRAM-SHA-512 users: {', '.join(users)}")

    wanted = wanted_acls(user)
    current = admin.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}", None, AclOperation.ANY,
        AclPermissionType.ANY)).result()
    stale = [b for b in current if b not in wanted]
    if stale:
        for future in admin.delete_acls(stale).values():
            future.result()
    for future in admin.create_acls(wanted).values():
        future.result()
    print(f"{'kafka':<10} ACLs of User:{user}: " + ", ".join(
        f"{b.restype.name.lower()} {b.name}*" for b in wanted) + (f" ({len(stale)} stale removed)" if stale else ""))

    streams = load_streams(load_catalogue())
    for name, what in ensure_topics(admin, streams.topics).items():
        spec = streams.topics[name]
        print(f"{'topic':<10} {name} ({spec.partitions} partitions, replication {spec.replication_factor}): {what}")
    warm_group_coordinator(next(iter(streams.topics)))
    return 0


def warm_group_coordinator(topic: str) -> None:
    """Make the broker create __consumer_offsets now (on first use it is made lazily, which delays
    the first consumer group of a fresh broker by a second or more)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**admin_conf(), "group.id": "services.sh"})
    try:
        consumer.committed([TopicPartition(topic, 0)], timeout=60)
    finally:
        consumer.close()


def check_platform_login(deadline_s: float = 15.0) -> int:
    """The platform's own settings (SASL_SSL as its user) list its topics: what every client will do."""
    from resources import build_resources

    kafka = build_resources(resolved=True)["kafka"]
    end = time.monotonic() + deadline_s
    while True:  # SCRAM credentials reach the broker's metadata cache a moment after the upsert
        try:
            kafka.admin().list_topics(timeout=3)
            return 0
        except Exception as exc:  # noqa: BLE001
            if time.monotonic() > end:
                print(f"kafka: the platform's settings cannot reach the broker: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.3)


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["ready"]:
            sys.exit(ready())
        case ["apply"]:
            sys.exit(apply() or check_platform_login())
        case _:
            sys.exit(__doc__)
