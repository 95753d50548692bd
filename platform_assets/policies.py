"""Execution policies applied across assets, defined once."""

import dagster as dg

# Sources and the warehouse are remote systems: a blip should not fail a run.
IO_RETRY = dg.RetryPolicy(max_retries=3, delay=1, backoff=dg.Backoff.LINEAR, jitter=dg.Jitter.FULL)

# Partitioned assets process a whole backfill range in one run (one Spark session, one transaction
# per table) instead of one run per day.
SINGLE_RUN_BACKFILL = dg.BackfillPolicy.single_run()
