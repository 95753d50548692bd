"""Raw objects (a source's own bytes) into a frame of untyped values, one row per record.

Every record keeps where it came from (``_source_file``, ``_source_row``: the line of a CSV or
JSON Lines file, the item number of a JSON array) so a quarantined row can be found in the raw
zone. Records that cannot even be parsed (a truncated JSON line, a CSV line with the wrong number
of fields) come back separately with the reason: they are quarantined, not dropped. An object that
is not in the expected format at all (a JSON array read as JSON Lines) raises ``RawFormatError``
naming the format expected and the option that reads it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
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
    # Text columns of ``frame`` also as Arrow (row for row), when the parser read them as Arrow (CSV):
    # the contract reads them from here instead of converting the frame's Python strings back.
    text: dict[str, pa.Array] | None = None


class RawFormatError(ValueError):
    """A whole object is unreadable in its declared format."""


class ReadOptions(NamedTuple):
    """How to read a file source's bytes (the catalogue's options, as plain values)."""

    json_format: str = "auto"  # auto | lines | array
    records: str | None = None  # dotted path to the array of records inside one JSON document
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header: bool = True
    column_names: tuple[str, ...] = ()  # the columns, in order, of a CSV file without a header


DEFAULT_READ = ReadOptions()
JSON_LINES = ReadOptions(json_format="lines")


def _text(obj: RawObject, encoding: str) -> str:
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return obj.data.decode(codec)
    except UnicodeDecodeError as exc:
        raise RawFormatError(f"{obj.name} is not {encoding} text ({exc}); set encoding: to the file's") from exc


def _with_origin(frame: pd.DataFrame, name: str, rows: Iterable[int]) -> pd.DataFrame:
    """``frame`` (built by the parser, so changed in place: no copy) with where each record came from."""
    frame[SOURCE_FILE] = name
    frame[SOURCE_ROW] = np.fromiter(rows, dtype=np.int64, count=len(frame))
    return frame


def _csv_header(obj: RawObject, opts: ReadOptions) -> list[str]:
    first = _text(RawObject(obj.name, obj.data.split(b"\n", 1)[0]), opts.encoding)
    return next(csv.reader(io.StringIO(first), delimiter=opts.delimiter, quotechar=opts.quote), [])


def _parse_csv(obj: RawObject, opts: ReadOptions = DEFAULT_READ) -> Parsed:
    table, bad = _csv_table(obj, opts)
    return Parsed(_csv_frame(table) if table is not None else pd.DataFrame(), bad)


def _csv_frame(table: pa.Table) -> pd.DataFrame:
    """Parsed CSV rows as pandas: text with None where empty, then where each row came from."""
    data = table.drop_columns([SOURCE_FILE, SOURCE_ROW])
    if all(pa.types.is_string(t) for t in data.schema.types):  # the usual case: text with None where empty
        frame = data.to_pandas()
    else:
        frame = data.to_pandas().astype(object).where(lambda f: f.notna(), None)
    frame[SOURCE_FILE] = table.column(SOURCE_FILE).to_pandas()
    frame[SOURCE_ROW] = table.column(SOURCE_ROW).to_numpy()
    return frame


def _csv_table(obj: RawObject, opts: ReadOptions) -> tuple[pa.Table | None, list[Unparseable]]:
    """One CSV object as an Arrow table of text, with its origin columns (None when the object is empty)."""
    if not obj.data.strip():
        return None, []
    names = _csv_header(obj, opts) if opts.header else list(opts.column_names)
    bad: list[Unparseable] = []

    def on_invalid(row) -> str:
        bad.append(Unparseable(obj.name, row.number or -1, f"CSV line has {row.actual_columns} fields, "
                               f"{'the header has' if opts.header else 'the contract declares'} "
                               f"{row.expected_columns}", row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(obj.data),
            # Single-threaded parsing is what gives skipped lines their line numbers.
            read_options=pacsv.ReadOptions(use_threads=False, encoding=opts.encoding,
                                           column_names=None if opts.header else names),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False,
                                             delimiter=opts.delimiter, quote_char=opts.quote),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names}, strings_can_be_null=True, null_values=[""]
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise RawFormatError(f"{obj.name} is not readable as CSV (delimiter {opts.delimiter!r}, "
                             f"encoding {opts.encoding}): {exc}") from exc
    # Line numbers of the kept rows: data rows start after the header; skipped lines are known by number.
    skipped = {b.source_row for b in bad}
    first, rows = (2 if opts.header else 1), table.num_rows
    lines = [n for n in range(first, first + rows + len(skipped)) if n not in skipped][:rows]
    table = table.append_column(SOURCE_FILE, pa.array([obj.name] * rows, pa.string()))
    return table.append_column(SOURCE_ROW, pa.array(lines, pa.int64())), bad


def _parse_csv_objects(objects: list[RawObject], opts: ReadOptions) -> Parsed:
    """CSV objects as one frame, concatenated as Arrow (one conversion to pandas, not one per file
    plus a pandas concat), with the text columns kept as Arrow for the contract."""
    parts = [_csv_table(o, opts) for o in objects]
    tables = [t for t, _ in parts if t is not None]
    bad = [u for _, b in parts for u in b]
    if not tables:
        return Parsed(pd.DataFrame(), bad)
    first = tables[0]
    # A header naming a column twice, or files with different headers: as pandas reads them (its own
    # union of columns, as for every other format).
    if len(set(first.column_names)) < first.num_columns or not all(t.schema.equals(first.schema) for t in tables[1:]):
        return Parsed(pd.concat([_csv_frame(t) for t in tables], ignore_index=True), bad)
    table = pa.concat_tables(tables) if len(tables) > 1 else first
    text = {n: table.column(n).combine_chunks() for n in table.column_names
            if n not in (SOURCE_FILE, SOURCE_ROW) and pa.types.is_string(table.schema.field(n).type)}
    return Parsed(_csv_frame(table), bad, text)


def _records(obj: RawObject, items: list, what: str) -> Parsed:
    """Items of a JSON array as records; an item that is not an object is quarantined by its number."""
    records, rows, bad = [], [], []
    for number, item in enumerate(items, start=1):
        if isinstance(item, dict):
            records.append(item)
            rows.append(number)
        else:
            bad.append(Unparseable(obj.name, number, f"{what} item {number} is a JSON "
                                   f"{type(item).__name__}, not a record", json.dumps(item)))
    return Parsed(_with_origin(pd.DataFrame.from_records(records), obj.name, rows), bad)


def _document(obj: RawObject, text: str, expected: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RawFormatError(f"{obj.name} is not {expected}: invalid JSON at line {exc.lineno} column "
                             f"{exc.colno}: {exc.msg}") from exc


def _at_path(obj: RawObject, doc, path: str) -> list:
    node = doc
    for i, part in enumerate(path.split(".")):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(path.split(".")[:i]) or "the top level"
            keys = ", ".join(map(str, node)) if isinstance(node, dict) else f"a JSON {type(node).__name__}"
            raise RawFormatError(f"{obj.name}: records path {path!r} not found: {part!r} is not a key of "
                                 f"{where} (found: {keys or 'nothing'})")
        node = node[part]
    if not isinstance(node, list):
        raise RawFormatError(f"{obj.name}: records path {path!r} holds a JSON {type(node).__name__}, "
                             f"not an array of records")
    return node


def _json_shape(text: str, opts: ReadOptions) -> str:
    """lines, array or document: declared, or told by the first character."""
    if opts.records:
        return "document"
    if opts.json_format != "auto":
        return opts.json_format
    return "array" if text.lstrip()[:1] == "[" else "lines"


def _parse_json(obj: RawObject, opts: ReadOptions = DEFAULT_READ) -> Parsed:
    text = _text(obj, opts.encoding)
    if not text.strip():
        return Parsed(pd.DataFrame(), [])
    shape = _json_shape(text, opts)
    if shape == "document":
        return _records(obj, _at_path(obj, _document(obj, text, "a JSON document"), opts.records), opts.records)
    if shape == "array":
        doc = _document(obj, text, "a JSON array of records (format: array)")
        if not isinstance(doc, list):
            keys = f" with keys {', '.join(map(str, doc))}" if isinstance(doc, dict) else ""
            raise RawFormatError(f"{obj.name} is a JSON {type(doc).__name__}{keys}, not a JSON array of records "
                                 f"(format: array); give records: <path to the array> to read records inside it")
        return _records(obj, doc, "array")
    return _parse_json_lines(obj, text)


# The C scanner behind json.loads, called directly: json.loads adds two Python frames and a regex
# per call (half the decoding time of a log line). Only a line it reads whole, from its first
# character, is taken from it; any other line goes through json.loads, for its result or its error.
_SCAN = json.JSONDecoder().scan_once


def _loads_line(line: str):
    """``json.loads(line)``: the same value, or the same ``JSONDecodeError``."""
    try:
        doc, end = _SCAN(line, 0)
        if end == len(line):
            return doc
    except (StopIteration, ValueError):
        pass
    return json.loads(line)


def _parse_json_lines(obj: RawObject, text: str) -> Parsed:
    records, lines, bad = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = _loads_line(line)
        except json.JSONDecodeError as exc:
            bad.append(Unparseable(obj.name, number, f"invalid JSON: {exc.msg} at column {exc.colno}", line))
            continue
        if not isinstance(doc, dict):
            bad.append(Unparseable(obj.name, number, f"a JSON {type(doc).__name__} is not a record", line))
            continue
        records.append(doc)
        lines.append(number)
    if len(bad) >= max(len(records), 1):
        _not_lines(obj, text)
    return Parsed(_with_origin(pd.DataFrame.from_records(records), obj.name, lines), bad)


def _not_lines(obj: RawObject, text: str) -> None:
    """Most lines are not records: say so when the whole object is one JSON document (an array, say)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return
    hint = "format: array (or auto)" if isinstance(doc, list) else "records: <path to the array of records>"
    raise RawFormatError(f"{obj.name}: JSON Lines expected (one record per line), but it is one JSON "
                         f"{type(doc).__name__} document; set {hint}")


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
    return _records(obj, items, "an API")


