"""Security enforced by the local Apache Kafka broker itself (deploy/local/services.sh, kafka).

The platform's settings (services.env) reach the broker over SASL_SSL as a SCRAM-SHA-512 user that
ACLs confine to the catalogue's topics and the platform's consumer groups; a second listener takes
mutual TLS with certificates from the local CA, a certificate's CN being its user. Every refusal
here comes from the broker: a wrong password, a certificate from a CA it does not trust, a topic or
group outside the ACLs.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from platform_assets.settings import PROJECT_ROOT, load_local_defaults, setting
from platform_assets.streaming.config import TopicSpec
from platform_assets.streaming.topics import ensure_topics
from resources.kafka import KafkaResource, KafkaUnavailable, OffsetRange
from tests.certificates import self_signed_tls

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka() -> KafkaResource:
    """The platform's own Kafka settings, as every asset, sensor and tool gets them."""
    from resources import build_resources

    load_local_defaults()
    return build_resources(resolved=True)["kafka"].model_copy(update={"timeout_seconds": 5.0})


def sign_client_cert(folder: Path, cn: str, ca_cert: str, ca_key: str) -> dict:
    """A client certificate for ``cn`` signed by the CA in ``ca_cert``/``ca_key``: paths of cert, key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    issuer = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
    issuer_key = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(issuer_key, hashes.SHA256()))
    paths = {"cert": folder / f"{cn}.crt", "key": folder / f"{cn}.key"}
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def local_ca(kafka) -> dict:
    """The local CA that services.sh made (its key beside the certificate the platform trusts)."""
    ca = Path(kafka.ssl_ca_location)
    assert ca.exists() and ca.with_name("ca.key").exists(), f"local CA missing beside {ca}: run services.sh up kafka"
    return {"cert": str(ca), "key": str(ca.with_name("ca.key"))}


def mtls(kafka: KafkaResource, cert: dict) -> KafkaResource:
    """The same client code over the mutual-TLS listener, authenticated by ``cert`` alone."""
    return KafkaResource(bootstrap_servers=f"127.0.0.1:{setting('KAFKA_MTLS_PORT')}", security_protocol="SSL",
                         ssl_ca_location=kafka.ssl_ca_location, ssl_certificate_location=cert["cert"],
                         ssl_key_location=cert["key"], timeout_seconds=5.0)


def refusal(conf: dict, seconds: float = 2.0) -> list[KafkaError]:
    """The errors librdkafka reports while trying to reach the broker with ``conf``."""
    errors: list[KafkaError] = []
    admin = AdminClient({**conf, "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=seconds)
    admin.poll(1)  # error callbacks are served by poll
    return errors


def drop_topics(admin: AdminClient, topics: list[str]) -> None:
    """Delete and wait: a request left in flight when its client is collected can abort the
    interpreter (librdkafka refuses to be destroyed from its own background thread)."""
    for future in admin.delete_topics(topics).values():
        future.result(30)


@pytest.fixture()
def own_topic(kafka):
    """A topic of the platform's (named after a catalogue topic), made and removed by its own user."""
    topic = f"iot.sensor-readings.broker-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(kafka.admin(), {topic: TopicSpec(partitions=2)})[topic] == "created"
    yield topic
    drop_topics(kafka.admin(), [topic])


def round_trip(client: KafkaResource, topic: str, group: str, n: int = 50) -> None:
    """Produce, read by exact offset ranges, commit and read the commit back: every client kind."""
    before = {p: high for p, (_, high) in client.watermarks(topic).items()}
    assert client.produce(topic, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(n)]) == n
    after = {p: high for p, (_, high) in client.watermarks(topic).items()}
    ranges = [OffsetRange(p, before[p], after[p]) for p in after]
    got = client.read_ranges(topic, ranges, timeout_seconds=20)
    assert sorted(m.value for m in got) == sorted(f"v{i}".encode() for i in range(n))
    client.commit(group, topic, {r.partition: r.end for r in ranges})
    assert client.committed(group, topic) == {r.partition: r.end for r in ranges}


def test_the_platform_settings_are_sasl_ssl_as_its_own_user(kafka, own_topic):
    conf = kafka.client_config()
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] not in ("admin", "kafka-broker")  # not a super user
    host, port = kafka.bootstrap_servers.rsplit(":", 1)
    admin = kafka.admin()
    assert [(n.host, n.port) for n in admin.describe_cluster().result(10).nodes] == [(host, int(port))]
    round_trip(kafka, own_topic, "platform.broker-test")


