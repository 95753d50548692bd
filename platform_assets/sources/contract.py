"""A source's schema contract applied to parsed records: typed rows in, broken rows out with a reason.

Pure pandas, no I/O, so the rules are unit-tested directly. Row-level breaks (a wrong type, a missing
required value, a value outside ``allowed``, an event outside the requested partitions) go to
quarantine; a contract broken wholesale (a required column missing from a file, or more than
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
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

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


def _is_blank(series: pd.Series, markers: Sequence[str] = ()) -> pd.Series:
    """Missing, text that is only whitespace, or a null marker (vectorised: runs on every column of every row)."""
    if series.dtype != object:
        return series.isna()
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


def _coerce(series: pd.Series, col: ColumnContract) -> pd.Series:
    """The typed column; values that do not fit come back as null (the caller compares with the input)."""
    if col.type == "float":
        return pd.to_numeric(series, errors="coerce").astype("float64")
    if col.type == "int":
        nums = pd.to_numeric(series, errors="coerce")
        nums = nums.where(np.isclose(nums % 1, 0) | nums.isna())
        return nums.astype("Int64")
    if col.type in ("timestamp", "date"):
        if pd.api.types.is_datetime64_any_dtype(series):
            ts = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
        else:
            as_text = series.map(lambda v: v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v)
            ts = _to_timestamps(as_text.astype(object), col.format)
        ts = ts.astype("datetime64[us, UTC]")
        return ts if col.type == "timestamp" else ts.dt.date.where(ts.notna(), None)
    if col.type == "bool":
        def to_bool(v):
            if isinstance(v, (bool, np.bool_)):
                return bool(v)
            text = str(v).strip().lower()
            return True if text in _TRUE else False if text in _FALSE else None
        return series.map(lambda v: None if pd.isna(v) else to_bool(v)).astype("boolean")
    if col.type == "json":
        def to_json(v):
            if isinstance(v, (dict, list)):
                return json.dumps(v, sort_keys=True)
            try:
                return json.dumps(json.loads(v), sort_keys=True)
            except (TypeError, ValueError):
                return None
        return series.map(lambda v: None if v is None or (not isinstance(v, (dict, list)) and pd.isna(v))
                          else to_json(v)).astype(object)
    # string
    missing = series.isna()
    return series.astype(str).where(~missing, None).astype(object)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _record_json(row: pd.Series) -> str:
    """The record as it arrived (before typing), for people reading the quarantine."""
    record = {k: (None if not isinstance(v, (dict, list)) and pd.isna(v) else v)
              for k, v in row.items() if k not in (SOURCE_FILE, SOURCE_ROW)}
    return json.dumps(record, default=_json_default)


def _quarantine_frame(source: str, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)
    frame["source"] = source
    frame["source_row"] = frame["source_row"].astype("Int64")
    frame["quarantined_at"] = pd.Timestamp.now(tz="UTC").floor("s")
    return frame


def apply_contract(
    source: str,
    frame: pd.DataFrame,
    contract: Contract,
    *,
    unparseable: Sequence[Unparseable] = (),
    partition_column: str | None = None,
    dates: Sequence[dt.date] | None = None,
    file_dates: dict[str, dt.date] | None = None,
) -> ContractResult:
    """Split parsed records into typed clean rows and quarantine rows with reasons.

    ``file_dates`` gives the partition date of each raw file, so unparseable records of a
    partitioned source land in the right quarantine partition.
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
    reasons = pd.Series([[] for _ in range(len(frame))], index=frame.index, dtype=object)
    typed = pd.DataFrame(index=frame.index)
    for name, spec in contract.columns.items():
        raw = frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index, dtype=object)
        blank = _is_blank(raw, spec.null_values if spec.null_values is not None else contract.null_values)
        raw_values = raw.where(~blank, None) if raw.dtype == object else raw
        value = _coerce(raw_values, spec)
        broken = ~blank & value.isna()
        for i in frame.index[broken]:
            reasons[i].append(f"{name}: {raw[i]!r} is not a valid {spec.type}")
        if spec.required:
            for i in frame.index[blank]:
                reasons[i].append(f"{name}: required value missing")
        if spec.allowed is not None:
            outside = value.notna() & ~value.isin(spec.allowed)
            for i in frame.index[outside]:
                reasons[i].append(f"{name}: {value[i]!r} is not one of {', '.join(spec.allowed)}")
        typed[name] = value.where(~blank, None) if spec.type in ("string", "json") else value
    if partition_column and dates is not None and len(frame):
        day = pd.to_datetime(typed[partition_column], utc=True).dt.date
        outside = typed[partition_column].notna() & ~day.isin(set(dates))
        window = f"{min(dates)}..{max(dates)}" if dates else "none"
        for i in frame.index[outside]:
            reasons[i].append(f"{partition_column}: {day[i]} is outside the requested partitions {window}")
        typed["date"] = day

    bad_mask = reasons.map(bool)
    rows = [
        {"source_file": frame.at[i, SOURCE_FILE], "source_row": frame.at[i, SOURCE_ROW],
         "reason": "; ".join(reasons[i]), "record": _record_json(frame.loc[i]),
         "date": file_dates.get(frame.at[i, SOURCE_FILE])}
        for i in frame.index[bad_mask]
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
    clean = typed[~bad_mask].reset_index(drop=True)
    return ContractResult(clean, _quarantine_frame(source, rows), extra, tuple(absent))
