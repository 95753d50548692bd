"""Encryption in transit to PostgreSQL and Redis, on real local servers (deploy/SECURITY.md).

services.sh serves TLS with a certificate from a local CA, and services.env sets libpq's
PGSSLMODE=verify-full and PGSSLROOTCERT, so every client of the platform verifies the server
without code of its own. These tests show the connections are encrypted and that verification
really refuses a server it cannot vouch for. Redis: a redis-server of the test's own on a TLS port,
with certificates made here, read and written through the platform's online-store resource.
Kafka's TLS, SASL and ACLs are enforced by the local Apache Kafka broker: test_kafka_broker.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest

from tests.certificates import self_signed_tls
from tests.integration.conftest import free_port, pg_connect

pytestmark = pytest.mark.integration


def test_platform_settings_make_every_connection_verify_the_server(platform):
    assert os.environ["PGSSLMODE"] == "verify-full"
    assert os.path.isabs(os.environ["PGSSLROOTCERT"]) and os.path.exists(os.environ["PGSSLROOTCERT"])
    from resources import build_resources

    warehouse = build_resources(resolved=True)["warehouse"]
    frame = warehouse.query("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert bool(frame["ssl"].iloc[0]) is True
    assert frame["version"].iloc[0] in ("TLSv1.2", "TLSv1.3")


def test_every_tcp_client_of_the_server_is_encrypted(platform):
    """The platform's other clients too: MLflow's server keeps pooled connections to its backend."""
    import mlflow

    mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).search_experiments(max_results=1)
    with pg_connect(connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("""SELECT a.datname, s.ssl FROM pg_stat_activity a
                       JOIN pg_stat_ssl s USING (pid) WHERE a.client_addr IS NOT NULL AND a.pid <> pg_backend_pid()""")
        rows = cur.fetchall()
    assert os.environ["MLFLOW_DB"] in {db for db, _ in rows}, rows
    assert [r for r in rows if not r[1]] == []


def test_a_server_signed_by_another_ca_is_refused(platform, tmp_path):
    other = self_signed_tls(tmp_path)["ca"]  # a CA that did not sign the server's certificate
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        pg_connect(connect_timeout=5, sslrootcert=other)
    # Encrypted but unverified (libpq verifies whenever a root file exists, so name none): the same
    # server answers, so it was the CA check that refused.
    pg_connect(connect_timeout=5, sslmode="require", sslrootcert=str(tmp_path / "absent.crt")).close()


# -- Redis -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    tls = self_signed_tls(tmp_path_factory.mktemp("redis_tls"))
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-auth-clients", "no",
         "--tls-cert-file", tls["cert"], "--tls-key-file", tls["key"], "--tls-ca-cert-file", tls["ca"],
         "--save", "", "--appendonly", "no", "--dir", str(Path(tls["ca"]).parent)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "TLS redis-server did not start"
            time.sleep(0.1)
    try:
        yield port, tls["ca"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_online_store_over_tls_round_trips_features(tls_redis):
    import pandas as pd

    from resources.online_store import OnlineStoreResource

    port, ca = tls_redis
    store = OnlineStoreResource(host="127.0.0.1", port=port, tls=True, tls_ca_certs=ca)
    rows = pd.DataFrame({"machine_id": ["M-1", "M-2"], "as_of": ["2026-11-07T00:00", "2026-11-07T00:00"],
                         "temperature_mean_6h": [71.5, 64.25]})
    assert store.write_latest("machine_hourly", "machine_id", rows, "as_of") == 2
    got = store.read("machine_hourly", ["M-1", "M-2", "M-3"])
    assert got["M-2"]["temperature_mean_6h"] == 64.25 and got["M-3"] is None


def test_online_store_refuses_plaintext_and_unknown_ca(tls_redis, tmp_path):
    import redis

    from resources.online_store import OnlineStoreResource

    port, _ = tls_redis
    with pytest.raises(redis.ConnectionError):
        OnlineStoreResource(host="127.0.0.1", port=port).client().ping()
    other = self_signed_tls(tmp_path)["ca"]
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        OnlineStoreResource(host="127.0.0.1", port=port, tls=True, tls_ca_certs=other).client().ping()
