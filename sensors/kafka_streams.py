"""One sensor per stream: watermarks in, micro-batch run requests out.

The sensor never consumes and never blocks past its tick: it reads the durable end offsets (the
warehouse's ``streaming.batches``, written in the same transaction as the data) and the topic's
high watermarks, and asks for a run covering the difference when the backlog is big enough
(``min_messages``) or has waited long enough (``max_wait_seconds``).

The partitions are split into ``parallelism`` disjoint shards (partition % parallelism: stable, and a
partition added to the topic joins a shard without moving the others). Each shard makes one batch
durable at a time, so a partition's batches land in offset order, N shards run in parallel (N pods
on Kubernetes), and while a batch runs its shard's backlog grows and the next batch is bigger, which
amortises the per-run overhead under load. A shard is busy while any in-flight run of the stream
covers one of its partitions, and failed runs are retried before anything new is planned, so a
change of parallelism never lets two runs read one partition.

Latency (README, "Micro-batch latency"): a run costs seconds before its batch starts (a fresh
process importing the code location, loading the champion), so after a shard's first batch its
batches are **standby runs**: requested with no ranges, up to ``STANDBY_DEPTH`` (2) per shard in
flight, each warms up while the batch before it works, then takes the shard's lock (the one the
continuous consumers hold) and the shard's whole backlog at that moment, named in an intent as
every batch is. A standby run that fails after naming its ranges is redone exactly from that
intent. A small backlog is requested at the last tick before it would have waited
``max_wait_seconds`` (the daemon evaluates sensors every 5 s at best), and runs are launched
without the run queue (jobs/run_coordinator.py).

A failed (or canceled) run's ranges are requested again, unchanged, under a new run key
(``...#retry-N``), so a failed range is retried, never skipped, and never split differently (its lake
files are named by the range: a retry replaces them). So is a range a consumer named in an intent
and never recorded (a continuous consumer killed mid-batch before a switch to micro-batch).

In ``continuous`` mode the same sensor supervises instead: per shard, when no run of the shard is in
flight, it requests one long-running consumer run (run key ``stream/shard-N:continuous:after-<the
previous run>``, so a consumer that died or was stopped is replaced at the next tick).
"""

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

import dagster as dg

from jobs.run_coordinator import SKIP_QUEUE_TAG
from platform_assets.streaming.assets import MODE_TAG, group_id, topic_key
from platform_assets.streaming.config import StreamConfig
from resources.kafka import KafkaResource, OffsetRange, TopicNotFound
from resources.stream_store import StreamStore

MAX_ATTEMPTS = 5
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
RETRIED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
SHARD_TAG, PARALLELISM_TAG = "stream/shard", "stream/parallelism"
# A standby run takes its shard's backlog when its turn comes (its ranges are not in its config).
STANDBY_TAG = "stream/standby"
# Runs of one shard in flight at most in micro-batch mode: one making its batch durable, one
# standing by (started, warmed up, waiting for the shard's lock).
STANDBY_DEPTH = 2
# A consumer logs an event at least every 10 s (batches, lag observations). A STARTED run silent for
# longer than this lost its process without Dagster noticing (e.g. its code server died with the
# daemon): the sensor marks it failed and replaces it. (A run process that dies under a living code
# server, even by SIGKILL, is marked failed by the code server itself.)
SILENT_AFTER_S = 90.0
# The time to the next tick is estimated as the time since the last one (the cursor keeps it),
# at most this: after a long pause (daemon restarted) the next tick is about as far as usual.
MAX_TICK_S = 30.0


class PastRun(NamedTuple):
    """What planning needs from a run of the stream (newest first in histories)."""

    run_id: str
    failed: bool  # failed or canceled: its ranges are retried unchanged if nothing was recorded
    ranges: tuple[OffsetRange, ...]


