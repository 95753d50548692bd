"""One sensor per stream: watermarks in, micro-batch run requests out.

The sensor never consumes and never blocks past its tick: it reads the durable end offsets (the
warehouse's ``streaming.batches``, written in the same transaction as the data) and the topic's
high watermarks, and asks for a run covering the difference when the backlog is big enough
(``min_messages``) or has waited long enough (``max_wait_seconds``). One batch per stream is in
flight at a time, so batches land in offset order; while one runs the backlog grows and the next
batch is bigger, which amortises the per-run overhead under load.

A failed run's ranges are requested again, unchanged, under a new run key (``...#retry-N``), so a
failed range is retried, never skipped, and never split differently.
"""

from __future__ import annotations

import hashlib
import json
import time

import dagster as dg

from platform_assets.streaming.assets import group_id, topic_key
from platform_assets.streaming.config import StreamConfig
from resources.kafka import KafkaResource, OffsetRange, TopicNotFound
from resources.stream_store import StreamStore

MAX_ATTEMPTS = 5
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def plan_ranges(stream: StreamConfig, durable: dict[int, int], marks: dict[int, tuple[int, int]]) -> list[OffsetRange]:
    """From the durable end (or the start policy) to the high watermark, capped per batch."""
    ranges, budget = [], stream.trigger.max_batch_messages
    per_partition = max(1, budget // max(1, len(marks)))
    for p, (low, high) in sorted(marks.items()):
        start = durable.get(p)
        if start is None:
            start = low if stream.start_from == "earliest" else high
        start = max(start, low)  # messages removed by retention cannot be read
        end = min(high, start + per_partition)
        if end > start:
            ranges.append(OffsetRange(p, start, end))
    return ranges


def run_key(name: str, ranges: list[OffsetRange]) -> str:
    return f"{name}:" + ",".join(f"{r.partition}:{r.start}-{r.end}" for r in ranges)


def range_tag(ranges: list[OffsetRange]) -> str:
    return hashlib.sha1(json.dumps([list(r) for r in ranges]).encode()).hexdigest()[:16]


def _run_request(name: str, job_name: str, asset_name: str, ranges: list[OffsetRange], attempt: int) -> dg.RunRequest:
    key = run_key(name, ranges) + (f"#retry-{attempt}" if attempt else "")
    return dg.RunRequest(
        run_key=key,
        job_name=job_name,
        run_config={"ops": {asset_name: {"config": {"ranges": [r._asdict() for r in ranges]}}}},
        tags={"stream": name, "stream/ranges": range_tag(ranges), "stream/messages": str(sum(r.end - r.start for r in ranges))},
    )


def build_stream_sensor(name: str, stream: StreamConfig, job_name: str, asset_name: str,
                        default_status=dg.DefaultSensorStatus.RUNNING) -> dg.SensorDefinition:
    @dg.sensor(name=f"{name}_stream_sensor", job_name=job_name, minimum_interval_seconds=1,
               default_status=default_status,
               description=f"Launches micro-batches of {stream.topic} when {stream.trigger.min_messages} messages "
                           f"are waiting or the oldest has waited {stream.trigger.max_wait_seconds:g} s.")
    def _sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource, stream_store: StreamStore):
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = time.time()
        try:
            marks = kafka.watermarks(stream.topic)
        except TopicNotFound as exc:
            return dg.SkipReason(f"{exc}: create it (make services-up creates the catalogue's topics)")
        durable = stream_store.durable_ends(stream.topic)
        lag = {p: high - max(durable.get(p, low), low) for p, (low, high) in marks.items()}
        observation = dg.AssetObservation(asset_key=topic_key(stream.topic), metadata={
            "consumer_lag": sum(lag.values()), "lag_by_partition": dg.MetadataValue.json({str(p): v for p, v in lag.items()}),
            "high_watermarks": dg.MetadataValue.json({str(p): h for p, (_, h) in marks.items()}),
            "consumer_group": group_id(name)})

        in_flight = context.instance.get_runs(dg.RunsFilter(tags={"stream": name}, statuses=IN_FLIGHT), limit=1)
        if in_flight:
            return dg.SensorResult(skip_reason=f"batch in flight: run {in_flight[0].run_id}",
                                   asset_events=[observation], cursor=context.cursor)

        ranges = plan_ranges(stream, durable, marks)
        if not ranges:
            return dg.SensorResult(skip_reason="no backlog", asset_events=[observation],
                                   cursor=json.dumps({"backlog_since": None}))
        waiting_since = cursor.get("backlog_since") or now
        backlog = sum(r.end - r.start for r in ranges)
        # A failed batch is retried as it was: same ranges, new run key.
        last = context.instance.get_runs(dg.RunsFilter(tags={"stream": name}), limit=1)
        retry_ranges = None
        if last and last[0].status == dg.DagsterRunStatus.FAILURE:
            failed = [OffsetRange(**r) for r in last[0].run_config["ops"][asset_name]["config"]["ranges"]]
            if all(durable.get(r.partition, r.start) == r.start for r in failed):
                retry_ranges = failed
        if retry_ranges is not None:
            attempts = len(context.instance.get_run_ids(dg.RunsFilter(
                tags={"stream": name, "stream/ranges": range_tag(retry_ranges)})))
            if attempts >= MAX_ATTEMPTS:
                return dg.SensorResult(
                    skip_reason=f"ranges {run_key(name, retry_ranges)} failed {attempts} times; fix the cause "
                                f"and re-execute the last run from the UI", asset_events=[observation],
                    cursor=context.cursor)
            return dg.SensorResult(run_requests=[_run_request(name, job_name, asset_name, retry_ranges, attempts)],
                                   asset_events=[observation], cursor=json.dumps({"backlog_since": waiting_since}))
        if backlog < stream.trigger.min_messages and now - waiting_since < stream.trigger.max_wait_seconds:
            return dg.SensorResult(skip_reason=f"{backlog} messages waiting for {now - waiting_since:.1f} s",
                                   asset_events=[observation], cursor=json.dumps({"backlog_since": waiting_since}))
        return dg.SensorResult(run_requests=[_run_request(name, job_name, asset_name, ranges, 0)],
                               asset_events=[observation], cursor=json.dumps({"backlog_since": None}))

    return _sensor
