"""Kafka security settings reach librdkafka identically for the admin, producer and consumer clients."""

import confluent_kafka
import confluent_kafka.admin
import pytest

from resources.kafka import KafkaResource
from tests.certificates import self_signed_tls

SECURE = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "platform",
          "sasl.password": "secret", "ssl.ca.location": "/etc/kafka/ca.pem"}


def resource(**kw) -> KafkaResource:
    return KafkaResource(bootstrap_servers="broker-1:9093,broker-2:9093", **kw)


def test_plaintext_passes_no_security_settings():
    assert resource().client_config() == {"bootstrap.servers": "broker-1:9093,broker-2:9093",
                                          "client.id": "dagster-ml-platform"}


def test_every_client_gets_the_same_security_settings(monkeypatch):
    seen = {}

    def recorder(kind):
        return lambda conf: seen.setdefault(kind, conf)

    monkeypatch.setattr(confluent_kafka, "Producer", recorder("producer"))
    monkeypatch.setattr(confluent_kafka, "Consumer", recorder("consumer"))
    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", recorder("admin"))
    kafka = resource(security_protocol="sasl_ssl", sasl_mechanism="SCRAM-SHA-512", sasl_username="platform",
                     sasl_password="secret", ssl_ca_location="/etc/kafka/ca.pem")
    kafka.admin(), kafka.producer(), kafka.consumer("g")
    assert set(seen) == {"admin", "producer", "consumer"}
    for conf in seen.values():
        assert {k: conf[k] for k in SECURE} == SECURE


def test_librdkafka_accepts_the_tls_files_and_rejects_a_missing_ca(tmp_path):
    tls = self_signed_tls(tmp_path)
    kafka = resource(security_protocol="SSL", ssl_ca_location=tls["ca"], ssl_certificate_location=tls["cert"],
                     ssl_key_location=tls["key"])
    kafka.admin(), kafka.producer(), kafka.consumer("g")  # librdkafka loads the CA, certificate and key here
    with pytest.raises(confluent_kafka.KafkaException, match="ssl.ca.location"):
        resource(security_protocol="SSL", ssl_ca_location=str(tmp_path / "missing.pem")).producer()


@pytest.mark.parametrize("settings, message", [
    ({"security_protocol": "TLS"}, "expected one of"),
    ({"sasl_username": "u", "sasl_password": "p"}, "not SASL_SSL"),
    ({"security_protocol": "SASL_PLAINTEXT", "ssl_ca_location": "/ca.pem"}, "not be encrypted"),
])
def test_settings_that_cannot_work_together_fail_early(settings, message):
    with pytest.raises(ValueError, match=message):
        resource(**settings).client_config()


def test_the_platform_reads_them_from_the_environment(monkeypatch):
    from resources import build_resources

    for key, value in {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                       "KAFKA_SASL_USERNAME": "platform", "KAFKA_SASL_PASSWORD": "secret",
                       "KAFKA_SSL_CA_LOCATION": "/etc/kafka/ca.pem"}.items():
        monkeypatch.setenv(key, value)
    conf = build_resources(resolved=True)["kafka"].client_config()
    assert {k: conf[k] for k in SECURE} == SECURE
