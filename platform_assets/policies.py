"""Execution policies applied across assets, defined once."""

import dagster as dg

# Sources and the warehouse are remote systems: a blip should not fail a run.
IO_RETRY = dg.RetryPolicy(max_retries=3, delay=1, backoff=dg.Backoff.LINEAR, jitter=dg.Jitter.FULL)

# Partitioned assets process a whole backfill range in one run (one Spark session, one transaction
# per table) instead of one run per day.
SINGLE_RUN_BACKFILL = dg.BackfillPolicy.single_run()

# Concurrency pools (Dagster pools): steps that share a scarce engine claim a slot in its pool.
# Limits are instance settings (deploy/local/dagster.yaml, deploy/helm values), not code.
SPARK_POOL = "spark"  # one Spark application per pool slot: a laptop or a small cluster runs one at a time
TRAINING_POOL = "training"  # model fits are CPU-bound; cap how many run side by side
