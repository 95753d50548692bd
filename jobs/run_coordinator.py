"""The run queue, except for micro-batches: Dagster's ``QueuedRunCoordinator`` that launches runs
tagged ``platform/skip_queue=true`` at once, as ``DefaultRunCoordinator`` would.

Why: a queued run waits for the queue daemon's next pass (``dequeue_interval_seconds``, an integer:
1 s at best, about 0.7 s on average; the default 5 s costs 2.5-3 s, ../shared/PERF.md), and Dagster
1.13 offers no per-run way around it (run priority only orders the queue; tag limits only hold
runs back). A micro-batch is seconds of latency budget, so the stream sensor tags its runs and
they are launched from the sensor's own submission. Everything else (batch pipeline, training,
backfills, runs from the UI) is queued as before, and counted against the same limits: skipped
runs count as in progress, so they hold back queued runs, never the other way round. The stream
sensor bounds its own runs (one in flight per shard), so no limit is lost that mattered.

Being a subclass, ``isinstance(..., QueuedRunCoordinator)`` holds: the instance still runs the
queue daemon and reads ``concurrency`` (run limits, pools) for it. The class must be importable
where the instance is loaded (webserver, daemon, run workers): locally the project is installed in
the environment; the production images (stock Dagster images for webserver and daemon) keep
Dagster's own class (deploy/dagster/dagster.yaml).
"""

from __future__ import annotations

from dagster import DagsterRun, DagsterRunStatus
from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator

SKIP_QUEUE_TAG = "platform/skip_queue"


class StreamFirstRunCoordinator(QueuedRunCoordinator):
    """Queued runs, but runs tagged ``platform/skip_queue=true`` are launched immediately."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.tags.get(SKIP_QUEUE_TAG) != "true" or run.status != DagsterRunStatus.NOT_STARTED:
            return super().submit_run(context)
        self._instance.launch_run(run.run_id, context.workspace)
        launched = self._instance.get_run_by_id(run.run_id)
        if launched is None:
            raise RuntimeError(f"run {run.run_id} vanished while it was launched")
        return launched
