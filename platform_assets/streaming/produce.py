"""Stream the IoT fleet's readings or log events to Kafka at a chosen rate.

    python -m platform_assets.streaming.produce --stream sensor_readings --rate 500 --duration 60 \
        [--malformed 0.01] [--anomalies 0.001] [--machines 24] [--seed 7] [--registry]

Messages are keyed by machine (or service), JSON values that meet the source contract (checked here
before sending); ``--malformed`` injects a fraction of broken ones on purpose and ``--anomalies``
a fraction of spikes. Every message's delivery report is counted; a live line shows progress.
``--registry`` sends registry-framed messages (the stream's schema id before the JSON; see
platform_assets/streaming/registry.py); broken ones stay plain.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd

from resources.kafka import produce_waiting

BROKEN = (b'{"machine_id": "M001", "ts": ', b"not json at all", b'["a", "list"]',
          b'{"machine_id": "M001", "temperature": 20.0}')


class FleetStream:
    """Seeded generator of messages (key, value bytes, kind) for a stream."""

    def __init__(self, stream: str, machines: int = 24, seed: int = 7, malformed: float = 0.0,
                 anomalies: float = 0.0, clock=None):
        self.stream, self.rng = stream, np.random.default_rng(seed)
        self.machines = [f"M{i + 1:03d}" for i in range(machines)]
        self.malformed, self.anomalies = malformed, anomalies
        self.clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
        self.base = {m: self.rng.normal([65, 2.5, 6, 1500, 120], [5, 0.4, 0.8, 150, 15]) for m in self.machines}

    def _reading(self, machine: str, spike: bool) -> dict:
        t, v, p, r, w = self.base[machine] + self.rng.normal(0, [0.8, 0.08, 0.1, 10, 2])
        if spike:
            t, v = t + 45, v * 5
        return {"machine_id": machine, "ts": self.clock().isoformat(), "temperature": round(float(t), 2),
                "vibration": round(float(v), 3), "pressure": round(float(p), 3), "rpm": round(float(r), 1),
                "power": round(float(w), 2)}

    def _log(self, machine: str) -> dict:
        level = self.rng.choice(["DEBUG", "INFO", "WARN", "ERROR"], p=[0.2, 0.65, 0.1, 0.05])
        return {"ts": self.clock().isoformat(), "service": str(self.rng.choice(["ingest-gateway", "scada-bridge"])),
                "level": str(level), "message": f"{level.lower()} event", "machine_id": machine,
                "context": {"request_id": f"r{self.rng.integers(1e9)}", "latency_ms": round(float(self.rng.gamma(2, 20)), 1),
                            "user": {"id": int(self.rng.integers(1, 50)), "role": "operator"}}}

    def __iter__(self) -> Iterator[tuple[bytes, bytes, str]]:
        while True:
            machine = str(self.rng.choice(self.machines))
            roll = self.rng.random()
            if roll < self.malformed:
                yield machine.encode(), BROKEN[int(self.rng.integers(len(BROKEN)))], "malformed"
                continue
            spike = self.stream == "sensor_readings" and roll < self.malformed + self.anomalies
            doc = self._reading(machine, spike) if self.stream == "sensor_readings" else self._log(machine)
            key = doc["machine_id"] if self.stream == "sensor_readings" else doc["service"]
            yield key.encode(), json.dumps(doc).encode(), "anomaly" if spike else "valid"


def check_contract(values: list[bytes], contract) -> None:
    """The generator's valid messages must meet the contract: fail loudly rather than send bad data."""
    from platform_assets.sources.contract import apply_contract

    frame = pd.DataFrame([json.loads(v) for v in values])
    frame["_source_file"], frame["_source_row"] = "producer", range(len(frame))
    result = apply_contract("producer", frame, contract)
    if len(result.quarantine):
        raise ValueError(f"generated messages break the contract: {result.quarantine['reason'].iloc[0]}")


