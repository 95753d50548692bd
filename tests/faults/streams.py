"""Stream fixtures shared by the fault tests and the soak benchmark: a catalogue on topics of the
test's own, a stream worker in a child process, and the invariants every fault must leave intact.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as ds

from platform_assets.settings import PROJECT_ROOT
from platform_assets.sources.config import load_catalogue
from platform_assets.streaming.assets import group_id
from platform_assets.streaming.config import StreamCatalogue, load_streams
from resources.stream_store import StreamStore
from tests.integration.streaming_harness import STREAM, Harness, renamed
from tests.integration.streaming_harness import wait_for as harness_wait_for


def catalogue(mode: str, max_messages: int = 700, max_wait: float = 0.5, batch: int = 700) -> StreamCatalogue:
    """The sensor readings stream alone, on topics of its own, in ``mode``; small batches so a few
    thousand messages make several of them."""
    base = renamed(load_streams(load_catalogue(), environ={}), uuid.uuid4().hex[:8], mode=mode)
    stream = base.streams[STREAM]
    stream = stream.model_copy(update={"max_wait": max_wait, "max_messages": max_messages, "trigger": stream.trigger.model_copy(
        update={"min_messages": 1, "max_wait_seconds": 0.5, "max_batch_messages": batch})})
    return StreamCatalogue(topics={t: base.topics[t] for t in (stream.topic, base.alerts_topic)},
                           alerts_topic=base.alerts_topic, streams={STREAM: stream})


def as_mode(streams: StreamCatalogue, mode: str) -> StreamCatalogue:
    """The same catalogue (same topics and tables) in another mode."""
    return streams.model_copy(update={"streams": {n: s.model_copy(update={"mode": mode})
                                                  for n, s in streams.streams.items()}})


def harness(streams: StreamCatalogue, lake_root: Path) -> Harness:
    h = Harness(streams)
    h.lake_root = lake_root
    return h


def store(h: Harness) -> StreamStore:
    return StreamStore(warehouse=h.resources["warehouse"])


def durable_total(h: Harness) -> int:
    return sum(store(h).durable_ends(h.topic()).values())


def produced_total(h: Harness) -> int:
    return sum(high for _, high in h.kafka.watermarks(h.topic()).values())


def pending(h: Harness) -> list:
    return store(h).pending_intents(h.topic(), list(h.kafka.partitions(h.topic())))


# The harness's poll, tighter: recovery times are measured with it.
wait_for = functools.partial(harness_wait_for, every=0.3)


@dataclass
class Worker:
    """tests/faults/stream_proc.py in a child process (the test's environment: private servers)."""

    streams: StreamCatalogue
    folder: Path
    mode: str
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "streams.json"
        path.write_text(self.streams.model_dump_json())
        self.log = self.folder / f"worker-{uuid.uuid4().hex[:6]}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.faults.stream_proc", "--streams", str(path),
                                          "--mode", self.mode, *self.args], cwd=PROJECT_ROOT, env=dict(os.environ),
                                         stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker still running after {timeout:.0f} s:\n{self.tail()}") from None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def lake_offsets(h: Harness) -> list[tuple[int, int]]:
    path = h.lake_root / "stream" / STREAM
    if not path.exists():
        return []
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table(columns=["_partition", "_offset"])
    return list(zip(table["_partition"].to_pylist(), table["_offset"].to_pylist()))


def check_invariants(h: Harness, complete: bool = True) -> dict:
    """The invariants of every fault test; a summary of the counts.

    - every produced message is in the lake or among the dead letters exactly once, by
      (partition, offset) — with ``complete``, all of them; otherwise no duplicate and nothing
      outside the durable ranges except what a pending intent names (a redo replaces those files);
    - ``streaming.batches`` tiles each partition from 0 without gap or overlap;
    - the consumer group's committed offsets are never ahead of the durable ends (and equal them
      when ``complete``);
    - with ``complete``, no intent is left pending."""
    marks = h.kafka.watermarks(h.topic())
    wh = h.resources["warehouse"]
    landed = lake_offsets(h)
    dead = {(int(p), int(o)) for p, o in wh.query(
        'SELECT partition, "offset" FROM streaming.dead_letters WHERE topic = %s', (h.topic(),)).itertuples(index=False)}
    duplicated = len(landed) - len(set(landed))
    assert duplicated == 0, f"{duplicated} messages twice in the lake"
    landed = set(landed)
    assert not landed & dead, "messages both in the lake and among the dead letters"
    batches = wh.query("SELECT partition, start_offset, end_offset FROM streaming.batches WHERE topic = %s "
                       "ORDER BY partition, start_offset", (h.topic(),))
    durable = {}
    for p in marks:
        rows = batches[batches["partition"] == p]
        ends = [0, *rows["end_offset"].tolist()]
        assert rows["start_offset"].tolist() == ends[:-1], f"partition {p}: gap or overlap in {rows.values.tolist()}"
        durable[p] = ends[-1]
    recorded = {(p, o) for p, end in durable.items() for o in range(end)}
    produced = {(p, o) for p, (_, high) in marks.items() for o in range(high)}
    intents = pending(h)
    redo = {(r.partition, o) for r in intents for o in range(r.start, r.end)}
    assert (landed | dead) - recorded <= redo, "lake rows outside every durable or pending range"
    assert recorded <= landed | dead, f"{len(recorded - landed - dead)} recorded offsets missing from lake/dead letters"
    committed = h.kafka.committed(group_id(STREAM), h.topic())
    ahead = {p: (c, durable.get(p, 0)) for p, c in committed.items() if c is not None and c >= 0 and c > durable.get(p, 0)}
    assert not ahead, f"committed offsets ahead of durable ends: {ahead}"
    if complete:
        assert recorded == produced, f"durable {len(recorded)} of {len(produced)} produced"
        assert landed | dead == produced
        assert not intents, f"intents left pending: {intents}"
        used = {p: high for p, (_, high) in marks.items() if high > 0}
        assert {p: committed.get(p) for p in used} == used, f"committed {committed} != {used}"
    return {"produced": len(produced), "landed": len(landed), "dead_lettered": len(dead), "duplicated": duplicated,
            "lost": len(produced - landed - dead) if complete else None, "durable": len(recorded)}


