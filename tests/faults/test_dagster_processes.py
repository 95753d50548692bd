"""SIGKILL of Dagster's own processes while a continuous consumer runs: the webserver, then the daemon.

Neither holds state of its own (runs, events and cursors are in PostgreSQL), and the consumer run
is a process of its own: killing them must not stop the stream nor lose or duplicate a message, and
a new webserver or daemon (what Kubernetes' Deployment, or the developer, starts) picks up where
they were, with still exactly one consumer. A killed run process is the supervisor's case, tested
in tests/integration/test_streaming_continuous.py.
"""

from __future__ import annotations

import signal
import time

import pytest

from platform_assets.streaming.topics import ensure_topics
from tests.faults.streams import catalogue, check_invariants, durable_total, harness, produced_total, wait_for
from tests.integration.streaming_harness import drop_topics, send
from tests.integration.test_streaming_continuous import Live

pytestmark = [pytest.mark.faults, pytest.mark.slow]
WEBSERVER_BACK_BOUND_S = 60.0
DAEMON_BACK_BOUND_S = 60.0


@pytest.fixture()
def live(private_env, tmp_path):
    streams = catalogue("continuous", max_messages=2000, max_wait=0.5)
    h = harness(streams, tmp_path / "lake")
    ensure_topics(h.kafka.admin(), streams.topics)
    server = Live(tmp_path, streams, h.lake_root)
    try:
        wait_for("the webserver", server.answers, timeout=180, every=1)
        yield h, server
    finally:
        server.close()
        drop_topics(h.kafka.admin(), streams.topics)


def test_webserver_and_daemon_killed_while_the_consumer_runs(live):
    h, server = live
    consumer = wait_for("the sensor's consumer run", server.started_run, timeout=180, every=1)
    send(h, 2000, malformed=0.02)
    wait_for("2000 durable", lambda: durable_total(h) == 2000, timeout=60)

    # The webserver: the stream does not notice; a new one shows the same run, still going.
    server.procs["webserver"].send_signal(signal.SIGKILL)
    server.procs["webserver"].wait(10)
    send(h, 1000, seed=2)
    wait_for("3000 durable without a webserver", lambda: durable_total(h) == 3000, timeout=60)
    started = time.monotonic()
    server.restart("webserver")
    wait_for("a new webserver", server.answers, timeout=WEBSERVER_BACK_BOUND_S, every=0.5)
    webserver_back = time.monotonic() - started
    assert server.status(consumer) == "STARTED"

    # The daemon: the consumer run goes on (its process is not the daemon's); a new daemon's sensor
    # sees it in flight and starts no second consumer.
    server.procs["daemon"].send_signal(signal.SIGKILL)
    server.procs["daemon"].wait(10)
    send(h, 1000, seed=3)
    wait_for("4000 durable without a daemon", lambda: durable_total(h) == 4000, timeout=60)
    started = time.monotonic()
    server.restart("daemon")
    wait_for("the new daemon's sensor ticking", lambda: _sensor_ticked_since(server, started),
             timeout=DAEMON_BACK_BOUND_S, every=1)
    daemon_back = time.monotonic() - started
    send(h, 1000, seed=4)
    wait_for("5000 durable", lambda: durable_total(h) == produced_total(h) == 5000, timeout=60)
    in_flight = [r["runId"] for r in server.runs() if r["status"] in ("STARTED", "STARTING", "QUEUED")]
    assert in_flight == [consumer]  # still the one consumer
    summary = check_invariants(h)
    assert summary["lost"] == 0 and summary["duplicated"] == 0
    print(f"\nwebserver SIGKILL: stream unaffected, a new webserver answered in {webserver_back:.1f} s; "
          f"daemon SIGKILL: stream unaffected, a new daemon's sensor ticked in {daemon_back:.1f} s, "
          f"one consumer; {summary}")


def _sensor_ticked_since(server: Live, since_monotonic: float) -> bool:
    from dagster._core.definitions.run_request import InstigatorType

    since = time.time() - (time.monotonic() - since_monotonic)
    states = server.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    return any(server.instance.get_ticks(s.instigator_origin_id, s.selector_id, after=since, limit=1)
               for s in states)
