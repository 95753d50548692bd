"""The processing engine the batch transformations run on: DuckDB (embedded) or Spark.

The transformations (``platform_assets/batch``) are PySpark DataFrame code. ``PROCESSING_ENGINE``
picks what executes it:

* ``duckdb``: SQLFrame's PySpark-compatible DataFrame API over an in-process DuckDB database. No
  JVM, no per-query scheduling: a laptop-sized lake runs in about a second. The lake is read with
  pyarrow (any store pyarrow reaches: local folders, ``s3://``) into DuckDB tables, once per run;
  results leave as Arrow. The default on one machine.
* ``spark``: the ``SparkResource`` session (``SPARK_MASTER``: ``local[N]`` or a cluster), for data
  beyond one machine; the lake-access mode decides how Spark reaches the lake (``spark_lake.py``).

Both produce the same marts (``tests/integration/test_engines_equal.py``). The resource also owns
what differs between the two engines beyond the API: how a frame is made from Arrow, kept for reuse
(``persist``), and handed back as Arrow or pandas, so assets never branch on the engine.
"""

from __future__ import annotations

import os
import uuid

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import PrivateAttr

from resources.spark import SparkResource

ENGINES = ("duckdb", "spark")
ENGINE_ENV = "PROCESSING_ENGINE"
_DUCKDB = {}  # the process's DuckDB session: SQLFrame sessions are process-wide singletons


def _duckdb_session(threads: int, memory_limit: str):
    """One in-memory DuckDB database per process, in UTC like the Spark session."""
    if "session" not in _DUCKDB:
        import duckdb
        from sqlframe.duckdb import DuckDBSession

        conn = duckdb.connect(":memory:")
        conn.execute("SET TimeZone = 'UTC'")
        if threads:
            conn.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            conn.execute("SET memory_limit = ?", [memory_limit])
        _DUCKDB["session"] = DuckDBSession(conn=conn)
    return _DUCKDB["session"]


class ProcessingEngine(dg.ConfigurableResource):
    """``kind`` is ``duckdb`` or ``spark`` (unset: ``$PROCESSING_ENGINE``, else ``duckdb``)."""

    spark: SparkResource
    kind: str | None = None
    # DuckDB: worker threads (0: one per core) and memory cap (empty: DuckDB's default, 80% of RAM).
    duckdb_threads: int = 0
    duckdb_memory_limit: str = ""

    # id(frame) -> (frame, DuckDB table); holding the frame keeps its id from being reused.
    _tables: dict[int, tuple[object, str]] = PrivateAttr(default_factory=dict)

    @property
    def name(self) -> str:
        kind = (self.kind or os.environ.get(ENGINE_ENV) or "duckdb").strip().lower()
        if kind not in ENGINES:
            raise ValueError(f"{ENGINE_ENV} (kind) must be one of {', '.join(ENGINES)}, got {kind!r}")
        return kind

    @property
    def session(self):
        """A SQLFrame ``DuckDBSession`` or a ``SparkSession``: the same DataFrame API."""
        if self.name == "spark":
            return self.spark.session
        return _duckdb_session(self.duckdb_threads, self.duckdb_memory_limit)

    def lake_access_mode(self, lake_is_local: bool) -> str:
        """DuckDB always reads through pyarrow (``arrow``); Spark as its resource says."""
        return self.spark.lake_access_mode(lake_is_local) if self.name == "spark" else "arrow"

    # -- frames in and out -----------------------------------------------------------------------
    def _duckdb_table(self, fill) -> object:
        """A frame over a new DuckDB table (in the database, so every cursor sees it), filled by ``fill(conn, name)``."""
        session = self.session
        name = f"_lake_{uuid.uuid4().hex[:12]}"
        fill(session._conn, name)
        frame = session.table(name)
        self._tables[id(frame)] = (frame, name)
        return frame

    def from_arrow(self, table: pa.Table):
        """A DataFrame over an Arrow table: DuckDB copies it into a table of its own (read once)."""
        if self.name == "spark":
            return self.session.createDataFrame(table)

        def fill(conn, name):
            view = f"{name}_arrow"
            conn.register(view, table)
            try:
                conn.execute(f'CREATE TABLE "{name}" AS SELECT * FROM "{view}"')
            finally:
                conn.unregister(view)

        return self._duckdb_table(fill)

    def persist(self, frame):
        """Compute ``frame`` once for several later actions: Spark caches it, DuckDB stores a table
        (a frame that already is one, such as a lake read, stays as it is)."""
        if self.name == "spark":
            return frame.cache()
        if id(frame) in self._tables:
            return frame
        sql = frame.sql(dialect="duckdb", optimize=False, pretty=False)
        return self._duckdb_table(lambda conn, name: conn.execute(f'CREATE TABLE "{name}" AS {sql}'))

    @staticmethod
    def to_arrow(frame) -> pa.Table:
        return frame.toArrow()

    def to_pandas(self, frame) -> pd.DataFrame:
        """A result as pandas, timestamps naive in UTC on both engines (what Spark's toPandas gives)."""
        if self.name == "spark":
            return frame.toPandas()
        table = frame.toArrow()
        for i, field in enumerate(table.schema):
            if pa.types.is_timestamp(field.type) and field.type.tz is not None:
                table = table.set_column(i, field.name, table.column(i).cast(pa.timestamp(field.type.unit)))
        return table.to_pandas()

    def first_row(self, frame) -> dict:
        """The single row of an aggregate, as a dict of plain Python values."""
        rows = frame.collect()
        if len(rows) != 1:
            raise ValueError(f"expected one row, got {len(rows)}")
        return rows[0].asDict()

    # -- lifetime --------------------------------------------------------------------------------
    def unpersist(self, *frames) -> None:
        """Free frames from ``persist`` or ``from_arrow`` once no later action needs them."""
        for frame in frames:
            if self.name == "spark":
                frame.unpersist()
            elif (held := self._tables.pop(id(frame), None)) is not None:
                _DUCKDB["session"]._conn.execute(f'DROP TABLE IF EXISTS "{held[1]}"')

    def release(self) -> None:
        """Drop every DuckDB table this resource still holds (the end of a run)."""
        if self._tables and "session" in _DUCKDB:
            conn = _DUCKDB["session"]._conn
            for _, name in self._tables.values():
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        self._tables.clear()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.release()
