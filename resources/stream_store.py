"""The streaming side of the warehouse: progress, dead letters, window partials and alerts.

Everything one micro-batch records goes into PostgreSQL in ONE transaction, with the batch's offset
ranges as the primary key of its rows. So the offsets table is the truth about progress (a range is
recorded exactly when its data is), and a retried batch overwrites its own rows instead of adding.

Two more guards make a consumer that dies at any instant (SIGKILL included) safe to restart:
an *intent* (``streaming.intents``) names a batch's ranges before its lake files are written, so
a restarted consumer redoes exactly that range (same file names: replaced, never doubled); and
``record_batch`` only records a range that continues the durable end (or repeats an identical
recorded range), under a lock per topic, so two consumers can never both record one offset.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator, Sequence

import dagster as dg
import pandas as pd
from psycopg2 import sql as q
from pydantic import PrivateAttr

from platform_assets import namespace
from resources.kafka import OffsetRange
from resources.warehouse import WarehouseResource

# "streaming", or "<ns>_streaming" under PLATFORM_NAMESPACE (platform_assets/namespace.py).
SCHEMA = namespace.schema("streaming")

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.batches (
    stream text NOT NULL, topic text NOT NULL, partition int NOT NULL,
    start_offset bigint NOT NULL, end_offset bigint NOT NULL,
    valid_messages int NOT NULL, dead_letters int NOT NULL,
    run_id text, written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, partition, start_offset)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.dead_letters (
    stream text NOT NULL, topic text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL,
    reason text NOT NULL, key bytea, raw bytea, kafka_ts timestamptz, run_id text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.intents (
    topic text NOT NULL, partition int NOT NULL, start_offset bigint NOT NULL, end_offset bigint NOT NULL,
    run_id text, written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.alerts (
    alert_id text PRIMARY KEY, stream text NOT NULL, key text NOT NULL, event_time timestamptz NOT NULL,
    signal text NOT NULL, value double precision, baseline_mean double precision,
    baseline_std double precision, zscore double precision,
    topic text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL,
    run_id text, detected_at timestamptz NOT NULL DEFAULT now()
);
"""
# Predictions on the stream: one per scored reading and model (a redone batch overwrites its own),
# traced to the reading's offset and the model version; model alerts go to the alerts table beside
# the z-score ones, with the model version and threshold that raised them.
_PREDICTIONS_DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.predictions (
    prediction_id text PRIMARY KEY, stream text NOT NULL, key text NOT NULL, event_time timestamptz NOT NULL,
    as_of timestamptz, model text NOT NULL, model_version text NOT NULL, score double precision NOT NULL,
    threshold double precision, alert boolean NOT NULL,
    topic text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL,
    features_updated_at timestamptz, run_id text, recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS predictions_recent ON {SCHEMA}.predictions (recorded_at);
ALTER TABLE {SCHEMA}.alerts ADD COLUMN IF NOT EXISTS model_version text;
ALTER TABLE {SCHEMA}.alerts ADD COLUMN IF NOT EXISTS threshold double precision;
"""


def partials_table(stream: str) -> str:
    return f"{stream}_minute_partials"


def stats_view(stream: str) -> str:
    return f"{stream}_minute_stats"


class BatchConflict(RuntimeError):
    """A batch's ranges no longer continue the durable offsets: another consumer recorded them first."""

    def __init__(self, message: str, partitions: Sequence[int] = ()):
        super().__init__(message)
        self.partitions = set(partitions)


class StreamStore(dg.ConfigurableResource):
    warehouse: WarehouseResource
    _pinned: object = PrivateAttr(default=None)

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Reuse one connection for every call in the block: a long-lived consumer makes three small
        transactions a second, and a new TLS connection costs 50-100 ms each."""
        with self.warehouse.connect() as conn:
            self._pinned = conn
            try:
                yield
            finally:
                self._pinned = None

    @contextlib.contextmanager
    def _connect(self):
        conn = self._pinned
        if conn is None or conn.closed:
            with self.warehouse.connect() as fresh:
                yield fresh
            return
        try:
            yield conn
        finally:
            if not conn.closed:
                conn.rollback()  # ends a read's transaction; after a commit it does nothing

    def ensure_schema(self) -> None:
        with self._connect() as conn:
            with conn.cursor() as cur:
                _ensure_ddl(cur)
            conn.commit()

    def record_intent(self, topic: str, ranges: Sequence[OffsetRange], run_id: str | None) -> None:
        """Name the ranges about to be written to the lake (before the first file is written)."""
        with self._connect() as conn:
            with conn.cursor() as cur:
                _ensure_ddl(cur)
                for r in ranges:
                    cur.execute(
                        f"INSERT INTO {SCHEMA}.intents (topic, partition, start_offset, end_offset, run_id) "
                        "VALUES (%s,%s,%s,%s,%s) ON CONFLICT (topic, partition) DO UPDATE SET "
                        "start_offset = EXCLUDED.start_offset, end_offset = EXCLUDED.end_offset, "
                        "run_id = EXCLUDED.run_id, written_at = clock_timestamp()",
                        (topic, r.partition, r.start, r.end, run_id))
            conn.commit()

    def pending_intents(self, topic: str, partitions: Sequence[int]) -> list[OffsetRange]:
        """Ranges named by an intent but never recorded (their consumer died in between): they must be
        redone exactly, before anything else is read on their partitions."""
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.intents",))
            if cur.fetchone()[0] is None:
                return []
            cur.execute(
                f"SELECT i.partition, i.start_offset, i.end_offset FROM {SCHEMA}.intents i "
                f"LEFT JOIN (SELECT partition, max(end_offset) AS durable FROM {SCHEMA}.batches "
                "WHERE topic = %s GROUP BY 1) b USING (partition) "
                "WHERE i.topic = %s AND i.partition = ANY(%s) AND i.end_offset > i.start_offset "
                "AND (b.durable IS NULL OR i.start_offset >= b.durable) ORDER BY 1",
                (topic, topic, list(partitions)))
            return [OffsetRange(int(p), int(s), int(e)) for p, s, e in cur.fetchall()]

    @contextlib.contextmanager
    def partitions_lock(self, topic: str, partitions: Sequence[int], wait_seconds: float = 120.0,
                        on_wait=None) -> Iterator[None]:
        """Hold a session lock per partition while a long-lived consumer runs: a second consumer of the
        same partitions (a run force-marked canceled whose process still finishes its batch, or a
        change of parallelism) waits until the first has gone. PostgreSQL releases the locks when the
        holder's connection closes, however its process ended."""
        with self.warehouse.connect() as conn:
            conn.autocommit = True
            deadline = time.monotonic() + wait_seconds
            with conn.cursor() as cur:
                for p in sorted(partitions):
                    while True:
                        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s)", (f"{SCHEMA}.{topic}", p))
                        if cur.fetchone()[0]:
                            break
                        if time.monotonic() > deadline:
                            raise BatchConflict(f"topic {topic} partition {p} is still held by another consumer "
                                                f"after {wait_seconds:.0f} s")
                        if on_wait:
                            on_wait(p)
                        time.sleep(1.0)
            yield

    def durable_ends(self, topic: str) -> dict[int, int]:
        """Per partition, the end offset of the last recorded batch: where the next batch starts."""
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.batches",))
            if cur.fetchone()[0] is None:
                return {}
            cur.execute(f"SELECT partition, max(end_offset) FROM {SCHEMA}.batches WHERE topic = %s GROUP BY 1", (topic,))
            return {int(p): int(e) for p, e in cur.fetchall()}

    def recorded_ranges(self, topic: str) -> set[tuple[int, int, int]]:
        """Every durable (partition, start, end) of a topic: the lake files compaction may rewrite."""
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.batches",))
            if cur.fetchone()[0] is None:
                return set()
            cur.execute(f"SELECT partition, start_offset, end_offset FROM {SCHEMA}.batches WHERE topic = %s", (topic,))
            return {(int(p), int(s), int(e)) for p, s, e in cur.fetchall()}

    def history(self, stream: str, key: str, keys: Sequence[str], since: pd.Timestamp,
                exclude: Sequence[OffsetRange], topic: str) -> pd.DataFrame:
        """Window partials of ``keys`` since ``since`` from earlier batches (this batch's ranges excluded)."""
        table = q.Identifier(SCHEMA, partials_table(stream))
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{partials_table(stream)}",))
            if cur.fetchone()[0] is None or not keys:
                return pd.DataFrame()
            excluded = [(r.partition, r.start) for r in exclude] or [(-1, -1)]
            cur.execute(
                q.SQL("SELECT * FROM {} WHERE {} = ANY(%s) AND window_start >= %s "
                      "AND (partition, start_offset) NOT IN %s").format(table, q.Identifier(key)),
                (list(keys), since.to_pydatetime(), tuple(excluded)),
            )
            return pd.DataFrame.from_records(cur.fetchall(), columns=[d[0] for d in cur.description])

    def record_batch(
        self, *, stream: str, topic: str, ranges: Sequence[OffsetRange], counts: dict[int, tuple[int, int]],
        dead_letters: pd.DataFrame, partials: pd.DataFrame | None, alerts: pd.DataFrame | None,
        key: str | None, signals: Sequence[str] = (), run_id: str, predictions: pd.DataFrame | None = None,
    ) -> None:
        """One transaction: the batch's ranges, dead letters, window partials and alerts.

        Raises ``BatchConflict`` (and records nothing) unless each range continues its partition's
        durable end or repeats a recorded range exactly (a replay of identical data)."""
        with self._connect() as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{SCHEMA}.{topic}",))
                _ensure_ddl(cur)
                _check_continues(cur, topic, ranges)
                if partials is not None and key is not None:
                    cur.execute("SELECT to_regclass(%s), to_regclass(%s)", (f"{SCHEMA}.{partials_table(stream)}",
                                                                            f"{SCHEMA}.{stats_view(stream)}"))
                    if None in cur.fetchone():  # not every batch: replacing the view locks its readers out
                        _ensure_partials(cur, stream, key, signals)
                for r in ranges:
                    valid, dead = counts.get(r.partition, (0, 0))
                    cur.execute(
                        f"INSERT INTO {SCHEMA}.batches (stream, topic, partition, start_offset, end_offset, "
                        "valid_messages, dead_letters, run_id, written_at) "
                        "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,clock_timestamp()) "
                        "ON CONFLICT (topic, partition, start_offset) DO UPDATE SET end_offset = EXCLUDED.end_offset, "
                        "valid_messages = EXCLUDED.valid_messages, dead_letters = EXCLUDED.dead_letters, "
                        "run_id = EXCLUDED.run_id, written_at = clock_timestamp()",
                        (stream, topic, r.partition, r.start, r.end, valid, dead, run_id),
                    )
                    cur.execute(f"DELETE FROM {SCHEMA}.intents WHERE topic = %s AND partition = %s "
                                "AND start_offset = %s", (topic, r.partition, r.start))
                for row in dead_letters.itertuples(index=False):
                    cur.execute(
                        f"INSERT INTO {SCHEMA}.dead_letters (stream, topic, partition, \"offset\", reason, key, raw, "
                        "kafka_ts, run_id) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                        "ON CONFLICT (topic, partition, \"offset\") DO UPDATE SET reason = EXCLUDED.reason, run_id = EXCLUDED.run_id",
                        (stream, topic, int(row.partition), int(row.offset), row.reason, row.key, row.raw,
                         row.kafka_ts.to_pydatetime(), run_id),
                    )
                if partials is not None and len(partials):
                    _upsert_partials(cur, stream, key, partials)
                if predictions is not None:
                    _ensure_predictions(cur)
                    _upsert_predictions(cur, stream, topic, predictions, run_id)
                if alerts is not None:
                    model_alerts = "model_version" in alerts.columns
                    if model_alerts:
                        _ensure_predictions(cur)
                    for a in alerts.itertuples(index=False):
                        cur.execute(
                            f"INSERT INTO {SCHEMA}.alerts (alert_id, stream, key, event_time, signal, value, "
                            "baseline_mean, baseline_std, zscore, topic, partition, \"offset\", run_id"
                            + (", model_version, threshold" if model_alerts else "") + ") "
                            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s" + (",%s,%s" if model_alerts else "")
                            + ") ON CONFLICT (alert_id) DO NOTHING",
                            (a.alert_id, stream, str(a.key), pd.Timestamp(a.event_time).to_pydatetime(), a.signal,
                             _num(a.value), _num(a.baseline_mean), _num(a.baseline_std), _num(a.zscore), topic,
                             int(a.partition), int(a.offset), run_id,
                             *((None if pd.isna(a.model_version) else str(a.model_version), _num(a.threshold))
                               if model_alerts else ())),
                        )
            conn.commit()

    def hour_sums(self, stream: str, key: str, keys: Sequence[str], since: pd.Timestamp,
                  exclude: Sequence[OffsetRange], columns: Sequence[str]) -> pd.DataFrame:
        """Per key and hour since ``since``: count, sum and max of each column, from the window partials of
        earlier batches (this batch's ranges excluded): the rolling state of the online features."""
        table = q.Identifier(SCHEMA, partials_table(stream))
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{partials_table(stream)}",))
            if cur.fetchone()[0] is None or not keys:
                return pd.DataFrame()
            aggs = [q.SQL("sum({n})::bigint AS {n}, sum({s}) AS {s}, max({m}) AS {m}").format(
                n=q.Identifier(f"{c}_n"), s=q.Identifier(f"{c}_sum"), m=q.Identifier(f"{c}_max")) for c in columns]
            excluded = [(r.partition, r.start) for r in exclude] or [(-1, -1)]
            cur.execute(
                q.SQL("SELECT {k}, date_trunc('hour', window_start) AS hour, {} FROM {} WHERE {k} = ANY(%s) "
                      "AND window_start >= %s AND (partition, start_offset) NOT IN %s GROUP BY 1, 2")
                .format(q.SQL(", ").join(aggs), table, k=q.Identifier(key)),
                (list(keys), since.to_pydatetime(), tuple(excluded)))
            frame = pd.DataFrame.from_records(cur.fetchall(), columns=[d[0] for d in cur.description])
            if len(frame):
                frame["hour"] = pd.to_datetime(frame["hour"], utc=True)
            return frame

    def predictions(self, stream: str, since: pd.Timestamp | None = None, limit: int = 1000) -> pd.DataFrame:
        """The latest predictions of a stream (newest first), for dashboards and tests."""
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.predictions",))
            if cur.fetchone()[0] is None:
                return pd.DataFrame(columns=["prediction_id"])
            cur.execute(f"SELECT * FROM {SCHEMA}.predictions WHERE stream = %s AND recorded_at >= %s "
                        "ORDER BY recorded_at DESC LIMIT %s",
                        (stream, (since or pd.Timestamp(0, tz="UTC")).to_pydatetime(), limit))
            return pd.DataFrame.from_records(cur.fetchall(), columns=[d[0] for d in cur.description])


def _ensure_ddl(cur) -> None:
    """The streaming tables, created once (the check is one catalogue lookup per batch)."""
    cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.intents",))
    if cur.fetchone()[0] is None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{SCHEMA}.ddl",))
        cur.execute(_DDL)


def _num(value):
    return None if value is None or pd.isna(value) else float(value)


def _ensure_predictions(cur) -> None:
    """The predictions table and the model columns of alerts, added once to an existing schema."""
    cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.predictions",))
    if cur.fetchone()[0] is None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{SCHEMA}.ddl",))
        cur.execute(_PREDICTIONS_DDL)


def _upsert_predictions(cur, stream: str, topic: str, predictions: pd.DataFrame, run_id: str | None) -> None:
    for p in predictions.itertuples(index=False):
        cur.execute(
            f"INSERT INTO {SCHEMA}.predictions (prediction_id, stream, key, event_time, as_of, model, model_version, "
            "score, threshold, alert, topic, partition, \"offset\", features_updated_at, run_id) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (prediction_id) DO UPDATE SET "
            "model_version = EXCLUDED.model_version, score = EXCLUDED.score, alert = EXCLUDED.alert, "
            "as_of = EXCLUDED.as_of, features_updated_at = EXCLUDED.features_updated_at, run_id = EXCLUDED.run_id, "
            "recorded_at = clock_timestamp()",
            (p.prediction_id, stream, str(p.key), pd.Timestamp(p.event_time).to_pydatetime(),
             pd.Timestamp(p.as_of).to_pydatetime(), p.model, str(p.model_version), float(p.score),
             _num(p.threshold), bool(p.alert), topic, int(p.partition), int(p.offset),
             pd.Timestamp(p.features_updated_at).to_pydatetime(), run_id))


def _check_continues(cur, topic: str, ranges: Sequence[OffsetRange]) -> None:
    parts = [r.partition for r in ranges]
    cur.execute(f"SELECT partition, max(end_offset) FROM {SCHEMA}.batches WHERE topic = %s "
                "AND partition = ANY(%s) GROUP BY 1", (topic, parts))
    durable = {int(p): int(e) for p, e in cur.fetchall()}
    cur.execute(f"SELECT partition, start_offset, end_offset FROM {SCHEMA}.batches WHERE topic = %s "
                "AND partition = ANY(%s) AND start_offset = ANY(%s)", (topic, parts, [r.start for r in ranges]))
    recorded = {(int(p), int(s)): int(e) for p, s, e in cur.fetchall()}
    bad = {r.partition: (durable[r.partition], r.start, r.end) for r in ranges
           if r.partition in durable and durable[r.partition] != r.start
           and recorded.get((r.partition, r.start)) != r.end}
    if bad:
        raise BatchConflict(f"topic {topic}: ranges do not continue the durable offsets, "
                            f"partition: (durable end, start, end) {bad}", partitions=bad)


def _ensure_partials(cur, stream: str, key: str, signals: Sequence[str]) -> None:
    cols = [q.SQL("{} text NOT NULL").format(q.Identifier(key)), q.SQL("window_start timestamptz NOT NULL"),
            q.SQL("partition int NOT NULL"), q.SQL("start_offset bigint NOT NULL"), q.SQL("events int NOT NULL")]
    for s in signals:
        cols += [q.SQL("{} int").format(q.Identifier(f"{s}_n"))]
        cols += [q.SQL("{} double precision").format(q.Identifier(f"{s}_{a}")) for a in ("sum", "sumsq", "min", "max")]
    table = q.Identifier(SCHEMA, partials_table(stream))
    cur.execute(q.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}, window_start, partition, start_offset))")
                .format(table, q.SQL(", ").join(cols), q.Identifier(key)))
    stats = [q.SQL("sum(events)::bigint AS events")]
    for s in signals:
        n, sm = q.Identifier(f"{s}_n"), q.Identifier(f"{s}_sum")
        stats += [
            q.SQL("sum({sm}) / NULLIF(sum({n}), 0) AS {}").format(q.Identifier(f"avg_{s}"), sm=sm, n=n),
            q.SQL("min({}) AS {}").format(q.Identifier(f"{s}_min"), q.Identifier(f"min_{s}")),
            q.SQL("max({}) AS {}").format(q.Identifier(f"{s}_max"), q.Identifier(f"max_{s}")),
        ]
    cur.execute(q.SQL("CREATE OR REPLACE VIEW {} AS SELECT {k}, window_start, {} FROM {} GROUP BY {k}, window_start")
                .format(q.Identifier(SCHEMA, stats_view(stream)), q.SQL(", ").join(stats), table, k=q.Identifier(key)))


def _upsert_partials(cur, stream: str, key: str, partials: pd.DataFrame) -> None:
    """COPY into a temporary table, then upsert on the primary key (a retried batch replaces its rows)."""
    table = q.Identifier(SCHEMA, partials_table(stream))
    cols = list(partials.columns)
    cur.execute(q.SQL("CREATE TEMP TABLE _partials (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(table))
    buf = io.StringIO()
    partials.to_csv(buf, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%dT%H:%M:%S%z")
    buf.seek(0)
    ident_cols = q.SQL(", ").join(q.Identifier(c) for c in cols)
    cur.copy_expert(q.SQL("COPY _partials ({}) FROM STDIN WITH (FORMAT csv, NULL '\\N')").format(ident_cols)
                    .as_string(cur.connection), buf)
    updates = q.SQL(", ").join(q.SQL("{c} = EXCLUDED.{c}").format(c=q.Identifier(c)) for c in cols
                               if c not in (key, "window_start", "partition", "start_offset"))
    cur.execute(q.SQL("INSERT INTO {} ({c}) SELECT {c} FROM _partials ON CONFLICT ({k}, window_start, partition, "
                      "start_offset) DO UPDATE SET {}").format(table, updates, c=ident_cols, k=q.Identifier(key)))
