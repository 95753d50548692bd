"""Stores pandas frames as Parquet in the lake, one folder per daily partition.

``lake/<zone>/<name>`` asset keys map to ``<root>/<zone>/<name>/``. A partitioned asset's frame
carries a ``date`` column; each day in the run's partition window is written to
``date=YYYY-MM-DD/part-0.parquet`` (an empty file for a day without rows), replacing what was there,
so reruns and backfills are idempotent. The ``date`` column lives in the folder name, the Hive
convention that Spark and pyarrow datasets read back.
"""

from __future__ import annotations

import datetime as dt
import posixpath

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from platform_assets.metadata import frame_metadata
from resources.lake import LakeResource

PARTITION_COLUMN = "date"
PART_FILE = "part-0.parquet"


def lake_dir(key: dg.AssetKey) -> str:
    if len(key.path) < 2 or key.path[0] != "lake":
        raise ValueError(f"asset {key.to_user_string()} is not a lake asset (lake/<zone>/<name>)")
    return posixpath.join(*key.path[1:])


def partition_dir(base: str, day: dt.date) -> str:
    return posixpath.join(base, f"{PARTITION_COLUMN}={day.isoformat()}")


def days_in(window: dg.TimeWindow) -> list[dt.date]:
    days, day = [], window.start.date()
    while day < window.end.date():
        days.append(day)
        day += dt.timedelta(days=1)
    return days


def _day_index(dates: pd.Series, days: list[dt.date]) -> tuple[np.ndarray, set]:
    """Each row's position in ``days`` (-1: missing or another value), and the other values found.

    One hash lookup per row (the ``==`` and hash of the values, as a set of days would use), not one
    Python comparison per row and day."""
    index = pd.Index(days, dtype=object).get_indexer(dates.to_numpy(dtype=object))
    other = (index < 0) & dates.notna().to_numpy()
    return index, set(dates[other])


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)


class LakeParquetIOManager(dg.ConfigurableIOManager):
    lake: LakeResource

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if obj is None:
            return
        base = lake_dir(context.asset_key)
        if context.has_asset_partitions:
            if PARTITION_COLUMN not in obj.columns:
                raise ValueError(f"{context.asset_key.to_user_string()}: a partitioned lake frame needs a "
                                 f"{PARTITION_COLUMN!r} column")
            days = days_in(context.asset_partitions_time_window)
            day_of, unexpected = _day_index(obj[PARTITION_COLUMN], days)
            if unexpected or (day_of < 0).any():
                raise ValueError(f"{context.asset_key.to_user_string()}: rows dated outside the run's partitions: "
                                 f"{sorted(map(str, unexpected))[:5]}")
            columns = [c for c in obj.columns if c != PARTITION_COLUMN]
            paths = []
            for i, day in enumerate(days):
                part = obj.loc[day_of == i, columns]  # one take per day, no copy of the whole frame first
                paths.append(self.lake.write_parquet(posixpath.join(partition_dir(base, day), PART_FILE), _to_arrow(part)))
        else:
            paths = [self.lake.write_parquet(posixpath.join(base, "data.parquet"), _to_arrow(obj))]
        context.add_output_metadata(
            {**frame_metadata(obj), "path": dg.MetadataValue.path(self.lake.uri(base)),
             "files_written": len(paths)}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        base = lake_dir(context.asset_key)
        if not context.has_asset_partitions:
            return self.lake.read_parquet(posixpath.join(base, "data.parquet")).to_pandas()
        frames = []
        for day in days_in(context.asset_partitions_time_window):
            rel = posixpath.join(partition_dir(base, day), PART_FILE)
            frame = self.lake.read_parquet(rel).to_pandas()
            frame[PARTITION_COLUMN] = day
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