def test_a_wrong_password_is_refused_by_the_broker(kafka):
    errors = refusal({**kafka.client_config(), "sasl.password": "not-the-password"})
    assert any(e.code() == KafkaError._AUTHENTICATION and "invalid credentials" in e.str() for e in errors), errors
    unknown = refusal({**kafka.client_config(), "sasl.username": f"nobody-{uuid.uuid4().hex[:6]}"})
    assert any(e.code() == KafkaError._AUTHENTICATION for e in unknown), unknown


def test_mutual_tls_with_a_client_certificate_from_the_local_ca(kafka, local_ca, own_topic, tmp_path):
    """A certificate with CN=<platform user> is that user: same topics, same groups, no password."""
    cert = sign_client_cert(tmp_path, kafka.sasl_username, local_ca["cert"], local_ca["key"])
    round_trip(mtls(kafka, cert), own_topic, "platform.broker-test-mtls")
    # Another CN from the same CA is authenticated, but is nobody the ACLs know: it sees no topic.
    stranger = mtls(kafka, sign_client_cert(tmp_path, "stranger", local_ca["cert"], local_ca["key"]))
    assert own_topic not in stranger.admin().list_topics(timeout=5).topics


def test_an_untrusted_client_certificate_is_refused(kafka, local_ca, tmp_path):
    other = self_signed_tls(tmp_path / "other")  # a CA the broker does not trust, and a certificate from it
    base = {"bootstrap.servers": f"127.0.0.1:{setting('KAFKA_MTLS_PORT')}", "security.protocol": "SSL",
            "ssl.ca.location": kafka.ssl_ca_location}
    untrusted = refusal({**base, "ssl.certificate.location": other["cert"], "ssl.key.location": other["key"]})
    assert any("bad certificate" in e.str() for e in untrusted), untrusted  # the broker's TLS alert
    no_cert = refusal(base)
    assert any("alert" in e.str() for e in no_cert), no_cert  # certificate required
    # The client side: a broker whose certificate this CA did not sign is not trusted either.
    wrong_ca = refusal({**kafka.client_config(), "ssl.ca.location": other["ca"]})
    assert any("certificate verify failed" in e.str() for e in wrong_ca), wrong_ca


def test_topics_and_groups_outside_the_acls_are_denied(kafka, local_ca, own_topic, tmp_path):
    admin = mtls(kafka, sign_client_cert(tmp_path, "admin", local_ca["cert"], local_ca["key"])).admin()
    forbidden = f"forbidden.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(forbidden, num_partitions=1, replication_factor=1)])[forbidden].result(10)
    try:
        assert forbidden in admin.list_topics(timeout=5).topics            # the super user sees it...
        assert forbidden not in kafka.admin().list_topics(timeout=5).topics  # ...the platform's user does not
        with pytest.raises(KafkaUnavailable, match="TOPIC_AUTHORIZATION_FAILED"):
            kafka.produce(forbidden, [(b"k", b"v")])
        other = f"other.{uuid.uuid4().hex[:8]}"
        platform_admin = kafka.admin()
        futures = platform_admin.create_topics([NewTopic(other, num_partitions=1, replication_factor=1)])
        with pytest.raises(KafkaException) as created:
            futures[other].result(10)
        assert created.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        # Its own topic, but a consumer group not named as the platform's: refused at FindCoordinator.
        consumer = kafka.consumer(f"elsewhere.{uuid.uuid4().hex[:6]}")
        try:
            consumer.subscribe([own_topic])
            msg = next(filter(None, (consumer.poll(0.5) for _ in range(20))), None)
        finally:
            consumer.close()
        assert msg is not None and msg.error() and msg.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        drop_topics(admin, [forbidden])


def test_kafka_cli_tools_work_with_the_client_properties(kafka, own_topic):
    """deploy/local/kafka/bin wraps Kafka's own tools; services.sh writes the client properties."""
    state = Path(os.environ.get("SERVICES_STATE_DIR", PROJECT_ROOT / ".local" / "services"))
    props = (state if state.is_absolute() else PROJECT_ROOT / state) / "kafka" / "platform.properties"
    out = subprocess.run([str(PROJECT_ROOT / "deploy/local/kafka/bin/kafka-topics"), "--bootstrap-server",
                          kafka.bootstrap_servers, "--command-config", str(props), "--list"],
                         check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert own_topic in out.stdout.split()
