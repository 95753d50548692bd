"""SIGKILL of a real stream process at each point of a batch, in both modes.

A micro-batch run (the sensor's request, executed by Dagster in a process of its own) and a
continuous consumer run are killed with SIGKILL at each point of the exactly-once protocol: after
the intent and before the first lake file, between the lake write and the PostgreSQL transaction,
and between the transaction and the offset commit. Then a new process (what the sensor starts
after a dead run) must finish the work with every message landed exactly once, within the bound.
"""

from __future__ import annotations

import signal
import time

import pytest

from platform_assets.streaming.assets import group_id
from platform_assets.streaming.topics import ensure_topics
from tests.faults.stream_proc import POINTS
from tests.faults.streams import (
    Worker,
    as_mode,
    catalogue,
    check_invariants,
    durable_total,
    harness,
    lake_offsets,
    pending,
    produced_total,
    store,
)
from tests.integration.streaming_harness import STREAM, drop_topics, send

pytestmark = [pytest.mark.faults, pytest.mark.slow]
RECOVERY_BOUND_S = 60.0  # a new process (imports, Dagster run start) plus the redo and the rest


@pytest.fixture()
def topics(private_env, tmp_path, request):
    mode = request.param
    streams = catalogue(mode, max_messages=700, batch=3000)  # a continuous batch: 700; a micro-batch: all
    h = harness(streams, tmp_path / "lake")
    ensure_topics(h.kafka.admin(), streams.topics)
    yield h, mode
    drop_topics(h.kafka.admin(), streams.topics)


@pytest.mark.parametrize("topics", ["micro_batch", "continuous"], indirect=True)
@pytest.mark.parametrize("point", POINTS)
def test_a_stream_process_killed_at_each_point_loses_and_duplicates_nothing(topics, point, tmp_path):
    h, mode = topics
    send(h, 1000, malformed=0.02)
    harness(as_mode(h.streams, "micro_batch"), h.lake_root).drain()  # durable history before the fault
    assert durable_total(h) == 1000
    send(h, 2000, malformed=0.02, seed=2)

    killed = Worker(h.streams, tmp_path / "w", mode, ["--kill-at", point, "--kill-batch", "1"]).start()
    assert killed.wait() == -signal.SIGKILL, killed.tail()
    assert f"SIGKILL at {point}" in killed.tail()

    # What the dead process left: never more than a pending intent and its files.
    state = check_invariants(h, complete=False)
    durable = state["durable"]
    if point == "before_commit":
        assert not pending(h) and durable > 1000
        committed = h.kafka.committed(group_id(STREAM), h.topic())
        assert sum(max(c, 0) for c in committed.values() if c is not None) < durable  # the commit never came
    else:
        assert pending(h) and durable == 1000
        ends = store(h).durable_ends(h.topic())
        unrecorded = [o for p, o in lake_offsets(h) if o >= ends.get(p, 0)]
        assert bool(unrecorded) == (point == "before_transaction")  # files written, range not recorded

    send(h, 500, seed=3)  # the stream goes on meanwhile
    started = time.monotonic()
    restarted = Worker(h.streams, tmp_path / "w", mode, ["--until", "3500"]).start()
    assert restarted.wait() == 0, restarted.tail()
    recovery = time.monotonic() - started
    assert durable_total(h) == produced_total(h) == 3500
    summary = check_invariants(h)
    assert summary["duplicated"] == 0 and summary["lost"] == 0
    print(f"\n{mode} killed {point}: recovered in {recovery:.1f} s (bound {RECOVERY_BOUND_S:.0f} s), {summary}")
    assert recovery < RECOVERY_BOUND_S
