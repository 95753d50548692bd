"""No small-file lake: each closed event hour of a stream rewritten into one large Parquet file.

A stream writes one file per offset range and event hour (``pNNN-<start>-<end>.parquet``), a few a
second in continuous mode. Compaction rewrites an hour folder's files into one
``compacted-<id>.parquet``, never changing a row (rows are only concatenated and ordered by
partition and offset; the counts and the (partition, offset) keys are checked before anything is
replaced), and records in the file's Parquet metadata the files and the offset ranges it covers.

Atomic for readers without a lock: the compacted file appears in one move (``LakeResource``
writes through a temporary name), and from that instant ``visible_files`` reads it *instead of*
the files it lists as covered, whether they are deleted yet or not. A file written into the hour
afterwards (a late reading) is not covered, so it is read beside it until the next compaction, which
covers the earlier compacted file too. Only files whose offset range is durable
(``streaming.batches``) are compacted: a file of a batch still in flight may yet be replaced or
removed by its batch.

Readers of a stream's lake go through ``read_stream`` (compacted hours plus open ones); a reader
that lists an hour just before its files are removed lists it again.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from platform_assets.streaming.microbatch import OFFSET, PARTITION
from resources.lake import LakeResource

COMPACTED_PREFIX = "compacted-"
COVERS_KEY, RANGES_KEY = b"platform.covers", b"platform.offset_ranges"
RANGE_FILE = re.compile(r"^p(\d+)-(\d+)-(\d+)\.parquet$")
ROW_GROUP_ROWS = 1_000_000


class Compacted(NamedTuple):
    hour_dir: str
    file: str | None  # None when there was nothing to do
    rows: int
    files_replaced: int
    ranges: list[dict]
    skipped_in_flight: int  # files whose range is not durable yet


def hour_dir(base: str, hour) -> str:
    """``<base>/date=YYYY-MM-DD/hour=HH`` for a timestamp in the hour."""
    return posixpath.join(base, f"date={hour:%Y-%m-%d}", f"hour={hour:%H}")


def file_range(name: str) -> tuple[int, int, int] | None:
    m = RANGE_FILE.match(posixpath.basename(name))
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def covers(lake: LakeResource, rel: str) -> list[str]:
    """The file names a compacted file stands for (from its Parquet metadata)."""
    meta = pq.read_schema(lake.path(rel), filesystem=lake._filesystem()[0]).metadata or {}
    return json.loads(meta.get(COVERS_KEY, b"[]"))


def visible_files(lake: LakeResource, rel_dir: str) -> list[str]:
    """The files a reader reads in an hour folder: compacted files not superseded by another, and
    the range files no compacted file covers."""
    files = [f for f in lake.list_files(rel_dir) if f.endswith(".parquet")]
    compacted = {f: set(covers(lake, f)) for f in files if posixpath.basename(f).startswith(COMPACTED_PREFIX)}
    covered = set().union(*compacted.values()) if compacted else set()
    return [f for f in files if posixpath.basename(f) not in covered]


def read_files(lake: LakeResource, files: Sequence[str]) -> pa.Table | None:
    tables = [lake.read_parquet(f) for f in files]
    tables = [t.replace_schema_metadata(None) for t in tables]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def read_hour(lake: LakeResource, rel_dir: str, attempts: int = 3) -> pa.Table | None:
    """An hour folder's rows, each once, whatever compaction is doing meanwhile."""
    for attempt in range(attempts):
        try:
            return read_files(lake, visible_files(lake, rel_dir))
        except FileNotFoundError:  # covered files removed between listing and reading: list again
            if attempt == attempts - 1:
                raise
    return None


