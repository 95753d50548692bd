"""The streaming side of the warehouse: progress, dead letters, window partials and alerts.

Everything one micro-batch records goes into PostgreSQL in ONE transaction, with the batch's offset
ranges as the primary key of its rows. So the offsets table is the truth about progress (a range is
recorded exactly when its data is), and a retried batch overwrites its own rows instead of adding.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import dagster as dg
import pandas as pd
from psycopg2 import sql as q

from resources.kafka import OffsetRange
from resources.warehouse import WarehouseResource

SCHEMA = "streaming"

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
CREATE TABLE IF NOT EXISTS {SCHEMA}.alerts (
    alert_id text PRIMARY KEY, stream text NOT NULL, key text NOT NULL, event_time timestamptz NOT NULL,
    signal text NOT NULL, value double precision, baseline_mean double precision,
    baseline_std double precision, zscore double precision,
    topic text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL,
    run_id text, detected_at timestamptz NOT NULL DEFAULT now()
);
"""


def partials_table(stream: str) -> str:
    return f"{stream}_minute_partials"


def stats_view(stream: str) -> str:
    return f"{stream}_minute_stats"


class StreamStore(dg.ConfigurableResource):
    warehouse: WarehouseResource

    def durable_ends(self, topic: str) -> dict[int, int]:
        """Per partition, the end offset of the last recorded batch: where the next batch starts."""
        with self.warehouse.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.batches",))
            if cur.fetchone()[0] is None:
                return {}
            cur.execute(f"SELECT partition, max(end_offset) FROM {SCHEMA}.batches WHERE topic = %s GROUP BY 1", (topic,))
            return {int(p): int(e) for p, e in cur.fetchall()}

    def history(self, stream: str, key: str, keys: Sequence[str], since: pd.Timestamp,
                exclude: Sequence[OffsetRange], topic: str) -> pd.DataFrame:
        """Window partials of ``keys`` since ``since`` from earlier batches (this batch's ranges excluded)."""
        table = q.Identifier(SCHEMA, partials_table(stream))
        with self.warehouse.connect() as conn, conn.cursor() as cur:
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
        key: str | None, signals: Sequence[str] = (), run_id: str,
    ) -> None:
        """One transaction: the batch's ranges, dead letters, window partials and alerts."""
        with self.warehouse.connect() as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{SCHEMA}.{topic}",))
                cur.execute(_DDL)
                if partials is not None and key is not None:
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
                if alerts is not None:
                    for a in alerts.itertuples(index=False):
                        cur.execute(
                            f"INSERT INTO {SCHEMA}.alerts (alert_id, stream, key, event_time, signal, value, "
                            "baseline_mean, baseline_std, zscore, topic, partition, \"offset\", run_id) "
                            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (alert_id) DO NOTHING",
                            (a.alert_id, stream, str(a.key), a.event_time.to_pydatetime(), a.signal, a.value,
                             a.baseline_mean, a.baseline_std, a.zscore, topic, a.partition, a.offset, run_id),
                        )
            conn.commit()


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
