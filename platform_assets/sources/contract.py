"""A source's schema contract applied to parsed records: typed rows in, broken rows out with a reason.

No I/O, so the rules are unit-tested directly. Vectorised: each rule is one pass over a column
(Arrow compute for text: stripping, null markers, decimal numbers, booleans; pandas for timestamps),
and only the rows that break something are visited one by one, to word their reasons. Decimal text
is read as Python's ``float()`` reads it (pandas' own parser dropped digits past the 16th).

Row-level breaks (a wrong type, a missing required value, a value outside ``allowed``, an event
outside the requested partitions) go to quarantine; a contract broken wholesale (a required column missing from a file, or more than
``max_bad_fraction`` of rows broken) raises ``ContractError`` naming source, file and column.
A declared column that is not required and absent from the data is reported in
``missing_columns`` (the asset warns), never silently loaded as nulls.
Range limits are not contract breaks: outliers are a cleaning concern (see platform_assets/batch).

Null markers (``null_values``: "", NA, N/A, null, NaN by default) are missing values in every
column; empty or whitespace-only text always is. Dates and timestamps are read with the column's
``format`` when declared, else as ISO 8601, else in the one common form (see ``COMMON_DATE_FORMATS``)
that reads most of the column's remaining values; a value no form reads is quarantined.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from platform_assets.sources.config import ColumnContract, Contract
from platform_assets.sources.parse import SOURCE_FILE, SOURCE_ROW, Unparseable

QUARANTINE_COLUMNS = ["source", "source_file", "source_row", "reason", "record", "date", "quarantined_at"]
_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


class ContractError(ValueError):
    """The source breaks its contract wholesale; nothing of this batch is loaded."""


# Tried in order on date/timestamp values that are not ISO 8601; the column takes the one form that
# reads most of them (day/month order is then the column's, never mixed row by row).
COMMON_DATE_FORMATS = (
    "%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%m/%d/%Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M",
    "%d/%m/%Y", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d.%m.%Y", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M",
    "%d-%m-%Y", "%d %b %Y", "%d %B %Y", "%b %d, %Y", "%B %d, %Y", "%d-%b-%Y", "%Y%m%dT%H%M%S",
)


class ContractResult(NamedTuple):
    clean: pd.DataFrame
    quarantine: pd.DataFrame
    extra_columns: list[str]
    # Declared, not required, and absent from the data: loaded as nulls, reported as a warning.
    missing_columns: tuple[str, ...] = ()


# Exactly the characters Python's str.strip() removes (str.isspace), for Arrow's RE2 regexes.
_WHITESPACE = (r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
               r"\x{202f}\x{205f}\x{3000}")
_STRIP = f"^[{_WHITESPACE}]+|[{_WHITESPACE}]+$"
# Decimal numbers that Arrow and Python's float() read alike; anything else goes through pandas.
_PLAIN_NUMBER = r"^[+-]?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,2})?$"


def _text_array(series: pd.Series) -> pa.Array | None:
    """The column as Arrow text when every value is text or missing (CSV, most JSON), else None
    (also when some text is not valid Unicode: ``_not_unicode`` finds it)."""
    if series.dtype != object or pd.api.types.infer_dtype(series, skipna=True) not in ("string", "empty"):
        return None
    try:
        return pa.array(series.to_numpy(), type=pa.string(), from_pandas=True)
    except UnicodeEncodeError:
        return None


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_unicode(series: pd.Series) -> pd.Series:
    """Text that is not valid Unicode: a lone surrogate, which JSON's ``\\ud800`` escape makes and
    ``json.loads`` accepts. No Parquet file or database holds it, so it is a broken value, not a
    reason to fail the batch. One pass, in the general (non-Arrow) path only."""
    return pd.Series(np.fromiter((isinstance(v, str) and not v.isascii() and not _encodes(v) for v in series.to_numpy()),
                                 dtype=bool, count=len(series)), index=series.index)


def _strip(text: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(text, _STRIP, "")


def _mask(values: pa.Array, index: pd.Index) -> pd.Series:
    return pd.Series(values.fill_null(True).to_numpy(zero_copy_only=False), index=index, dtype=bool)


def _is_blank(series: pd.Series, markers: Sequence[str] = (), text: pa.Array | None = None) -> pd.Series:
    """Missing, text that is only whitespace, or a null marker (vectorised: runs on every column of every row).
    ``text``: the column already as Arrow text (``_text_array``), when the caller has it."""
    if series.dtype != object:
        return series.isna()
    text = text if text is not None else _text_array(series)
    if text is not None:
        stripped = _strip(text)
        blank = pc.or_kleene(pc.equal(stripped, ""), pc.is_in(stripped, pa.array(list(markers), pa.string())))
        return _mask(pc.or_kleene(pc.is_null(text), blank), series.index)
    # Mixed values (JSON): records and lists are never blank unless a marker could read like one.
    container = np.fromiter((isinstance(v, (dict, list)) for v in series.to_numpy()), dtype=bool, count=len(series))
    if container.any() and not any(m.lstrip()[:1] in ("{", "[") for m in markers):
        blank = np.zeros(len(series), dtype=bool)
        blank[~container] = _is_blank_values(series[~container], markers).to_numpy(dtype=bool)
        return pd.Series(blank, index=series.index)
    return _is_blank_values(series, markers)


def _is_blank_values(series: pd.Series, markers: Sequence[str]) -> pd.Series:
    """``_is_blank`` of values of any type, through their text (the general, slower path)."""
    text = series.astype("string")
    stripped = text.str.strip()
    blank = text.isna() | (stripped == "")
    if markers:
        blank = blank | stripped.isin(list(markers))
    return blank.fillna(True).astype(bool)


def common_date_format(values: pd.Series) -> str | None:
    """The one form of ``COMMON_DATE_FORMATS`` that reads most of ``values`` (text), or None."""
    best, best_count = None, 0
    for candidate in COMMON_DATE_FORMATS:
        count = int(pd.to_datetime(values, errors="coerce", format=candidate).notna().sum())
        if count > best_count:
            best, best_count = candidate, count
    return best


def _to_timestamps(as_text: pd.Series, fmt: str | None) -> pd.Series:
    """UTC timestamps; values that fit neither the declared format nor ISO 8601 or a common form are NaT."""
    if fmt:
        return pd.to_datetime(as_text, errors="coerce", utc=True, format=fmt)
    ts = pd.to_datetime(as_text, errors="coerce", utc=True, format="ISO8601")
    left = as_text[ts.isna() & as_text.notna()]
    common = common_date_format(left) if len(left) else None
    if common:
        ts = ts.where(ts.notna(), pd.to_datetime(left, errors="coerce", utc=True, format=common).reindex(ts.index))
    return ts


def _to_float(series: pd.Series, text: pa.Array | None = None) -> pd.Series:
    """Floats; plain decimal text is read by Arrow (exactly as Python's float() reads it), the rest by pandas."""
    text = text if text is not None else _text_array(series)
    if text is None:
        return pd.to_numeric(series, errors="coerce").astype("float64")
    plain = pc.fill_null(pc.match_substring_regex(text, _PLAIN_NUMBER), False)
    values = pc.cast(pc.if_else(plain, text, pa.scalar(None, pa.string())), pa.float64())
    result = pd.Series(values.to_numpy(zero_copy_only=False), index=series.index, dtype="float64")
    other = ~plain.to_numpy(zero_copy_only=False) & series.notna().to_numpy()
    if other.any():  # "inf", " 1.5", "1,5": pandas decides, as it always has
        result[other] = pd.to_numeric(series[other], errors="coerce").astype("float64")
    return result


def _to_bool(series: pd.Series, text: pa.Array | None = None) -> pd.Series:
    text = text if text is not None else _text_array(series)
    if text is not None:
        word = pc.utf8_lower(_strip(text))
        true, false = pc.is_in(word, pa.array(sorted(_TRUE))), pc.is_in(word, pa.array(sorted(_FALSE)))
        values = pc.or_kleene(true, false).to_numpy(zero_copy_only=False)  # read as one or the other
        known = values & series.notna().to_numpy()
        flags = pd.arrays.BooleanArray(true.to_numpy(zero_copy_only=False), ~known)
        return pd.Series(flags, index=series.index)

    def to_bool(v):
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        text = str(v).strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    return series.map(lambda v: None if pd.isna(v) else to_bool(v)).astype("boolean")


def _canonical_encoder():
    """``json.dumps(v, sort_keys=True)``, with the C encoder built once instead of once per value."""
    from json.encoder import c_make_encoder, encode_basestring_ascii

    python = json.JSONEncoder(sort_keys=True)
    if c_make_encoder is None:
        return python.encode
    # No circular-reference bookkeeping: parsed JSON cannot refer to itself.
    encode = c_make_encoder(None, python.default, encode_basestring_ascii, None, ": ", ", ", True, False, True)
    return lambda v: "".join(encode(v, 0)) if isinstance(v, (dict, list)) else python.encode(v)


_CANONICAL = _canonical_encoder()


def _to_json(v):
    """The value as canonical JSON text (sorted keys), or None when it is missing or not JSON."""
    if isinstance(v, (dict, list)):
        return _CANONICAL(v)
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    try:
        return _CANONICAL(json.loads(v))
    except (TypeError, ValueError):
        return None


def _coerce(series: pd.Series, col: ColumnContract, text: pa.Array | None = None) -> pd.Series:
    """The typed column; values that do not fit come back as null (the caller compares with the input).
    ``text``: the column already as Arrow text (``_text_array``), when the caller has it."""
    if col.type == "float":
        return _to_float(series, text)
    if col.type == "int":
        nums = pd.to_numeric(series, errors="coerce")
        nums = nums.where(np.isclose(nums % 1, 0) | nums.isna())
        return nums.astype("Int64")
    if col.type in ("timestamp", "date"):
        if pd.api.types.is_datetime64_any_dtype(series):
            ts = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
        else:
            as_text = series
            if pd.api.types.infer_dtype(series, skipna=True) not in ("string", "empty"):
                as_text = series.map(lambda v: v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v)
            ts = _to_timestamps(as_text.astype(object), col.format)
        ts = ts.astype("datetime64[us, UTC]")
        return ts if col.type == "timestamp" else _dates(ts)
    if col.type == "bool":
        return _to_bool(series, text)
    if col.type == "json":
        return pd.Series([_to_json(v) for v in series.to_numpy(dtype=object)], index=series.index, dtype=object)
    # string
    missing = series.isna()
    if text is not None or _text_array(series) is not None:
        return series.astype(object).where(~missing, None)
    return series.astype(str).where(~missing, None).astype(object)


def _dates(ts: pd.Series, missing=None) -> pd.Series:
    """``datetime.date`` values of UTC timestamps (``missing`` where there is none), converted by Arrow."""
    present = ts.notna().to_numpy()
    if not present.any():  # typed as pandas types a column without a single date
        return ts.dt.date if missing is pd.NaT else ts.dt.date.where(ts.notna(), None)
    days = pa.array(ts, from_pandas=True).cast(pa.date32()).to_numpy(zero_copy_only=False)
    days = np.array([None] * len(ts), dtype=object) if not len(ts) else days.astype("datetime64[D]").astype(object)
    days[~present] = missing
    return pd.Series(days, index=ts.index, dtype=object)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _record_json(row: pd.Series) -> str:
    """The record as it arrived (before typing), for people reading the quarantine."""
    return _record_text(row.items())


def _record_text(items) -> str:
    record = {k: (None if not isinstance(v, (dict, list)) and pd.isna(v) else v)
              for k, v in items if k not in (SOURCE_FILE, SOURCE_ROW)}
    return json.dumps(record, default=_json_default)


def _records_json(frame: pd.DataFrame, positions: np.ndarray) -> list[str]:
    """``_record_json`` of the rows at ``positions``, without building a Series per row when the rows
    hold values as stored (a frame with a text column: a row of it is of object type)."""
    rows = frame.iloc[positions]
    if not any(dtype == object for dtype in frame.dtypes):
        return [_record_json(rows.iloc[k]) for k in range(len(rows))]
    return [_record_text(record.items()) for record in rows.to_dict("records")]


def _quarantine_frame(source: str, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)
    frame["source"] = source
    frame["source_row"] = frame["source_row"].astype("Int64")
    frame["quarantined_at"] = pd.Timestamp.now(tz="UTC").floor("s")
    return frame


class _Reasons:
    """Reasons per row position, kept only for rows that break something (most rows break nothing)."""

    def __init__(self):
        self.by_row: dict[int, list[str]] = {}

    def add(self, mask, message) -> None:
        """``message(position)`` for every row where ``mask`` holds, after that row's earlier reasons."""
        for pos in np.flatnonzero(np.asarray(mask, dtype=bool)):
            self.by_row.setdefault(int(pos), []).append(message(pos))

    def positions(self) -> np.ndarray:
        return np.array(sorted(self.by_row), dtype=np.int64)


def apply_contract(
    source: str,
    frame: pd.DataFrame,
    contract: Contract,
    *,
    unparseable: Sequence[Unparseable] = (),
    partition_column: str | None = None,
    dates: Sequence[dt.date] | None = None,
    file_dates: dict[str, dt.date] | None = None,
    text_columns: Mapping[str, pa.Array] | None = None,
) -> ContractResult:
    """Split parsed records into typed clean rows and quarantine rows with reasons.

    ``file_dates`` gives the partition date of each raw file, so unparseable records of a
    partitioned source land in the right quarantine partition. ``text_columns``: columns of
    ``frame`` that the parser also has as Arrow text (row for row), so they are not converted again. Every check is one vectorised pass
    over a column; only the rows that break something are visited one by one, to word their reasons.
    """
    file_dates = file_dates or {}
    total = len(frame) + len(unparseable)
    if len(frame):
        missing = [c for c, spec in contract.columns.items() if spec.required and c not in frame.columns]
        if missing:
            files = sorted(set(frame[SOURCE_FILE]))
            raise ContractError(
                f"source {source}: required column(s) {', '.join(missing)} missing from "
                f"{', '.join(files)} (columns found: {', '.join(c for c in frame.columns if not c.startswith('_'))})"
            )
    extra = [c for c in frame.columns if c not in contract.columns and c not in (SOURCE_FILE, SOURCE_ROW)]
    absent = [c for c in contract.columns if c not in frame.columns] if len(frame) else []
    reasons = _Reasons()
    typed = pd.DataFrame(index=frame.index)
    for name, spec in contract.columns.items():
        raw = frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index, dtype=object)
        text = (text_columns or {}).get(name)
        if text is None and raw.dtype == object:
            text = _text_array(raw)  # once per column: the blank test and the typing both read it
            if text is None and spec.type in ("string", "json"):
                broken = _not_unicode(raw)
                if broken.any():
                    reasons.add(broken, lambda p, raw=raw, name=name:
                                f"{name}: {raw.iloc[p]!r} is not valid Unicode text (a lone surrogate)")
        blank = _is_blank(raw, spec.null_values if spec.null_values is not None else contract.null_values, text)
        raw_values = raw.where(~blank, None) if raw.dtype == object else raw
        if text is not None:  # the text of raw_values: blanks missing
            text = pc.if_else(pa.array(blank.to_numpy(dtype=bool)), pa.scalar(None, pa.string()), text)
        value = _coerce(raw_values, spec, text)
        reasons.add(~blank & value.isna(),
                    lambda p, raw=raw, name=name, spec=spec: f"{name}: {raw.iloc[p]!r} is not a valid {spec.type}")
        if spec.required:
            reasons.add(blank, lambda p, name=name: f"{name}: required value missing")
        if spec.allowed is not None:
            outside = value.notna() & ~value.isin(spec.allowed)
            reasons.add(outside, lambda p, value=value, name=name, spec=spec:
                        f"{name}: {value.iloc[p]!r} is not one of {', '.join(spec.allowed)}")
        typed[name] = value.where(~blank, None) if spec.type in ("string", "json") else value
    if partition_column and dates is not None and len(frame):
        day = _dates(pd.to_datetime(typed[partition_column], utc=True), missing=pd.NaT)
        outside = typed[partition_column].notna() & ~day.isin(set(dates))
        window = f"{min(dates)}..{max(dates)}" if dates else "none"
        reasons.add(outside, lambda p: f"{partition_column}: {day.iloc[p]} is outside the requested partitions {window}")
        typed["date"] = day

    bad = reasons.positions()
    origin = frame[[SOURCE_FILE, SOURCE_ROW]].iloc[bad] if len(bad) else None
    rows = [
        {"source_file": file, "source_row": row, "reason": "; ".join(reasons.by_row[int(pos)]), "record": record,
         "date": file_dates.get(file)}
        for pos, file, row, record in zip(bad, origin[SOURCE_FILE] if len(bad) else (),
                                          origin[SOURCE_ROW] if len(bad) else (), _records_json(frame, bad))
    ]
    rows += [
        {"source_file": u.source_file, "source_row": u.source_row, "reason": u.reason,
         "record": u.record, "date": file_dates.get(u.source_file)}
        for u in unparseable
    ]
    if total and len(rows) / total > contract.max_bad_fraction:
        sample = rows[0]
        raise ContractError(
            f"source {source}: {len(rows)} of {total} records break the contract "
            f"(more than {contract.max_bad_fraction:.0%}); first: {sample['source_file']} row "
            f"{sample['source_row']}: {sample['reason']}"
        )
    keep = np.ones(len(frame), dtype=bool)
    keep[bad] = False
    clean = typed[keep].reset_index(drop=True)
    return ContractResult(clean, _quarantine_frame(source, rows), extra, tuple(absent))
