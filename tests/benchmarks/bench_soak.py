"""Soak benchmark: minutes of steady production with random faults, then the exactly-once invariants.

A private set of servers (PostgreSQL, Kafka, Redis, MLflow on free ports, deploy/local/services.sh
with a state folder of its own: the shared servers are never touched) carries the sensor readings
stream in ``--mode`` (continuous by default) on topics of its own. A producer sends at ``--rate``
messages/s for ``--minutes``; a supervisor keeps one consumer process running (replacing it when it
dies, as the stream's sensor does); every ``--fault-every`` seconds (±30%) one fault hits it, each
of the list once per round in a random order:

- ``consumer_sigkill``: SIGKILL of the consumer process at a random instant of its work;
- ``broker_restart``: Kafka stopped, down for 2-5 s, started again (the producer keeps sending);
- ``postgres_restart``: PostgreSQL (warehouse, stream store) stopped and started again;
- ``redis_restart``: Redis (online features) stopped and started again.

The recovery time of a fault is from the moment it ends (server answering again, or the kill) until
every message produced before that moment is durable. At the end production stops, the backlog
drains, and the invariants are checked (tests/faults/streams.py: every produced message once in
the lake or among the dead letters by (partition, offset), batches without gap or overlap, committed
offsets never ahead of durable ones).

    .venv/bin/python tests/benchmarks/bench_soak.py [--minutes 2] [--rate 200] [--fault-every 40] [--seed 1]

Prints produced, landed, dead-lettered, duplicated (must be 0), lost (must be 0) and each fault's
recovery; the last line of stdout is one JSON object. Exit code 1 if an invariant failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

FAULTS = ("consumer_sigkill", "broker_restart", "postgres_restart", "redis_restart")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes of production")
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--fault-every", type=float, default=40.0, help="mean seconds between faults")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset of " + ", ".join(FAULTS))
    parser.add_argument("--mode", choices=["continuous", "micro_batch"], default="continuous")
    parser.add_argument("--malformed", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")

    from tests.faults.services import PrivateServices

    root = Path(tempfile.mkdtemp(prefix="soak-"))
    root.chmod(0o711)  # PostgreSQL runs as user postgres when this runs as root
    services = PrivateServices(root)
    log(f"private servers under {root} (log {services.log})")
    try:
        services.up()
        os.environ.update(services.env)
        os.environ["LAKE_ROOT"] = str(root / "lake")
        from platform_assets.settings import load_local_defaults

        load_local_defaults()
        result = soak(args, faults, services, root)
    finally:
        services.down()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))
    return 0 if result["invariants_ok"] else 1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def soak(args, faults: list[str], services, root: Path) -> dict:
    from platform_assets.streaming.produce import FleetStream, produce
    from platform_assets.streaming.topics import ensure_topics
    from tests.faults.streams import catalogue, check_invariants, durable_total, harness, produced_total
    from tests.faults.supervise import Supervisor
    from tests.integration.streaming_harness import STREAM, drop_topics

    rng = random.Random(args.seed)
    streams = catalogue(args.mode, max_messages=5000, max_wait=1.0, batch=20000)
    h = harness(streams, root / "lake")
    ensure_topics(h.kafka.admin(), streams.topics)
    consumer = Supervisor(streams, root / "consumer", mode=args.mode).start()
    tally: dict = {}
    duration = args.minutes * 60
    producer = threading.Thread(target=lambda: tally.update(produce(
        h.kafka, h.topic(), FleetStream(STREAM, machines=24, seed=args.seed, malformed=args.malformed),
        rate=args.rate, count=None, duration=duration, progress=False)), daemon=True)
    started = time.monotonic()
    producer.start()
    log(f"producing {args.rate:g} msg/s for {args.minutes:g} min to {h.topic()}, {args.mode} consumer, "
        f"a fault every ~{args.fault_every:g} s from {faults}")
    events: list[dict] = []
    pending: list[dict] = []  # faults whose recovery is being measured

    def measure() -> None:
        """Close the recoveries whose backlog (produced before the fault ended) is now durable."""
        if not pending:
            return
        try:
            durable = durable_total(h)
        except Exception:  # noqa: BLE001 - PostgreSQL may be the one down
            return
        for event in list(pending):
            if durable >= event["backlog"]:
                event["recovery_s"] = round(time.monotonic() - event["ended"], 2)
                pending.remove(event)
                log(f"{event['fault']}: recovered in {event['recovery_s']:.1f} s")

    bag: list[str] = []
    next_fault = started + rng.uniform(0.7, 1.3) * args.fault_every
    while producer.is_alive():
        measure()
        now = time.monotonic()
        if now >= next_fault and now - started < duration - 5:
            if not bag:  # each fault once per round, in a random order
                bag = rng.sample(faults, len(faults))
            fault = bag.pop()
            event = inject(fault, services, consumer, rng)
            event["ended"] = time.monotonic()
            event["at_s"] = round(event["ended"] - started, 1)
            event["backlog"] = retried(lambda: produced_total(h))  # the broker may have just come back
            events.append(event)
            pending.append(event)
            log(f"{fault} at {event['at_s']:.0f} s ({event.get('detail', '')}); "
                f"{event['backlog']} messages to be durable")
            next_fault = time.monotonic() + rng.uniform(0.7, 1.3) * args.fault_every
        time.sleep(0.25)
    producer.join()
    produced = retried(lambda: produced_total(h))
    log(f"production over: {tally.get('sent')} sent, {tally.get('delivered')} delivered, {tally.get('failed')} "
        f"failed; draining to {produced}")
    consumer.finish_at(produced)
    drain_started = time.monotonic()
    while consumer.running() and time.monotonic() - drain_started < args.drain_timeout:
        measure()
        time.sleep(0.5)
    measure()
    drained = not consumer.running()
    consumer.stop()
    try:
        summary = check_invariants(h)
        ok, problem = True, None
    except AssertionError as exc:
        ok, problem = False, str(exc)[:500]
        try:  # the counts so far, if at least those hold
            summary = check_invariants(h, complete=False)
        except AssertionError as partial:
            summary, problem = {}, f"{problem}; {str(partial)[:300]}"
    drop_topics(h.kafka.admin(), streams.topics)
    recoveries = [e["recovery_s"] for e in events if "recovery_s" in e]
    per_fault = {f: [e.get("recovery_s") for e in events if e["fault"] == f] for f in faults}
    result = {
        "minutes": args.minutes, "rate": args.rate, "mode": args.mode,
        "produced": summary.get("produced"), "landed": summary.get("landed"),
        "dead_lettered": summary.get("dead_lettered"), "duplicated": summary.get("duplicated"),
        "lost": summary.get("lost"), "producer_failed": tally.get("failed"),
        "consumer_restarts": len(consumer.restarts), "drain_seconds": round(time.monotonic() - drain_started, 1),
        "faults": [{k: e[k] for k in ("fault", "at_s", "recovery_s", "detail") if k in e} for e in events],
        "recovery_s": {f: {"n": len(v), "max": max((x for x in v if x is not None), default=None),
                           "unrecovered": sum(x is None for x in v)} for f, v in per_fault.items()},
        "recovery_p50_s": round(statistics.median(recoveries), 2) if recoveries else None,
        "recovery_max_s": max(recoveries) if recoveries else None,
        "invariants_ok": ok and drained, "problem": problem if ok is False else (None if drained else "drain timed out"),
    }
    print(f"produced {result['produced']}, landed {result['landed']}, dead-lettered {result['dead_lettered']}, "
          f"duplicated {result['duplicated']}, lost {result['lost']}; {len(events)} faults, consumer restarts "
          f"{result['consumer_restarts']}")
    for e in events:
        print(f"  {e['at_s']:7.1f} s  {e['fault']:<17} recovery {e.get('recovery_s', 'n/a')} s  {e.get('detail', '')}")
    return result


def retried(call, seconds: float = 60.0):
    """``call()``, asked again every second while a server is coming back."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except Exception:  # any client error while the server restarts
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def inject(fault: str, services, consumer, rng: random.Random) -> dict:
    """One fault, done when the server is back (or the process killed)."""
    if fault == "consumer_sigkill":
        killed = consumer.kill_current()
        return {"fault": fault, "detail": f"pid {killed}" if killed else "no consumer running"}
    name = {"broker_restart": "kafka", "postgres_restart": "postgres", "redis_restart": "redis"}[fault]
    down_for = rng.uniform(2, 5)
    services.down(name)
    time.sleep(down_for)
    up = services.up(name)
    return {"fault": fault, "detail": f"down {down_for:.1f} s, restart took {up:.1f} s"}


if __name__ == "__main__":
    sys.exit(main())