def hour_dirs(lake: LakeResource, base: str) -> list[str]:
    """Every ``date=/hour=`` folder of a stream's lake table."""
    fs, root = lake._filesystem()
    from pyarrow import fs as pafs

    for attempt in range(5):
        try:
            infos = fs.get_file_info(pafs.FileSelector(lake.path(base), allow_not_found=True, recursive=True))
            break
        except FileNotFoundError:  # a folder went (compaction, a redone batch) while it was listed: again
            if attempt == 4:
                raise
    dirs = {posixpath.relpath(posixpath.dirname(i.path), root) for i in infos
            if i.type == pafs.FileType.File and i.path.endswith(".parquet")}
    return sorted(d for d in dirs if posixpath.basename(d).startswith("hour="))


def read_stream(lake: LakeResource, base: str, hours: Iterable[str] | None = None) -> pa.Table | None:
    """A stream's lake table (compacted hours plus open ones), each row once; ``hours`` limits it to
    some ``date=/hour=`` folders (relative to the lake root)."""
    tables = [t for d in (hours if hours is not None else hour_dirs(lake, base)) if (t := read_hour(lake, d)) is not None]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def merged_ranges(pairs: pa.Table) -> list[dict]:
    """Contiguous offset ranges per partition present in a table of ``_partition``/``_offset``."""
    out = []
    order = pairs.sort_by([(PARTITION, "ascending"), (OFFSET, "ascending")])
    parts, offs = order[PARTITION].to_pylist(), order[OFFSET].to_pylist()
    for p, o in zip(parts, offs):
        if out and out[-1]["partition"] == p and out[-1]["end"] == o:
            out[-1]["end"] = o + 1
        else:
            out.append({"partition": p, "start": o, "end": o + 1})
    return out


def compact_hour(lake: LakeResource, rel_dir: str, durable: set[tuple[int, int, int]]) -> Compacted:
    """Rewrite the hour folder's durable files into one; the old ones go once it is in place."""
    visible = visible_files(lake, rel_dir)
    in_flight = [f for f in visible if file_range(f) is not None and file_range(f) not in durable]
    chosen = [f for f in visible if f not in in_flight]
    if len(chosen) < 2 and not any(file_range(f) for f in chosen):
        return Compacted(rel_dir, None, 0, 0, [], len(in_flight))  # nothing, or already one compacted file
    if not chosen:
        return Compacted(rel_dir, None, 0, 0, [], len(in_flight))
    table = read_files(lake, chosen)
    expected = sum(pq.read_metadata(lake.path(f), filesystem=lake._filesystem()[0]).num_rows for f in chosen)
    table = table.sort_by([(PARTITION, "ascending"), (OFFSET, "ascending")])
    keys = table.select([PARTITION, OFFSET])
    distinct = keys.group_by([PARTITION, OFFSET]).aggregate([]).num_rows
    if table.num_rows != expected or distinct != table.num_rows:
        raise ValueError(f"compaction of {rel_dir}: {table.num_rows} rows read of {expected}, {distinct} distinct "
                         f"(partition, offset): refusing to replace anything")
    names = sorted({posixpath.basename(f) for f in chosen}
                   | {c for f in chosen if posixpath.basename(f).startswith(COMPACTED_PREFIX) for c in covers(lake, f)})
    ranges = merged_ranges(keys)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), COVERS_KEY: json.dumps(names).encode(),
                                           RANGES_KEY: json.dumps(ranges).encode()})
    name = f"{COMPACTED_PREFIX}{hashlib.sha1(json.dumps(names).encode()).hexdigest()[:16]}.parquet"
    target = posixpath.join(rel_dir, name)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    lake.write_bytes(target, buf.getvalue().to_pybytes())  # one move: readers switch to it here
    check = lake.read_parquet(target)
    if check.num_rows != expected or pc.sum(check[OFFSET]).as_py() != pc.sum(table[OFFSET]).as_py():
        raise ValueError(f"compaction of {rel_dir}: {target} does not read back as written")
    for f in chosen:
        if f != target:
            lake.delete_file(f)
    return Compacted(rel_dir, target, table.num_rows, len([f for f in chosen if f != target]), ranges,
                     len(in_flight))
