"""Pure transforms of one micro-batch: decode and validate, lay out lake files, window, detect.

No I/O here: the asset (platform_assets/streaming/assets.py) reads the offset range from Kafka and
hands the messages in; everything it writes comes out of these functions, so each rule is tested
on plain frames.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from platform_assets.sources.config import Contract
from platform_assets.sources.contract import apply_contract
from platform_assets.sources.parse import SOURCE_FILE, SOURCE_ROW
from platform_assets.streaming import registry
from platform_assets.streaming.config import Anomalies, StreamConfig, Windows
from resources.kafka import KafkaMessage, OffsetRange

PARTITION, OFFSET, KAFKA_TS = "_partition", "_offset", "_kafka_ts"
DEAD_LETTER_COLUMNS = ["partition", "offset", "reason", "key", "raw", "kafka_ts"]


class Decoded(NamedTuple):
    valid: pd.DataFrame  # contract-typed columns + _partition, _offset, _kafka_ts
    dead_letters: pd.DataFrame  # DEAD_LETTER_COLUMNS


def decode(messages: Sequence[KafkaMessage], contract: Contract, topic: str) -> Decoded:
    """JSON values validated by the contract; anything else becomes a dead letter with its reason."""
    records, dead = [], []
    by_id = {(m.partition, m.offset): m for m in messages}
    for m in messages:
        reason = None
        try:
            value, reason = registry.unframe(m.value)  # registry-framed: checked against its schema first
            doc = json.loads(value) if value is not None else None
            if reason is None and not isinstance(doc, dict):
                reason = "value is not a JSON object" if doc is not None else "empty value"
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            reason = f"invalid JSON: {exc}"
        if reason:
            dead.append((m.partition, m.offset, reason))
            continue
        records.append({**doc, SOURCE_FILE: f"{topic}:{m.partition}", SOURCE_ROW: m.offset,
                        PARTITION: m.partition, KAFKA_TS: m.timestamp_ms})
    frame = pd.DataFrame.from_records(records)
    valid = pd.DataFrame(columns=[*contract.columns, PARTITION, OFFSET, KAFKA_TS])
    if len(frame):
        missing = [c for c, spec in contract.columns.items() if spec.required and c not in frame.columns]
        for c in missing:  # a stream never fails wholesale: a message without a field is a dead letter
            frame[c] = None
        # Streams are never failed wholesale: every record is judged on its own.
        lenient = contract.model_copy(update={"max_bad_fraction": 1.0})
        result = apply_contract(topic, frame.drop(columns=[PARTITION, KAFKA_TS]), lenient)
        bad_ids = set()
        for row in result.quarantine.itertuples():
            part = int(str(row.source_file).rsplit(":", 1)[1])
            dead.append((part, int(row.source_row), row.reason))
            bad_ids.add((part, int(row.source_row)))
        good = frame[[(p, o) not in bad_ids for p, o in zip(frame[PARTITION], frame[SOURCE_ROW])]]
        valid = result.clean.copy()
        valid[PARTITION] = good[PARTITION].to_numpy(dtype="int64")
        valid[OFFSET] = good[SOURCE_ROW].to_numpy(dtype="int64")
        valid[KAFKA_TS] = pd.to_datetime(good[KAFKA_TS].to_numpy(dtype="int64"), unit="ms", utc=True)
    dead_frame = pd.DataFrame(
        [(p, o, r, by_id[(p, o)].key, by_id[(p, o)].value,
          pd.Timestamp(by_id[(p, o)].timestamp_ms, unit="ms", tz="UTC")) for p, o, r in dead],
        columns=DEAD_LETTER_COLUMNS,
    )
    return Decoded(valid.reset_index(drop=True), dead_frame.sort_values(["partition", "offset"]).reset_index(drop=True))


def range_file_name(r: OffsetRange) -> str:
    """Named by the offset range, so a retried batch replaces its own files instead of adding more."""
    return f"p{r.partition:03d}-{r.start:012d}-{r.end:012d}.parquet"


def lake_files(valid: pd.DataFrame, base: str, event_time: str, ranges: Sequence[OffsetRange]) -> dict[str, pd.DataFrame]:
    """Relative lake paths → rows: one file per offset range per event hour (Hive-style folders)."""
    files: dict[str, pd.DataFrame] = {}
    if valid.empty:
        return files
    hours = valid[event_time].dt.floor("h")
    by_partition = {r.partition: r for r in ranges}
    for (part, hour), rows in valid.groupby([valid[PARTITION], hours], sort=True):
        folder = posixpath.join(base, f"date={hour:%Y-%m-%d}", f"hour={hour:%H}")
        files[posixpath.join(folder, range_file_name(by_partition[part]))] = rows.reset_index(drop=True)
    return files


def minute_partials(valid: pd.DataFrame, stream: StreamConfig, ranges: Sequence[OffsetRange]) -> pd.DataFrame:
    """Per key, window and offset range: count, sum, sum of squares, min and max of each signal.

    Stored with the range in the primary key, a retried batch overwrites its own contribution and a
    window spanning several batches is the sum of theirs: exactly-once windows without re-reading.
    """
    windows: Windows = stream.windows
    if valid.empty:
        return pd.DataFrame()
    frame = valid.assign(window_start=valid[stream.event_time].dt.floor(f"{windows.minutes}min"))
    starts = {r.partition: r.start for r in ranges}
    frame["partition"] = frame[PARTITION]
    frame["start_offset"] = frame[PARTITION].map(starts)
    keys = [stream.key, "window_start", "partition", "start_offset"]
    aggs = {"events": (PARTITION, "size")}
    for s in windows.signals:
        frame[f"{s}__sq"] = frame[s] ** 2
        aggs |= {f"{s}_n": (s, "count"), f"{s}_sum": (s, "sum"), f"{s}_sumsq": (f"{s}__sq", "sum"),
                 f"{s}_min": (s, "min"), f"{s}_max": (s, "max")}
    return frame.groupby(keys, as_index=False).agg(**aggs)


def alert_id(topic: str, partition: int, offset: int, signal: str) -> str:
    return hashlib.sha1(f"{topic}|{partition}|{offset}|{signal}".encode()).hexdigest()[:20]


def detect_anomalies(valid: pd.DataFrame, history: pd.DataFrame, stream: StreamConfig, topic: str) -> pd.DataFrame:
    """Readings whose signal is more than ``zscore`` standard deviations from the key's mean over the
    preceding ``history_minutes`` (the windows before the reading's own, from earlier batches and this
    one). ``history`` holds minute partials (any batches) for the keys in ``valid``."""
    cfg: Anomalies = stream.anomalies
    columns = ["alert_id", "key", "event_time", "signal", "value", "baseline_mean", "baseline_std", "zscore",
               "partition", "offset"]
    if valid.empty or history.empty:
        return pd.DataFrame(columns=columns)
    minutes = stream.windows.minutes
    rows = valid.assign(window_start=valid[stream.event_time].dt.floor(f"{minutes}min"), _row=np.arange(len(valid)))
    rows[stream.key] = rows[stream.key].astype(str)
    hist = history.assign(**{stream.key: history[stream.key].astype(str),
                             "window_start": pd.to_datetime(history["window_start"], utc=True)})
    out = []
    for signal in cfg.signals:
        cols = [f"{signal}_n", f"{signal}_sum", f"{signal}_sumsq"]
        per_window = hist.groupby([stream.key, "window_start"], as_index=False)[cols].sum().sort_values(
            [stream.key, "window_start"])
        # Totals over [t - history, t) per key: one grouped rolling sum, excluding the reading's own window.
        rolled = (per_window.set_index("window_start").groupby(stream.key)[cols]
                  .rolling(f"{cfg.history_minutes}min", closed="left").sum().reset_index())
        rolled["window_start"] = pd.to_datetime(rolled["window_start"], utc=True)
        base = rows[[stream.key, "window_start", "_row"]].merge(rolled, on=[stream.key, "window_start"], how="left") \
            .sort_values("_row")
        n = base[f"{signal}_n"].to_numpy(dtype="float64")
        mean = base[f"{signal}_sum"].to_numpy(dtype="float64") / np.where(n > 0, n, np.nan)
        var = base[f"{signal}_sumsq"].to_numpy(dtype="float64") / np.where(n > 1, n, np.nan) - mean ** 2
        std = np.sqrt(np.clip(var * n / np.where(n > 1, n - 1, np.nan), 0, None))
        values = rows[signal].to_numpy(dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (values - mean) / std
            hit = (n >= cfg.min_history) & np.isfinite(z) & (np.abs(z) > cfg.zscore) & (std > 0)
        for i in np.flatnonzero(hit):
            part, off = int(rows[PARTITION].iloc[i]), int(rows[OFFSET].iloc[i])
            out.append((alert_id(topic, part, off, signal), valid[stream.key].iloc[i], rows[stream.event_time].iloc[i],
                        signal, float(values[i]), float(mean[i]), float(std[i]), float(z[i]), part, off))
    return pd.DataFrame(out, columns=columns)
