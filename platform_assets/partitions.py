"""The platform's time partitioning: one daily calendar shared by every partitioned asset."""

from __future__ import annotations

import dagster as dg

from platform_assets.sources.config import Catalogue


def daily_partitions(catalogue: Catalogue) -> dg.DailyPartitionsDefinition:
    window = catalogue.partitions
    return dg.DailyPartitionsDefinition(
        start_date=window.start_date.isoformat(),
        end_date=window.end_date.isoformat() if window.end_date else None,
        timezone="UTC",
    )
