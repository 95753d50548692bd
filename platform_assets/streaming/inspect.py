"""Show a stream's topic: watermarks, consumer-group and durable offsets, lag, and the latest messages.

    python -m platform_assets.streaming.inspect [--stream sensor_readings] [--tail 3] [--follow]
"""

from __future__ import annotations

import argparse
import sys
import time


def snapshot(kafka, store, topic: str, group: str) -> list[dict]:
    marks = kafka.watermarks(topic)
    committed = kafka.committed(group, topic)
    durable = store.durable_ends(topic) if store is not None else {}
    rows = []
    for p, (low, high) in sorted(marks.items()):
        done = durable.get(p, committed.get(p, -1))
        start = max(done, low) if done >= 0 else low
        rows.append({"partition": p, "low": low, "high": high, "committed": committed.get(p, -1),
                     "durable": durable.get(p, -1), "lag": high - start})
    return rows


def render(topic: str, group: str, rows: list[dict]) -> str:
    lines = [f"topic {topic}  group {group}  total lag {sum(r['lag'] for r in rows):,}",
             f"{'partition':>9} {'low':>10} {'high':>10} {'committed':>10} {'durable':>10} {'lag':>8}"]
    lines += [f"{r['partition']:>9} {r['low']:>10,} {r['high']:>10,} {r['committed']:>10,} {r['durable']:>10,} "
              f"{r['lag']:>8,}" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    from platform_assets.catalogue import load_catalogues
    from platform_assets.settings import load_local_defaults
    from platform_assets.streaming.assets import group_id
    from resources import build_resources
    from resources.kafka import OffsetRange, TopicNotFound

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", default="sensor_readings")
    parser.add_argument("--tail", type=int, default=3, help="latest messages to show per partition")
    parser.add_argument("--follow", action="store_true", help="refresh every 2 s until Ctrl-C")
    args = parser.parse_args(argv)
    load_local_defaults()
    streams = load_catalogues().streams
    known = streams.streams if streams else {}
    if args.stream not in known:
        parser.error(f"unknown stream {args.stream!r}; known: {', '.join(known) or 'none (no stream catalogue)'}")
    topic, group = streams.streams[args.stream].topic, group_id(args.stream)
    configured = build_resources(resolved=True)
    kafka = configured["kafka"]
    from resources.stream_store import StreamStore

    try:
        store = StreamStore(warehouse=configured["warehouse"])
        store.durable_ends(topic)
    except ConnectionError as exc:
        print(f"(warehouse not reachable, durable offsets not shown: {exc})", file=sys.stderr)
        store = None
    try:
        while True:
            rows = snapshot(kafka, store, topic, group)
            print(render(topic, group, rows))
            if args.tail:
                ranges = [OffsetRange(r["partition"], max(r["low"], r["high"] - args.tail), r["high"]) for r in rows]
                for m in kafka.read_ranges(topic, ranges, timeout_seconds=10):
                    print(f"  p{m.partition}@{m.offset} key={m.key!r} {(m.value or b'')[:120].decode(errors='replace')}")
            if not args.follow:
                return 0
            time.sleep(2)
            print()
    except TopicNotFound as exc:
        print(f"{exc}: run make services-up", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