def produce(kafka, topic: str, source: FleetStream, rate: float, count: int | None, duration: float | None,
            contract=None, progress=True, frame=None) -> dict:
    """Send at ``rate`` messages/s until ``count`` or ``duration``; returns the delivery tally.
    ``frame`` (JSON bytes → framed bytes) opts the valid messages into the registry's wire format."""
    producer = kafka.producer()
    tally = {"sent": 0, "delivered": 0, "failed": 0, "valid": 0, "malformed": 0, "anomaly": 0}
    errors: list[str] = []

    def on_delivery(err, _msg):
        if err is None:
            tally["delivered"] += 1
        else:
            tally["failed"] += 1
            errors.append(str(err))

    started = last_print = time.monotonic()
    pending_check: list[bytes] = []
    for key, value, kind in source:
        if count is not None and tally["sent"] >= count:
            break
        now = time.monotonic()
        if duration is not None and now - started >= duration:
            break
        ahead = tally["sent"] / rate - (now - started)
        if ahead > 0:
            time.sleep(min(ahead, 0.05))
        if kind != "malformed" and contract is not None:
            pending_check.append(value)
            if len(pending_check) >= 500:
                check_contract(pending_check, contract)
                pending_check.clear()
        if frame is not None and kind != "malformed":
            value = frame(value)
        produce_waiting(producer, topic, key, value, on_delivery)
        producer.poll(0)
        tally["sent"] += 1
        tally[kind] += 1
        if progress and now - last_print >= 0.5:
            last_print = now
            print(f"\r{topic}: sent {tally['sent']:,}  delivered {tally['delivered']:,}  failed {tally['failed']}  "
                  f"{tally['sent'] / max(now - started, 1e-9):,.0f} msg/s", end="", file=sys.stderr, flush=True)
    producer.flush(30)
    tally["seconds"] = round(time.monotonic() - started, 3)
    if progress:
        print(f"\r{topic}: sent {tally['sent']:,}  delivered {tally['delivered']:,}  failed {tally['failed']}  "
              f"in {tally['seconds']:.1f} s" + " " * 10, file=sys.stderr)
    if errors:
        tally["errors"] = errors[:5]
    return tally


def main(argv=None) -> int:
    from platform_assets.settings import load_local_defaults
    from platform_assets.sources.config import load_catalogue
    from platform_assets.streaming.config import load_streams
    from resources import build_resources

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", default="sensor_readings")
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--duration", type=float, help="seconds to run")
    parser.add_argument("--count", type=int, help="messages to send")
    parser.add_argument("--malformed", type=float, default=0.0, help="fraction of broken messages")
    parser.add_argument("--anomalies", type=float, default=0.0, help="fraction of spikes (sensor readings)")
    parser.add_argument("--machines", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--registry", action="store_true", help="registry-framed messages (SCHEMA_REGISTRY_URL)")
    args = parser.parse_args(argv)
    if args.duration is None and args.count is None:
        parser.error("give --duration or --count")
    load_local_defaults()
    sources = load_catalogue()
    streams = load_streams(sources)
    if args.stream not in streams.streams:
        parser.error(f"unknown stream {args.stream!r}; known: {', '.join(streams.streams)}")
    kafka = build_resources(resolved=True)["kafka"]  # every KAFKA_* setting (SASL, TLS), not only the bootstrap
    source = FleetStream(args.stream, args.machines, args.seed, args.malformed, args.anomalies)
    frame = None
    if args.registry:
        from platform_assets.settings import setting
        from platform_assets.streaming.registry import stream_framer

        frame = stream_framer(streams, args.stream, sources, setting("SCHEMA_REGISTRY_URL"))
    tally = produce(kafka, streams.streams[args.stream].topic, source, args.rate, args.count, args.duration,
                    contract=streams.contract(args.stream, sources), frame=frame)
    print(json.dumps(tally))
    return 1 if tally["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
