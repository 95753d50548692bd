"""Materialisation metadata shared by every table-shaped asset: row count, schema, a preview."""

from __future__ import annotations

import dagster as dg
import pandas as pd

PREVIEW_ROWS = 5


def column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()])


def preview_markdown(frame: pd.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    head = frame.head(rows).copy()
    for col in head.columns:
        if head[col].dtype == object:
            head[col] = head[col].map(lambda v: v if not isinstance(v, str) or len(v) <= 60 else v[:57] + "...")
    return head.to_markdown(index=False) if len(head) else "_empty_"


def frame_metadata(frame: pd.DataFrame) -> dict:
    return {
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/column_schema": column_schema(frame),
        "preview": dg.MetadataValue.md(preview_markdown(frame)),
    }
