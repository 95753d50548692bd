"""Servers stopped and restarted in the middle of work: the broker while producing and consuming,
PostgreSQL during a stream transaction and during a warehouse load.

The servers are this package's own (conftest.py), stopped and started with deploy/local/services.sh.
"""

from __future__ import annotations

import threading
import time

import dagster as dg
import pandas as pd
import pytest

from platform_assets.policies import IO_RETRY, retry_only_transient
from platform_assets.streaming.produce import FleetStream, produce
from platform_assets.streaming.topics import ensure_topics
from resources import build_resources
from tests.faults.streams import (
    catalogue,
    check_invariants,
    durable_total,
    harness,
    pending,
    produced_total,
    wait_for,
)
from tests.faults.supervise import Supervisor
from tests.integration.streaming_harness import STREAM, drop_topics, send

pytestmark = [pytest.mark.faults, pytest.mark.slow]
BROKER_RECOVERY_BOUND_S = 60.0  # from the broker answering again to every message durable
PG_RECOVERY_BOUND_S = 60.0  # from PostgreSQL answering again to every message durable
LOAD_RECOVERY_BOUND_S = 45.0  # IO_RETRY's backoff covers an outage of at least 24 s


@pytest.fixture()
def stream(private_env, tmp_path):
    streams = catalogue("continuous", max_messages=2000, max_wait=0.5)
    h = harness(streams, tmp_path / "lake")
    ensure_topics(h.kafka.admin(), streams.topics)
    yield h
    drop_topics(h.kafka.admin(), streams.topics)


def produce_in_background(h, count: int, rate: float, seed: int) -> tuple[threading.Thread, dict]:
    tally: dict = {}
    thread = threading.Thread(target=lambda: tally.update(produce(
        h.kafka, h.topic(), FleetStream(STREAM, machines=8, seed=seed, malformed=0.01), rate=rate, count=count,
        duration=None, progress=False)))
    thread.start()
    return thread, tally


def test_the_broker_stopped_and_restarted_while_producing_and_consuming(stream, private_env, tmp_path):
    h = stream
    consumer = Supervisor(h.streams, tmp_path / "sup").start()
    try:
        producer, tally = produce_in_background(h, 6000, rate=400, seed=1)
        wait_for("batches durable before the fault", lambda: durable_total(h) >= 800, timeout=90)
        down_for = private_env.down("kafka")
        time.sleep(3)  # producer keeps sending into its buffer; the consumer sees a dead broker
        private_env.up("kafka")
        back = time.monotonic()
        producer.join(120)
        assert tally["sent"] == 6000 and tally["failed"] == 0, tally
        consumer.finish_at(produced_total(h))
        consumer.join(BROKER_RECOVERY_BOUND_S + 60)
        recovery = time.monotonic() - back
    finally:
        consumer.stop()
    summary = check_invariants(h)
    assert summary["lost"] == 0 and summary["duplicated"] == 0
    assert summary["produced"] >= 6000  # the producer may resend after the outage: new offsets, each landed once
    print(f"\nbroker down {down_for:.1f} s + 3 s: all durable {recovery:.1f} s after it was back "
          f"(consumer restarts: {len(consumer.restarts)}), {summary}")
    assert recovery < BROKER_RECOVERY_BOUND_S, consumer.logs()


def test_postgres_restarted_during_a_stream_transaction(stream, private_env, tmp_path):
    h = stream
    send(h, 3000, malformed=0.02)
    # The first consumer holds its first batch's transaction open: PostgreSQL stops in the middle.
    consumer = Supervisor(h.streams, tmp_path / "sup", extra=["--hold-commit", "30"]).start()
    try:
        wait_for("the transaction open", lambda: consumer.workers and "TRANSACTION OPEN" in consumer.workers[0].tail(),
                 timeout=120)
        private_env.down("postgres")
        private_env.up("postgres")
        back = time.monotonic()
        assert durable_total(h) == 0 and pending(h)  # the open transaction was rolled back, its intent remains
        send(h, 1000, seed=2)
        consumer.finish_at(4000)
        consumer.join(PG_RECOVERY_BOUND_S + 60)
        recovery = time.monotonic() - back
    finally:
        consumer.stop()
    assert consumer.exits[0] != 0 and len(consumer.restarts) >= 1  # the first consumer died with its connection
    summary = check_invariants(h)
    assert produced_total(h) == 4000 and summary["lost"] == 0 and summary["duplicated"] == 0
    print(f"\npostgres restarted mid-transaction: all durable {recovery:.1f} s after it was back "
          f"(consumer restarts: {len(consumer.restarts)}), {summary}")
    assert recovery < PG_RECOVERY_BOUND_S, consumer.logs()


