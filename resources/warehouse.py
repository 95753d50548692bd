"""The PostgreSQL warehouse: a connection resource and a pandas IO manager over it.

Dagster has no first-party PostgreSQL pandas IO manager, so this is ours. Every write is one
transaction: create the schema and table on first write (columns added as the frame grows), delete
the partition being written (or everything, for an unpartitioned asset), bulk-load with COPY. A
rerun therefore replaces instead of duplicating, and a failure leaves the previous table intact.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from platform_assets import namespace
from platform_assets.metadata import frame_metadata
from platform_assets.policies import only_transient_retried


class WarehouseResource(dg.ConfigurableResource):
    """A PostgreSQL database. Schemas passed to it are the names on the server: callers name theirs
    through ``namespace.schema`` (the IO manager through ``table_for``), so two namespaces share it."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:  # noqa: F821
        import psycopg2

        try:
            conn = psycopg2.connect(
                host=self.host, port=self.port, user=self.user, password=self.password,
                dbname=self.database, connect_timeout=5,
            )
        except psycopg2.OperationalError as exc:
            raise ConnectionError(
                f"warehouse PostgreSQL at {self.host}:{self.port}/{self.database} is not reachable: {exc}".strip()
            ) from exc
        try:
            yield conn
        finally:
            conn.close()

    def query(self, sql: str, params: tuple | dict = ()) -> pd.DataFrame:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return pd.DataFrame.from_records(cur.fetchall(), columns=[d[0] for d in cur.description])

    def replace(
        self,
        schema: str,
        table: str,
        frame: pd.DataFrame,
        *,
        partition_column: str | None = None,
        window: tuple[dt.datetime | dt.date, dt.datetime | dt.date] | None = None,
    ) -> int:
        """Replace a table (or the rows of one partition window) with ``frame``, atomically."""
        return self._write(schema, table, frame, partition_column=partition_column, window=window, append=False)

    def append(self, schema: str, table: str, frame: pd.DataFrame) -> int:
        """Add rows (for logs of events, such as run failures), creating the table on first use."""
        return self._write(schema, table, frame, append=True)

    def _write(self, schema, table, frame, *, partition_column=None, window=None, append: bool) -> int:
        from psycopg2 import sql as q

        ident = q.Identifier(schema, table)
        with self.connect() as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}.{table}",))
                cur.execute(q.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(q.Identifier(schema)))
                cols = q.SQL(", ").join(
                    q.SQL("{} {}").format(q.Identifier(c), q.SQL(pg_type(frame[c]))) for c in frame.columns
                )
                cur.execute(q.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ident, cols))
                for c in frame.columns:
                    cur.execute(
                        q.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            ident, q.Identifier(c), q.SQL(pg_type(frame[c]))
                        )
                    )
                if append:
                    pass
                elif partition_column and window:
                    cur.execute(
                        q.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(
                            ident, q.Identifier(partition_column), q.Identifier(partition_column)
                        ),
                        window,
                    )
                else:
                    cur.execute(q.SQL("TRUNCATE {}").format(ident))
                if len(frame):
                    cur.copy_expert(
                        q.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, NULL '\\N')")
                        .format(ident, q.SQL(", ").join(q.Identifier(c) for c in frame.columns))
                        .as_string(conn),
                        _csv_buffer(frame),
                    )
            conn.commit()
        return len(frame)


def pg_type(series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double precision"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "timestamptz"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "timestamp"
    sample = series.dropna()
    first = sample.iloc[0] if len(sample) else None
    if isinstance(first, dt.date) and not isinstance(first, dt.datetime):
        return "date"
    if isinstance(first, (dict, list)):
        return "jsonb"
    return "text"


def _csv_buffer(frame: pd.DataFrame) -> io.StringIO:
    import json

    out = frame.copy()
    for c in out.columns:
        if out[c].dtype == object and out[c].map(lambda v: isinstance(v, (dict, list))).any():
            out[c] = out[c].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    buf = io.StringIO()
    out.replace({np.nan: None}).to_csv(buf, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%dT%H:%M:%S.%f%z")
    buf.seek(0)
    return buf


def table_for(key: dg.AssetKey) -> tuple[str, str]:
    """``warehouse/<schema>/<table>`` asset keys name their table; the schema in this process's
    namespace (``PLATFORM_NAMESPACE=acme``: ``acme_<schema>``, platform_assets/namespace.py)."""
    if len(key.path) < 2:
        raise ValueError(f"asset {key.to_user_string()} needs a key of the form [..., schema, table]")
    return namespace.schema(key.path[-2]), key.path[-1]


class PostgresPandasIOManager(dg.ConfigurableIOManager):
    """Stores pandas frames as warehouse tables; partitioned assets replace their partition window.

    A partitioned asset names its partition column in its definition metadata
    (``{"partition_column": "date"}``); the column must hold the rows' partition dates.
    """

    warehouse: WarehouseResource

    def _window(self, context) -> tuple[dt.datetime, dt.datetime] | None:
        if not context.has_asset_partitions:
            return None
        tw = context.asset_partitions_time_window
        return (tw.start, tw.end)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if obj is None:
            return
        schema, table = table_for(context.asset_key)
        part_col = (context.definition_metadata or {}).get("partition_column")
        window = self._window(context)
        if window and not part_col:
            raise ValueError(f"{context.asset_key.to_user_string()} is partitioned but declares no partition_column")
        if window:
            window = (window[0].date(), window[1].date()) if _is_date_column(obj, part_col) else window
        with only_transient_retried():  # a server restart is retried by the step's policy; a bad table is not
            self.warehouse.replace(schema, table, obj, partition_column=part_col if window else None, window=window)
        context.add_output_metadata(
            {**frame_metadata(obj), "table": dg.MetadataValue.text(f"{schema}.{table}"),
             "dagster/relation_identifier": f"{self.warehouse.database}.{schema}.{table}"}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        from psycopg2 import sql as q

        schema, table = table_for(context.asset_key)
        stmt = q.SQL("SELECT * FROM {}").format(q.Identifier(schema, table))
        params: tuple = ()
        part_col = (context.upstream_output.definition_metadata or {}).get("partition_column")
        if context.has_asset_partitions and part_col:
            tw = context.asset_partitions_time_window
            stmt = q.SQL("{} WHERE {} >= %s AND {} < %s").format(stmt, q.Identifier(part_col), q.Identifier(part_col))
            params = (tw.start, tw.end)
        with only_transient_retried():
            with self.warehouse.connect() as conn:
                stmt_text = stmt.as_string(conn)
            return self.warehouse.query(stmt_text, params)


def _is_date_column(frame: pd.DataFrame, column: str | None) -> bool:
    return column is not None and column in frame.columns and pg_type(frame[column]) == "date"
