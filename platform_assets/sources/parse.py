"""Raw objects (a source's own bytes) into a frame of untyped values, one row per record.

Every record keeps where it came from (``_source_file``, ``_source_row``) so a quarantined row can
be found in the raw zone. Records that cannot even be parsed (a truncated JSON line, a CSV line with
the wrong number of fields) come back separately with the reason: they are quarantined, not dropped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from resources.sources import RawObject

SOURCE_FILE, SOURCE_ROW = "_source_file", "_source_row"


class Unparseable(NamedTuple):
    source_file: str
    source_row: int
    reason: str
    record: str


class Parsed(NamedTuple):
    frame: pd.DataFrame
    unparseable: list[Unparseable]


class RawFormatError(ValueError):
    """A whole object is unreadable in its declared format."""


def _with_origin(frame: pd.DataFrame, name: str, rows: Iterable[int]) -> pd.DataFrame:
    frame = frame.copy()
    frame[SOURCE_FILE] = name
    frame[SOURCE_ROW] = list(rows)
    return frame


def _parse_csv(obj: RawObject) -> Parsed:
    if not obj.data.strip():
        return Parsed(pd.DataFrame(), [])
    header = next(csv.reader(io.StringIO(obj.data.split(b"\n", 1)[0].decode("utf-8-sig"))))
    bad: list[Unparseable] = []

    def on_invalid(row) -> str:
        bad.append(Unparseable(obj.name, row.number or -1, f"CSV line has {row.actual_columns} fields, "
                               f"the header has {row.expected_columns}", row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(obj.data),
            # Single-threaded parsing is what gives skipped lines their line numbers.
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header}, strings_can_be_null=True, null_values=[""]
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise RawFormatError(f"{obj.name} is not readable as CSV: {exc}") from exc
    frame = table.to_pandas().astype(object).where(lambda f: f.notna(), None)
    # Line numbers of the kept rows: data rows start at line 2; skipped lines are known by number.
    skipped = {b.source_row for b in bad}
    lines = [n for n in range(2, 2 + len(frame) + len(skipped)) if n not in skipped][: len(frame)]
    return Parsed(_with_origin(frame, obj.name, lines), bad)


def _parse_json_lines(obj: RawObject) -> Parsed:
    records, lines, bad = [], [], []
    for number, line in enumerate(obj.data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(Unparseable(obj.name, number, f"invalid JSON: {exc.msg} at column {exc.colno}", line))
            continue
        if not isinstance(doc, dict):
            bad.append(Unparseable(obj.name, number, f"a JSON {type(doc).__name__} is not a record", line))
            continue
        records.append(doc)
        lines.append(number)
    return Parsed(_with_origin(pd.DataFrame.from_records(records), obj.name, lines), bad)


def _parse_parquet(obj: RawObject) -> Parsed:
    try:
        frame = pq.read_table(io.BytesIO(obj.data)).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise RawFormatError(f"{obj.name} is not readable as Parquet: {exc}") from exc
    return Parsed(_with_origin(frame, obj.name, range(1, len(frame) + 1)), [])


def _parse_api_page(obj: RawObject, items_field: str) -> Parsed:
    try:
        items = json.loads(obj.data)[items_field]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RawFormatError(f"{obj.name} is not a page of {items_field!r}: {exc}") from exc
    records, rows, bad = [], [], []
    for number, item in enumerate(items, start=1):
        if isinstance(item, dict):
            records.append(item)
            rows.append(number)
        else:
            bad.append(Unparseable(obj.name, number, "an API item is not a record", json.dumps(item)))
    return Parsed(_with_origin(pd.DataFrame.from_records(records), obj.name, rows), bad)


def parse_objects(kind: str, objects: list[RawObject], items_field: str = "items") -> Parsed:
    """Parse the raw objects of one source kind; frames of several objects are concatenated."""
    parsers = {
        "csv": _parse_csv,
        "json": _parse_json_lines,
        "parquet": _parse_parquet,
        "postgres": _parse_parquet,  # database rows land in the raw zone as Parquet
        "mysql": _parse_parquet,
        "rest": lambda o: _parse_api_page(o, items_field),
    }
    parts = [parsers[kind](o) for o in objects]
    frames = [p.frame for p in parts if len(p.frame.columns)]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Parsed(frame, [u for p in parts for u in p.unparseable])


def count_records(kind: str, objects: list[RawObject], items_field: str = "items") -> int:
    """Records in the raw objects, counted independently of the parser (for reconciliation checks)."""
    total = 0
    for obj in objects:
        if kind == "csv":
            lines = [ln for ln in obj.data.splitlines() if ln.strip()]
            total += max(len(lines) - 1, 0)
        elif kind == "json":
            total += sum(1 for ln in obj.data.splitlines() if ln.strip())
        elif kind == "rest":
            total += len(json.loads(obj.data)[items_field])
        else:
            total += pq.ParquetFile(io.BytesIO(obj.data)).metadata.num_rows
    return total
