"""A stream worker in a process of its own, which the fault tests kill, restart or starve.

    python -m tests.faults.stream_proc --streams FILE --mode continuous|micro_batch \
        [--kill-at before_lake_write|before_transaction|before_commit --kill-batch N]
        [--until N | --until-file PATH] [--hold-commit SECONDS]

It runs the REAL stream job (the sensor's request, executed with Dagster in this process, as a run
worker does): in continuous mode the long-running consumer, in micro-batch mode tick → run → tick.
With ``--kill-at`` the process sends itself SIGKILL at that point of its N-th batch: the test wraps
the product's own steps here (the stream store and the lake resource), the product has no hook.
With ``--until N`` (or the number in ``--until-file``, read as it goes) it stops once that many
messages are durable (the consumer's ``stop``), exit code 0. ``--hold-commit`` keeps the first
batch's PostgreSQL transaction open until the server goes away (printing ``TRANSACTION OPEN``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

POINTS = ("before_lake_write", "before_transaction", "before_commit")


def die(point: str) -> None:
    print(f"SIGKILL at {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, batch: int) -> None:
    """Wrap the batch's steps so that the process dies at ``point`` of its ``batch``-th batch."""
    from resources.lake import LakeResource
    from resources.stream_store import StreamStore

    seen = {"intents": 0, "records": 0}
    record_intent, record_batch, write_parquet = (StreamStore.record_intent, StreamStore.record_batch,
                                                  LakeResource.write_parquet)

    def intent(self, *args, **kwargs):
        seen["intents"] += 1
        return record_intent(self, *args, **kwargs)

    def parquet(self, *args, **kwargs):  # step 3: the first file of the batch (the intent is recorded)
        if point == "before_lake_write" and seen["intents"] >= batch:
            die(point)
        return write_parquet(self, *args, **kwargs)

    def record(self, *args, **kwargs):  # step 5: the transaction; step 6 (the commit) follows it
        seen["records"] += 1
        if point == "before_transaction" and seen["records"] >= batch:
            die(point)
        out = record_batch(self, *args, **kwargs)
        if point == "before_commit" and seen["records"] >= batch:
            die(point)
        return out

    StreamStore.record_intent, StreamStore.record_batch, LakeResource.write_parquet = intent, record, parquet


class _HeldCommit:
    """A connection whose next COMMIT waits (the transaction stays open on the server meanwhile)."""

    def __init__(self, conn, seconds: float):
        self._conn, self._seconds = conn, seconds

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def commit(self):
        """Wait (the transaction open) until the server goes away or ``seconds`` pass, then COMMIT:
        a statement in the open transaction notices a server that went away, as COMMIT would."""
        print("TRANSACTION OPEN", flush=True)
        deadline = time.monotonic() + self._seconds
        with self._conn.cursor() as cur:
            while time.monotonic() < deadline:
                time.sleep(0.2)
                cur.execute("SELECT 1")  # raises once the server has closed the session
        return self._conn.commit()


def hold_commit(seconds: float) -> None:
    """The first batch's transaction (``record_batch``) stays open ``seconds`` before its COMMIT, so
    the test can restart PostgreSQL in the middle of it."""
    import contextlib

    from resources.stream_store import StreamStore

    record_batch, connect = StreamStore.record_batch, StreamStore._connect
    state = {"held": False, "in_record": False}

    @contextlib.contextmanager
    def held_connect(self):
        with connect(self) as conn:
            if state["in_record"] and not state["held"]:
                state["held"] = True
                yield _HeldCommit(conn, seconds)
            else:
                yield conn

    def record(self, *args, **kwargs):
        state["in_record"] = True
        try:
            return record_batch(self, *args, **kwargs)
        finally:
            state["in_record"] = False

    StreamStore._connect, StreamStore.record_batch = held_connect, record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", required=True, help="the stream catalogue (JSON)")
    parser.add_argument("--mode", choices=["continuous", "micro_batch"], required=True)
    parser.add_argument("--kill-at", choices=POINTS)
    parser.add_argument("--kill-batch", type=int, default=1)
    parser.add_argument("--until", type=int, help="stop once this many messages are durable")
    parser.add_argument("--until-file", help="stop once as many messages are durable as this file says")
    parser.add_argument("--hold-commit", type=float, default=0.0,
                        help="hold the first batch's transaction open this long before COMMIT (prints when)")
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args(argv)

    from pathlib import Path

    from platform_assets.streaming import continuous
    from platform_assets.streaming.config import StreamCatalogue
    from resources.stream_store import StreamStore
    from tests.integration.streaming_harness import Harness

    if args.kill_at:
        arm(args.kill_at, args.kill_batch)
    if args.hold_commit:
        hold_commit(args.hold_commit)
    streams = StreamCatalogue.model_validate_json(Path(args.streams).read_text())
    h = Harness(streams)
    store = StreamStore(warehouse=h.resources["warehouse"])
    deadline = time.monotonic() + args.timeout

    def done() -> bool:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {args.until} messages durable within {args.timeout:.0f} s")
        until = args.until
        if args.until_file and Path(args.until_file).exists():
            until = int(Path(args.until_file).read_text())
        return until is not None and sum(store.durable_ends(h.topic()).values()) >= until

    if args.mode == "continuous":
        consume = continuous.consume
        continuous.consume = lambda *a, **kw: consume(*a, **{**kw, "stop": done})
        request = h.tick().run_requests[0]
        result = h.execute(request)
        print(f"consumer run {result.run_id}: success={result.success}", flush=True)
        return 0 if result.success and done() else 1
    while not done():
        res = h.tick()
        for request in res.run_requests:
            result = h.execute(request)
            if not result.success:
                print(f"run {result.run_id} failed", flush=True)
                return 1
        if not res.run_requests:
            time.sleep(0.3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
