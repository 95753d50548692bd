"""How the processing engine's DataFrames get in and out of the lake, in its lake-access mode.

DuckDB always uses ``arrow`` (below), its tables filled from pyarrow reads; Spark uses the mode
SparkResource picks.

``direct``: Spark reads and writes ``LakeResource.uri()`` itself (Parquet, Hive ``date=`` folders),
the scalable path: executors move the data. ``arrow``: the driver reads each partition's Parquet
files through the lake's pyarrow filesystem and hands one Arrow table to ``createDataFrame``;
results come back with ``toArrow`` and are written per ``date=`` partition through LakeResource.
That reaches any store pyarrow reaches (``s3://`` without Hadoop's S3 connector jar) at the cost of
passing every byte through the driver: right for a small lake or a laptop, not for big data.

Both modes produce the same layout and, for the lake's tables (timestamps with a time zone), the
same DataFrame schema, the ``date`` partition column last as a date, so assets stay pure
transformations and never know which mode ran. (A naive Parquet timestamp would come back as
``timestamp_ntz`` in direct mode and ``timestamp`` in arrow mode: the contracts type every
timestamp with a zone, so the lake holds none.)
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from resources.engine import ProcessingEngine
from resources.lake import LakeResource
from resources.lake_io_manager import PART_FILE, PARTITION_COLUMN, partition_dir


def _data_files(lake: LakeResource, rel_dir: str) -> list[str]:
    """Parquet data files of a folder, without Spark's markers (``_SUCCESS``) and checksums (``.crc``)."""
    return [f for f in lake.list_files(rel_dir)
            if f.endswith(".parquet") and not posixpath.basename(f).startswith(("_", "."))]


def _read_tables(lake: LakeResource, files: Sequence[str]) -> list[pa.Table]:
    return [lake.read_parquet(f) for f in files]


def read_days(engine: ProcessingEngine, lake: LakeResource, base: str, days: Sequence[dt.date]):
    """The ``date=`` partitions of ``base`` (a lake-relative folder) for ``days``, as one DataFrame."""
    if engine.lake_access_mode(lake.is_local) == "direct":
        paths = [lake.uri(partition_dir(base, d)) for d in days]
        return engine.session.read.option("basePath", lake.uri(base)).parquet(*paths)
    tables = []
    for day in days:
        rel = partition_dir(base, day)
        files = _data_files(lake, rel)
        if not files:  # what direct mode's PATH_NOT_FOUND says, with the lake's own path
            raise FileNotFoundError(f"no Parquet files in lake partition {lake.uri(rel)}")
        part = pa.concat_tables(_read_tables(lake, files), promote_options="permissive")
        tables.append(part.append_column(PARTITION_COLUMN, pa.array([day] * part.num_rows, pa.date32())))
    return engine.from_arrow(pa.concat_tables(tables, promote_options="permissive"))


def read_snapshot(engine: ProcessingEngine, lake: LakeResource, rel: str):
    """One unpartitioned Parquet object (or folder of them) of the lake, as a DataFrame."""
    if engine.lake_access_mode(lake.is_local) == "direct":
        return engine.session.read.parquet(lake.uri(rel))
    files = [rel] if rel.endswith(".parquet") else _data_files(lake, rel)
    return engine.from_arrow(pa.concat_tables(_read_tables(lake, files), promote_options="permissive"))


def write_days(engine: ProcessingEngine, lake: LakeResource, frame, base: str, days: Sequence[dt.date]) -> str:
    """Replace the ``date=`` partitions of ``base`` that ``frame`` holds; returns the location.

    Direct mode overwrites the partitions present in ``frame`` (dynamic partition overwrite). Arrow
    mode replaces every day of the run's window, a day without rows getting an empty file as the
    lake IO manager does, so a rerun never leaves stale rows and readers always find each day.
    """
    if engine.lake_access_mode(lake.is_local) == "direct":
        uri = lake.uri(base)
        frame.write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(uri)
        return uri
    table = engine.to_arrow(frame)
    dates = table.column(PARTITION_COLUMN).cast(pa.date32())
    data = table.drop_columns([PARTITION_COLUMN])
    unexpected = set(pc.unique(dates).to_pylist()) - set(days) - {None}
    if unexpected or dates.null_count:
        raise ValueError(f"{base}: rows dated outside the run's partitions: {sorted(map(str, unexpected))[:5]}")
    for day in days:
        part = data.filter(pc.equal(dates, pa.scalar(day, pa.date32())))
        rel = partition_dir(base, day)
        target = posixpath.join(rel, PART_FILE)
        lake.write_parquet(target, part)  # replaces the old file in one move: the day is never missing
        for stale in lake.list_files(rel):  # then what an earlier layout (e.g. direct mode) left there
            if stale != target:
                lake.delete_file(stale)
    return lake.uri(base)
