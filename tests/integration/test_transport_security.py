"""Encryption in transit to PostgreSQL, on the real local server (deploy/SECURITY.md).

services.sh serves TLS with a certificate from a local CA, and services.env sets libpq's
PGSSLMODE=verify-full and PGSSLROOTCERT, so every client of the platform verifies the server
without code of its own. These tests show the connections are encrypted and that verification
really refuses a server it cannot vouch for.
"""

from __future__ import annotations

import datetime as dt
import os

import psycopg2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.integration


def _connect(**overrides):
    params = {"host": os.environ["WAREHOUSE_HOST"], "port": os.environ["WAREHOUSE_PORT"],
              "user": os.environ["WAREHOUSE_USER"], "password": os.environ["WAREHOUSE_PASSWORD"],
              "dbname": os.environ["WAREHOUSE_DB"], "connect_timeout": 5, **overrides}
    return psycopg2.connect(**params)


def _other_ca(path) -> None:
    """A CA certificate that did not sign the server's certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_platform_settings_make_every_connection_verify_the_server(platform):
    assert os.environ["PGSSLMODE"] == "verify-full"
    assert os.path.isabs(os.environ["PGSSLROOTCERT"]) and os.path.exists(os.environ["PGSSLROOTCERT"])
    from resources import build_resources

    warehouse = build_resources(resolved=True)["warehouse"]
    frame = warehouse.query("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert bool(frame["ssl"].iloc[0]) is True
    assert frame["version"].iloc[0] in ("TLSv1.2", "TLSv1.3")


def test_every_tcp_client_of_the_server_is_encrypted(platform):
    """The platform's other clients (MLflow's backend store, Dagster storage...) too, not only ours."""
    with _connect() as conn, conn.cursor() as cur:
        cur.execute("""SELECT a.datname, a.application_name, s.ssl FROM pg_stat_activity a
                       JOIN pg_stat_ssl s USING (pid) WHERE a.client_addr IS NOT NULL""")
        rows = cur.fetchall()
    assert rows, "no TCP client connected"
    assert [r for r in rows if not r[2]] == []


def test_a_server_signed_by_another_ca_is_refused(platform, tmp_path):
    _other_ca(tmp_path / "other-ca.crt")
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        _connect(sslrootcert=str(tmp_path / "other-ca.crt"))
    # Encrypted but unverified (libpq verifies whenever a root file exists, so name none): the same
    # server answers, so it was the CA check that refused.
    _connect(sslmode="require", sslrootcert=str(tmp_path / "absent.crt")).close()