class ShardPlan(NamedTuple):
    shard: int
    ranges: list[OffsetRange]  # empty: nothing requested this tick (see reason), or a standby run
    attempt: int  # 0: a new batch; n: the n-th retry of a failed one
    reason: str | None  # why nothing was requested
    backlog_since: float | None
    standby: bool = False  # request a standby run: it takes the shard's backlog when its turn comes

    @property
    def requested(self) -> bool:
        return bool(self.ranges) or self.standby


def shard_of(partition: int, parallelism: int) -> int:
    return partition % parallelism


def shards(partitions, parallelism: int) -> dict[int, list[int]]:
    """Shard → its partitions, for every shard (a shard may have none while partitions < parallelism)."""
    out: dict[int, list[int]] = {s: [] for s in range(parallelism)}
    for p in sorted(partitions):
        out[shard_of(p, parallelism)].append(p)
    return out


def initial_origin(stream: StreamConfig, durable: dict[int, int], marks: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Where partitions without a durable end start: the high watermarks for a brand-new ``latest``
    stream (kept in the sensor's cursor, so later ticks do not keep skipping ahead), else nothing."""
    if stream.start_from == "latest" and not durable:
        return {p: high for p, (_, high) in marks.items()}
    return {}


def plan_ranges(stream: StreamConfig, durable: dict[int, int], marks: dict[int, tuple[int, int]],
                origin: dict[int, int] | None = None) -> list[OffsetRange]:
    """From the durable end to the high watermark, capped per batch. A partition without a durable end
    starts at its ``origin`` if it has one, else at its low watermark: a partition added to the topic
    while the platform runs is read from its beginning."""
    if origin is None:
        origin = initial_origin(stream, durable, marks)
    ranges, budget = [], stream.trigger.max_batch_messages
    per_partition = max(1, budget // max(1, len(marks)))
    for p, (low, high) in sorted(marks.items()):
        start = durable.get(p, origin.get(p, low))
        start = max(start, low)  # messages removed by retention cannot be read
        end = min(high, start + per_partition)
        if end > start:
            ranges.append(OffsetRange(p, start, end))
    return ranges


def start_offsets(durable: dict[int, int], marks: dict[int, tuple[int, int]], origin: dict[int, int]) -> dict[int, int]:
    """Where each partition's next batch starts: its durable end, else its origin or low watermark
    (never below the low watermark: messages removed by retention cannot be read)."""
    return {p: max(durable.get(p, origin.get(p, low)), low) for p, (low, _) in marks.items()}


def pending_retries(durable: dict[int, int], starts: dict[int, int], recent: Sequence[PastRun]) -> list[PastRun]:
    """Failed runs whose ranges must be retried unchanged before anything new is read on their partitions.

    Per partition, the newest finished run whose range starts where the partition's next batch
    starts decides: if it failed and recorded none of its ranges, it is pending. A newer success on a
    partition moves that partition's start on, so a superseded failure never matches.
    """
    pending: dict[str, PastRun] = {}
    for p, start in starts.items():
        last = next((r for r in recent if any(x.partition == p and x.start == start for x in r.ranges)), None)
        if last and last.failed and all(durable.get(x.partition, x.start) == x.start for x in last.ranges):
            pending.setdefault(last.run_id, last)
    return list(pending.values())


def due(stream: StreamConfig, backlog: int, waited: float, next_tick_s: float) -> bool:
    """Whether a backlog is requested now: ``min_messages`` reached, or its oldest message would
    have waited past ``max_wait_seconds`` by the next tick (``next_tick_s`` away: Dagster's sensor
    loop comes round every 5 s at best, so waiting for a tick past the deadline costs a whole tick)."""
    return backlog >= stream.trigger.min_messages or waited + next_tick_s >= stream.trigger.max_wait_seconds


def _pending_beyond(parts: Sequence[int], marks: dict[int, tuple[int, int]], in_flight: Sequence[PastRun]) -> bool:
    """Whether messages arrived past the ranges in flight on these partitions (they wait meanwhile)."""
    ends: dict[int, int] = {}
    for run in in_flight:
        for r in run.ranges:
            ends[r.partition] = max(ends.get(r.partition, r.end), r.end)
    return any(p in ends and marks[p][1] > ends[p] for p in parts)


def plan_shards(stream: StreamConfig, durable: dict[int, int], marks: dict[int, tuple[int, int]],
                origin: dict[int, int], in_flight: Sequence[PastRun], recent: Sequence[PastRun],
                attempts: Callable[[Sequence[OffsetRange]], int], now: float,
                backlog_since: dict[int, float | None], next_tick_s: float = 0.0,
                standby: Sequence[tuple[int, int]] = (), standby_depth: int = 0) -> list[ShardPlan]:
    """Per shard: wait for its in-flight run, retry its failed run unchanged, or plan a new batch.

    ``in_flight``: every unfinished run of the stream; ``recent``: finished runs, newest first.
    Retries are decided first, for the whole topic, and every partition they (or in-flight runs)
    cover is blocked before any new batch is planned, so no tick ever asks two runs to read one
    offset, whatever the parallelism was when the failed run started.
    A backlog's wait is counted from the first tick that saw it, also while its shard's run was
    in flight (so the next batch is requested as soon as that run is done when it is due).

    Standby runs (``standby_depth`` > 0; ``standby``: (shard, parallelism) of each one in flight):
    when nothing is to be retried on a shard and it has had a batch, the shard's batch is a
    standby run, and up to ``standby_depth`` of them may be in flight: the next one
    starts and warms up while the previous one works, then takes the shard's lock and its whole
    backlog (or redoes an intent left by a failed run, exactly). Ranged runs and retries never
    start on a shard while a standby run is in flight there, nor the other way round.
    Pure, so the exactly-once rules are unit-tested without Dagster or Kafka.
    """
    blocked = {p: f"batch in flight: run {r.run_id}" for r in in_flight for p in (x.partition for x in r.ranges)}
    standing = Counter()
    for shard, parallelism in standby:
        if parallelism == stream.parallelism:
            standing[shard] += 1
        else:  # a standby of another parallelism may take any of its old shard's partitions
            for p in marks:
                if shard_of(p, parallelism) == shard:
                    blocked.setdefault(p, f"standby run of parallelism {parallelism} in flight")
    # Retries wait for standby runs too (a standby redoes an intent on its shard itself).
    busy = {**{p: f"{standing[shard_of(p, stream.parallelism)]} standby run(s) in flight" for p in marks
               if standing[shard_of(p, stream.parallelism)]}, **blocked}
    retry_of_shard: dict[int, tuple[PastRun, int]] = {}
    for run in pending_retries(durable, start_offsets(durable, marks, origin), recent):
        parts = [x.partition for x in run.ranges]
        shard = shard_of(parts[0], stream.parallelism)
        if standby_depth and all(standing[shard_of(p, stream.parallelism)] for p in parts):
            # A standby run in flight on its shard redoes it: an intent exactly, a range that failed
            # before its intent left no files. (It may be that run's own intent, not yet recorded.)
            continue
        waiting = sorted({busy[p] for p in parts if p in busy})
        if waiting or shard in retry_of_shard:
            reason = f"ranges {ranges_text(run.ranges)} wait to be retried ({'; '.join(waiting) or 'next tick'})"
        elif (n := attempts(run.ranges)) >= MAX_ATTEMPTS:
            reason = (f"ranges {ranges_text(run.ranges)} failed {n} times; "
                      "fix the cause and re-execute the last run from the UI")
        else:
            retry_of_shard[shard] = (run, n)
            reason = f"{run.run_id} (retrying)"
        for p in parts:
            blocked.setdefault(p, reason)

    plans = []
    for shard, parts in shards(marks, stream.parallelism).items():
        since = backlog_since.get(shard)
        if shard in retry_of_shard:
            run, n = retry_of_shard[shard]
            plans.append(ShardPlan(shard, list(run.ranges), n, None, since or now))
            continue
        reasons = sorted({blocked[p] for p in parts if p in blocked})
        if reasons:
            waiting_since = (since or now) if _pending_beyond(parts, marks, in_flight) else since
            plans.append(ShardPlan(shard, [], 0, "; ".join(reasons), waiting_since))
            continue
        ranges = plan_ranges(stream, durable, {p: marks[p] for p in parts}, origin)
        if not ranges:
            plans.append(ShardPlan(shard, [], 0, "no backlog", None))
            continue
        since = since or now
        if standing[shard] >= standby_depth > 0:
            plans.append(ShardPlan(shard, [], 0, f"{standing[shard]} runs in flight (at most {standby_depth})", since))
            continue
        backlog = sum(r.end - r.start for r in ranges)
        if not due(stream, backlog, now - since, next_tick_s):
            plans.append(ShardPlan(shard, [], 0, f"{backlog} messages waiting for {now - since:.1f} s", since))
            continue
        # A shard's first batch, and any batch while a partition must start at an origin of the
        # cursor (a new stream reading from the latest offsets), is planned here; later ones are
        # standby runs (a partition without a durable end, e.g. added to the topic, starts at its
        # low watermark in both).
        if standby_depth and any(p in durable for p in parts) and all(p in durable or p not in origin for p in parts):
            plans.append(ShardPlan(shard, [], 0, None, None, standby=True))
        elif standing[shard]:
            plans.append(ShardPlan(shard, [], 0, f"{standing[shard]} standby run(s) in flight", since))
        else:
            plans.append(ShardPlan(shard, ranges, 0, None, None))
    return plans


def standby_ranges(stream: StreamConfig, durable: dict[int, int], marks: dict[int, tuple[int, int]],
                   pending: Sequence[OffsetRange]) -> list[OffsetRange]:
    """What a standby run takes when its turn comes (its shard's lock held): the ranges an intent
    named and nothing recorded, exactly (a failed run's, so its lake files are replaced, never
    doubled), else everything from the durable ends to the watermarks, capped per batch."""
    if pending:
        return sorted(pending)
    return plan_ranges(stream, durable, marks, origin={})


def restart_delay(consecutive_failures: int) -> float:
    """Back-off before relaunching a consumer whose last runs failed: none after one failure (a
    killed process comes back at the next tick), then 10 s doubling up to 5 minutes."""
    return 0.0 if consecutive_failures <= 1 else min(300.0, 10.0 * 2 ** (consecutive_failures - 2))


def plan_consumers(parallelism: int, in_flight: Sequence[dg.DagsterRun | dict],
                   last_run: Callable[[int], str | None]) -> tuple[list[tuple[int, str]], str | None]:
    """Continuous mode: (shard, run key) for each shard without a consumer in flight, or why none.

    ``in_flight``: the tags of every unfinished run of the stream. A micro-batch still in flight (a
    mode switch) or a consumer of another parallelism holds everything back, so no two readers
    ever share a partition; the consumers also lock their partitions while they run."""
    tags = [getattr(r, "tags", r) for r in in_flight]
    micro = [t for t in tags if t.get(MODE_TAG) != "continuous"]
    if micro:
        return [], f"{len(micro)} micro-batch run(s) in flight: the consumers start once they are done"
    other = sorted({t.get(PARALLELISM_TAG) for t in tags} - {str(parallelism)})
    if other:
        return [], (f"consumers of parallelism {', '.join(map(str, other))} still running: terminate them "
                    f"from the UI to start {parallelism} shard(s)")
    running = {int(t[SHARD_TAG]) for t in tags if SHARD_TAG in t}
    return [(s, f"shard-{s}:continuous:after-{last_run(s) or 'start'}")
            for s in range(parallelism) if s not in running], (None if len(running) < parallelism
                                                               else "every shard's consumer is running")


def ranges_text(ranges: Sequence[OffsetRange]) -> str:
    return ",".join(f"{r.partition}:{r.start}-{r.end}" for r in ranges)


def run_key(name: str, ranges: Sequence[OffsetRange], shard: int | None = None) -> str:
    """Deterministic in the stream, the shard (when there are several) and the ranges."""
    return f"{name if shard is None else f'{name}/shard-{shard}'}:{ranges_text(ranges)}"


def range_tag(ranges: Sequence[OffsetRange]) -> str:
    return hashlib.sha1(json.dumps([list(r) for r in ranges]).encode()).hexdigest()[:16]


def _run_request(name: str, job_name: str, asset_name: str, plan: ShardPlan, parallelism: int) -> dg.RunRequest:
    key = run_key(name, plan.ranges, plan.shard if parallelism > 1 else None)
    return dg.RunRequest(
        run_key=key + (f"#retry-{plan.attempt}" if plan.attempt else ""),
        job_name=job_name,
        run_config={"ops": {asset_name: {"config": {"ranges": [r._asdict() for r in plan.ranges]}}}},
        # Launched at once, not queued (jobs/run_coordinator.py; the instance's run coordinator).
        tags={"stream": name, SKIP_QUEUE_TAG: "true", SHARD_TAG: str(plan.shard), PARALLELISM_TAG: str(parallelism),
              "stream/ranges": range_tag(plan.ranges),
              "stream/messages": str(sum(r.end - r.start for r in plan.ranges)),
              # Where each partition's range starts: finds a partition's last run however old it is.
              **{start_tag(r.partition): str(r.start) for r in plan.ranges}},
    )


def _standby_request(name: str, job_name: str, asset_name: str, shard: int, parallelism: int,
                     now: float) -> dg.RunRequest:
    """A standby run: its ranges are taken when its turn comes and named in an intent then (a failed
    one is redone from that intent), so its key only has to be new."""
    where = name if parallelism == 1 else f"{name}/shard-{shard}"
    return dg.RunRequest(
        run_key=f"{where}:standby@{now:.3f}", job_name=job_name,
        run_config={"ops": {asset_name: {"config": {"ranges": [], "shard": shard, "parallelism": parallelism}}}},
        tags={"stream": name, SKIP_QUEUE_TAG: "true", STANDBY_TAG: "true", SHARD_TAG: str(shard),
              PARALLELISM_TAG: str(parallelism)})


def start_tag(partition: int) -> str:
    return f"stream/p{partition}"


def _past(run: dg.DagsterRun, asset_name: str) -> PastRun:
    try:
        ranges = tuple(OffsetRange(**r) for r in run.run_config["ops"][asset_name]["config"]["ranges"])
    except (KeyError, TypeError):
        ranges = ()
    return PastRun(run.run_id, run.status in RETRIED, ranges)


def _lost(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """A started consumer run that has logged nothing for SILENT_AFTER_S: marked failed, so it is replaced."""
    if run.status != dg.DagsterRunStatus.STARTED or run.tags.get(MODE_TAG) != "continuous":
        return False
    records = instance.get_records_for_run(run.run_id, limit=1, ascending=False).records
    if records and time.time() - records[0].timestamp < SILENT_AFTER_S:
        return False
    instance.report_run_failed(run, message=f"continuous consumer silent for over {SILENT_AFTER_S:g} s: "
                                            "its process is gone; the stream sensor starts a new one")
    return True


def _load_cursor(raw: str | None) -> tuple[dict[int, float | None], dict[int, int] | None, float | None]:
    """(backlog since per shard, origin per partition, time of the last tick) from the cursor."""
    cursor = json.loads(raw) if raw else {}
    since = cursor.get("backlog_since")
    if not isinstance(since, dict):  # the cursor of the one-shard sensor: a timestamp or null
        since = {"0": since}
    origin = cursor.get("origin")
    return ({int(s): t for s, t in since.items()},
            {int(p): o for p, o in origin.items()} if origin is not None else None, cursor.get("tick"))


def next_tick_estimate(now: float, last_tick: float | None) -> float:
    """Seconds to the next tick, guessed from the last interval (0 when unknown: never early)."""
    return 0.0 if last_tick is None or now < last_tick else min(now - last_tick, MAX_TICK_S)


def build_stream_sensor(name: str, stream: StreamConfig, job_name: str, asset_name: str,
                        default_status=dg.DefaultSensorStatus.RUNNING) -> dg.SensorDefinition:
    n = stream.parallelism
    description = (f"Launches micro-batches of {stream.topic} ({n} in parallel at most) when "
                   f"{stream.trigger.min_messages} messages are waiting or the oldest has waited "
                   f"{stream.trigger.max_wait_seconds:g} s.")
    if stream.mode == "continuous":
        description = (f"Keeps one continuous consumer run per shard of {stream.topic} ({n} shard(s)) "
                       "running: launches it, and launches a new one when it has stopped.")

    def _supervise(context: dg.SensorEvaluationContext, kafka: KafkaResource, stream_store: StreamStore):
        try:
            marks = kafka.watermarks(stream.topic)
        except TopicNotFound as exc:
            return dg.SkipReason(f"{exc}: create it (make services-up creates the catalogue's topics)")
        durable = stream_store.durable_ends(stream.topic)
        lag = {p: high - max(durable.get(p, low), low) for p, (low, high) in marks.items()}
        observation = dg.AssetObservation(asset_key=topic_key(stream.topic), metadata={
            "consumer_lag": sum(lag.values()),
            "lag_by_partition": dg.MetadataValue.json({str(p): v for p, v in lag.items()}),
            "partitions": len(marks), "parallelism": n, "consumer_group": group_id(name), "mode": "continuous"})
        in_flight = [r for r in context.instance.get_runs(dg.RunsFilter(tags={"stream": name}, statuses=IN_FLIGHT))
                     if not _lost(context.instance, r)]

        def last_run(shard: int) -> str | None:
            runs = context.instance.get_runs(dg.RunsFilter(tags={"stream": name, MODE_TAG: "continuous",
                                                                 SHARD_TAG: str(shard)}), limit=1)
            return runs[0].run_id if runs else None

        def waiting(shard: int) -> float:
            """Seconds before a consumer that keeps failing (a broker down) may be started again."""
            records = context.instance.get_run_records(dg.RunsFilter(tags={
                "stream": name, MODE_TAG: "continuous", SHARD_TAG: str(shard)}), limit=6)
            failures = 0
            for rec in records:
                if rec.dagster_run.status != dg.DagsterRunStatus.FAILURE:
                    break
                failures += 1
            ended = records[0].end_time if records and failures else None
            return max(0.0, ended + restart_delay(failures) - time.time()) if ended else 0.0

        launches, reason = plan_consumers(n, in_flight, last_run)
        held = {shard: w for shard, _ in launches if (w := waiting(shard)) > 0}
        launches = [(shard, key) for shard, key in launches if shard not in held]
        if held:
            reason = "; ".join(f"shard {s}: its consumer keeps failing, restarting in {w:.0f} s"
                               for s, w in held.items())
        requests = [dg.RunRequest(
            run_key=f"{name}/{key}", job_name=job_name,
            run_config={"ops": {asset_name: {"config": {"shard": shard, "parallelism": n}}}},
            tags={"stream": name, MODE_TAG: "continuous", SHARD_TAG: str(shard), PARALLELISM_TAG: str(n)})
            for shard, key in launches]
        if requests:
            return dg.SensorResult(run_requests=requests, asset_events=[observation])
        return dg.SensorResult(skip_reason=reason, asset_events=[observation])

    @dg.sensor(name=f"{name}_stream_sensor", job_name=job_name, minimum_interval_seconds=1,
               default_status=default_status, description=description)
    def _sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource, stream_store: StreamStore):
        if stream.mode == "continuous":
            return _supervise(context, kafka, stream_store)
        backlog_since, origin, last_tick = _load_cursor(context.cursor)
        now = time.time()
        try:
            marks = kafka.watermarks(stream.topic)
        except TopicNotFound as exc:
            return dg.SkipReason(f"{exc}: create it (make services-up creates the catalogue's topics)")
        durable = stream_store.durable_ends(stream.topic)
        if origin is None:
            origin = initial_origin(stream, durable, marks)
        lag = {p: high - max(durable.get(p, origin.get(p, low)), low) for p, (low, high) in marks.items()}
        observation = dg.AssetObservation(asset_key=topic_key(stream.topic), metadata={
            "consumer_lag": sum(lag.values()), "lag_by_partition": dg.MetadataValue.json({str(p): v for p, v in lag.items()}),
            "high_watermarks": dg.MetadataValue.json({str(p): h for p, (_, h) in marks.items()}),
            "partitions": len(marks), "parallelism": n, "consumer_group": group_id(name)})

        runs_in_flight = context.instance.get_runs(dg.RunsFilter(tags={"stream": name}, statuses=IN_FLIGHT))
        consumers = [r.run_id for r in runs_in_flight if r.tags.get(MODE_TAG) == "continuous"]
        if consumers:
            return dg.SensorResult(skip_reason=f"continuous consumer run(s) {consumers} still running (the stream "
                                               "is in micro_batch mode now): terminate them from the UI",
                                   asset_events=[observation], cursor=context.cursor)
        in_flight = [_past(r, asset_name) for r in runs_in_flight if r.tags.get(STANDBY_TAG) != "true"]
        standby = [(int(r.tags[SHARD_TAG]), int(r.tags[PARALLELISM_TAG])) for r in runs_in_flight
                   if r.tags.get(STANDBY_TAG) == "true"]
        # The finished runs that decide retries: per partition, those whose range started where the
        # partition's next batch starts (by tag, so a failure is found however many runs came since),
        # plus the latest few; newest first.
        records = {}
        queries = [dg.RunsFilter(tags={"stream": name, start_tag(p): str(start)})
                   for p, start in start_offsets(durable, marks, origin).items()]
        for runs_filter, limit in [(q, MAX_ATTEMPTS + 1) for q in queries] + [(dg.RunsFilter(tags={"stream": name}),
                                                                            10 * n + 10)]:
            for rec in context.instance.get_run_records(runs_filter, limit=limit):
                records[rec.dagster_run.run_id] = rec
        recent = [_past(rec.dagster_run, asset_name)
                  for rec in sorted(records.values(), key=lambda rec: rec.create_timestamp, reverse=True)
                  if rec.dagster_run.status not in IN_FLIGHT]
        # Ranges a consumer named and never recorded are redone exactly, like a failed run's.
        intents: dict[int, list[OffsetRange]] = {}
        for r in stream_store.pending_intents(stream.topic, list(marks)):
            intents.setdefault(shard_of(r.partition, n), []).append(r)
        recent = [PastRun(f"intent:{ranges_text(rs)}", True, tuple(rs)) for rs in intents.values()] + recent

        def attempts(ranges):
            return len(context.instance.get_run_ids(dg.RunsFilter(
                tags={"stream": name, "stream/ranges": range_tag(ranges)})))

        plans = plan_shards(stream, durable, marks, origin, in_flight, recent, attempts, now, backlog_since,
                            next_tick_estimate(now, last_tick), standby, STANDBY_DEPTH)
        cursor = json.dumps({"backlog_since": {str(p.shard): p.backlog_since for p in plans}, "tick": now,
                             **({"origin": {str(p): o for p, o in origin.items()}} if origin else {})})
        requests = [_standby_request(name, job_name, asset_name, p.shard, n, now) if p.standby
                    else _run_request(name, job_name, asset_name, p, n) for p in plans if p.requested]
        if requests:
            return dg.SensorResult(run_requests=requests, asset_events=[observation], cursor=cursor)
        reasons = {p.reason for p in plans}
        if reasons == {"no backlog"}:
            skip = "no backlog"
        elif n == 1:
            skip = plans[0].reason
        else:
            skip = "; ".join(f"shard {p.shard}/{n}: {p.reason}" for p in plans)
        return dg.SensorResult(skip_reason=skip, asset_events=[observation], cursor=cursor)

    return _sensor