def parse_objects(kind: str, objects: list[RawObject], items_field: str = "items",
                  options: ReadOptions = DEFAULT_READ) -> Parsed:
    """Parse the raw objects of one source kind; frames of several objects are concatenated."""
    parsers = {
        "csv": lambda o: _parse_csv(o, options),
        "json": lambda o: _parse_json(o, options),
        "parquet": _parse_parquet,
        "postgres": _parse_parquet,  # database rows land in the raw zone as Parquet
        "mysql": _parse_parquet,
        "rest": lambda o: _parse_api_page(o, items_field),
        "mongodb": lambda o: _parse_json(o, JSON_LINES),  # documents land as JSON Lines
    }
    if kind == "csv":
        return _parse_csv_objects(objects, options)
    parts = [parsers[kind](o) for o in objects]
    frames = [p.frame for p in parts if len(p.frame.columns)]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Parsed(frame, [u for p in parts for u in p.unparseable])


def count_records(kind: str, objects: list[RawObject], items_field: str = "items",
                  options: ReadOptions = DEFAULT_READ) -> int:
    """Records in the raw objects, counted independently of the parser (for reconciliation checks)."""
    total = 0
    for obj in objects:
        if kind == "csv":
            wide = any(w in options.encoding.lower() for w in ("16", "32"))  # not ASCII-compatible: lines in text
            data = obj.data.decode(options.encoding, errors="replace") if wide else obj.data
            lines = [ln for ln in data.splitlines() if ln.strip()]
            total += max(len(lines) - (1 if options.header else 0), 0)
        elif kind in ("json", "mongodb"):
            options = JSON_LINES if kind == "mongodb" else options
            text = obj.data.decode(options.encoding, errors="replace").lstrip("\ufeff")
            shape = _json_shape(text, options) if text.strip() else "lines"
            if shape == "lines":
                total += sum(1 for ln in text.splitlines() if ln.strip())
            else:
                doc = json.loads(text)
                for part in (options.records.split(".") if shape == "document" else ()):
                    doc = doc[part]
                total += len(doc)
        elif kind == "rest":
            total += len(json.loads(obj.data)[items_field])
        else:
            total += pq.ParquetFile(io.BytesIO(obj.data)).metadata.num_rows
    return total