def test_postgres_restarted_during_a_warehouse_load(private_env):
    """A warehouse table loaded through the platform's IO manager with the platform's retry policy:
    PostgreSQL goes away while the load's transaction is open; the step is retried and the table
    holds exactly the frame (the load is one transaction: never a partial table).

    To catch the load mid-transaction every time, the test holds the table's load lock (the
    advisory lock ``WarehouseResource`` takes first in its transaction) until the server stops."""
    rows = 100_000
    frame = pd.DataFrame({"machine_id": [f"M{i % 50:03d}" for i in range(rows)], "value": range(rows)})
    attempts: list[int] = []

    @dg.asset(key=["warehouse", "faults", "load_under_restart"], io_manager_key="warehouse_io_manager",
              retry_policy=IO_RETRY)
    @retry_only_transient
    def loaded(context) -> pd.DataFrame:
        attempts.append(context.retry_number)
        return frame

    wh = build_resources(resolved=True)["warehouse"]
    wh.replace("faults", "load_under_restart", frame.head(10))  # the previous version of the table
    seen: list[int] = []  # rows of the table right after the restart: the old version or the new, whole
    restarted: list[float] = []
    blocker = pg_connect(wh)
    with blocker.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(hashtext('faults.load_under_restart'))")

    def restart_mid_load():
        wait_for("the load waiting in its transaction", lambda: wh.query(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")["n"][0] > 0,
                 timeout=60, every=0.1)
        private_env.down("postgres")  # the load's transaction and the blocker's session end here
        time.sleep(5)
        private_env.up("postgres")
        restarted.append(time.monotonic())
        seen.append(int(wh.query("SELECT count(*) AS n FROM faults.load_under_restart")["n"][0]))

    fault = threading.Thread(target=restart_mid_load)
    fault.start()
    resources = {k: v for k, v in build_resources().items() if k in ("warehouse_io_manager", "warehouse")}
    started = time.monotonic()
    try:
        result = dg.materialize([loaded], resources=resources, raise_on_error=False)
    finally:
        fault.join(90)
        blocker.close()
    took = time.monotonic() - started
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert len(attempts) >= 2  # the first attempt died with the server
    assert seen == [10]  # right after the restart: the previous version, whole
    table = wh.query("SELECT count(*) AS n, sum(value) AS s FROM faults.load_under_restart")
    assert int(table["n"][0]) == rows and int(table["s"][0]) == sum(range(rows))
    recovery, tries = time.monotonic() - restarted[0], len(attempts)
    checksum = "SELECT count(*) AS n, md5(string_agg(t::text, '|' ORDER BY t::text)) AS md5 FROM faults.load_under_restart t"
    retried = wh.query(checksum)
    dropper = pg_connect(wh)
    with dropper.cursor() as cur:
        cur.execute("DROP TABLE faults.load_under_restart")
    dropper.close()
    assert dg.materialize([loaded], resources=resources, raise_on_error=False).success  # a clean run
    pd.testing.assert_frame_equal(retried, wh.query(checksum))  # the table equals a clean run's, row for row
    print(f"\npostgres restarted during a {rows}-row load: {tries} attempts, table complete "
          f"{recovery:.1f} s after the server was back ({took:.1f} s in all), equal to a clean run's")
    assert recovery < LOAD_RECOVERY_BOUND_S


def pg_connect(wh):
    import psycopg2

    conn = psycopg2.connect(host=wh.host, port=wh.port, user=wh.user, password=wh.password, dbname=wh.database)
    conn.autocommit = True
    return conn
