"""The asset factory: each catalogue entry becomes raw, clean and quarantine assets.

- ``lake/raw/<source>``: fetches the source through its connection resource and lands the bytes in
  the raw zone unchanged (retried on I/O errors).
- ``lake/clean/<source>`` and ``warehouse/quarantine/<source>``: one step that parses the raw zone,
  applies the contract and writes typed Parquet and the quarantine table, with blocking checks that
  required values are present and that every raw record is accounted for.
"""


import contextlib
import datetime as dt
import gc
import posixpath

import dagster as dg

from platform_assets.partitions import daily_partitions
from platform_assets.policies import IO_RETRY, SINGLE_RUN_BACKFILL, retry_only_transient
from platform_assets.sources.config import Catalogue, FileSource, RestSource, SourceConfig
from platform_assets.sources.contract import ContractError, apply_contract
from platform_assets.sources.parse import RawFormatError, ReadOptions, count_records, parse_objects
from resources.lake_io_manager import days_in, partition_dir
from resources.sources import RawObject

QUARANTINE_WARN_FRACTION = 0.05


def raw_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["lake", "raw", name])


def clean_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["lake", "clean", name])


def quarantine_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["warehouse", "quarantine", name])


def _run_dates(context, cfg: SourceConfig) -> list[dt.date] | None:
    return days_in(context.partition_time_window) if cfg.partitioning else None


def _raw_dir(name: str, day: dt.date | None) -> str:
    base = posixpath.join("raw", name)
    return partition_dir(base, day) if day else posixpath.join(base, "snapshot")


def _items_field(cfg: SourceConfig) -> str:
    return cfg.pagination.items_field if isinstance(cfg, RestSource) else "items"


def read_options(cfg: SourceConfig) -> ReadOptions:
    """The catalogue's reading options of a file source, as the parser's plain values."""
    if not isinstance(cfg, FileSource):
        return ReadOptions()
    # Without a header, a CSV file's columns are the contract's in declared order, named as in the file.
    raw_names = {v: k for k, v in cfg.rename.items()}
    return ReadOptions(json_format=cfg.format, records=cfg.records, delimiter=cfg.delimiter, quote=cfg.quote,
                       encoding=cfg.encoding, header=cfg.header,
                       column_names=tuple(raw_names.get(c, c) for c in cfg.contract.columns))


def build_raw_asset(name: str, cfg: SourceConfig, partitions: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_key(name),
        description=f"{cfg.description} Landed as received ({cfg.kind}).".strip(),
        group_name="raw",
        kinds={cfg.kind},
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN_BACKFILL if partitions else None,
        retry_policy=IO_RETRY,
        required_resource_keys={"lake", cfg.connection},
        metadata={"source_kind": cfg.kind, "connection": cfg.connection},
        automation_condition=None if partitions else dg.AutomationCondition.on_cron("0 1 * * *"),
    )
    @retry_only_transient
    def _raw(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = context.resources.lake
        connection = getattr(context.resources, cfg.connection)
        batch = connection.fetch(name, cfg, _run_dates(context, cfg))
        written = []
        for day, objects in batch.items():
            written += lake.replace_dir(_raw_dir(name, day), [(o.name, o.data) for o in objects])
        n_bytes = sum(len(o.data) for objects in batch.values() for o in objects)
        return dg.MaterializeResult(
            metadata={
                "files": dg.MetadataValue.int(len(written)),
                "bytes": dg.MetadataValue.int(n_bytes),
                "records": dg.MetadataValue.int(_count_or_zero(cfg, [o for objs in batch.values() for o in objs])),
                "path": dg.MetadataValue.path(lake.uri("raw", name)),
            }
        )

    return _raw


def _count_or_zero(cfg: SourceConfig, objects: list[RawObject]) -> int:
    """Records landed, for the raw metadata; a file in the wrong format counts 0 (the clean step says why)."""
    try:
        return count_records(cfg.kind, objects, _items_field(cfg), read_options(cfg))
    except (ValueError, KeyError, TypeError, IndexError):
        return 0


def _read_raw(lake, name: str, dates: list[dt.date] | None) -> tuple[list[RawObject], dict[str, dt.date]]:
    """Raw objects named by their lake path (unique across days), and the day of each."""
    objects, file_dates = [], {}
    for day in dates or [None]:
        for rel in lake.list_files(_raw_dir(name, day)):
            objects.append(RawObject(rel, lake.read_bytes(rel)))
            if day:
                file_dates[rel] = day
    return objects, file_dates


@contextlib.contextmanager
def collector_paused():
    """Python's cycle collector off while a step builds millions of short-lived objects.

    Parsed records (dicts, lists, strings) hold no reference cycles, yet every few thousand of them
    trigger a collection that walks the whole heap (Dagster's included): about 40% of a JSON
    parse at 10x the demo volume. Reference counting still frees them; the collector is back on,
    as it was, when the step ends or fails."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_clean_assets(name: str, cfg: SourceConfig, partitions: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    ckey, qkey = clean_key(name), quarantine_key(name)
    part_meta = {"partition_column": "date"} if partitions else {}
    eager = dg.AutomationCondition.eager()
    checks = [
        dg.AssetCheckSpec("required_values_present", asset=ckey, blocking=True,
                          description="Required contract columns hold no nulls."),
        dg.AssetCheckSpec("raw_records_reconciled", asset=ckey, blocking=True,
                          description="Raw records = clean rows + quarantined rows: nothing dropped, nothing invented."),
        dg.AssetCheckSpec("quarantine_rate", asset=ckey,
                          description=f"At most {QUARANTINE_WARN_FRACTION:.0%} of records quarantined."),
        dg.AssetCheckSpec("declared_columns_present", asset=ckey,
                          description="Every column the contract declares is in the data (a missing one loads as nulls)."),
    ]

    @dg.multi_asset(
        name=f"clean_{name}",
        outs={
            "clean": dg.AssetOut(key=ckey, io_manager_key="lake_io_manager", group_name="clean",
                                 kinds={"pandas", "parquet"}, metadata=part_meta, automation_condition=eager,
                                 description=f"{name}: typed rows that meet the contract."),
            "quarantine": dg.AssetOut(key=qkey, io_manager_key="warehouse_io_manager", group_name="quarantine",
                                      kinds={"postgres"}, metadata=part_meta, automation_condition=eager,
                                      description=f"{name}: records that broke the contract, with the reason."),
        },
        deps=[raw_key(name)],
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN_BACKFILL if partitions else None,
        check_specs=checks,
        required_resource_keys={"lake"},
    )
    def _clean(context: dg.AssetExecutionContext):
        with collector_paused():  # the step builds ~10 objects per record, none in a cycle
            dates = _run_dates(context, cfg)
            objects, file_dates = _read_raw(context.resources.lake, name, dates)
            if not objects:
                raise dg.Failure(f"source {name}: nothing in the raw zone for {dates or 'the snapshot'}; "
                                 f"materialise {raw_key(name).to_user_string()} first", allow_retries=False)
            try:
                options = read_options(cfg)
                parsed = parse_objects(cfg.kind, objects, _items_field(cfg), options)
                frame, text = parsed.frame, parsed.text or {}
                if cfg.rename:  # relabel in place: DataFrame.rename copies every column
                    frame.columns = [cfg.rename.get(c, c) for c in frame.columns]
                    text = {cfg.rename.get(c, c): values for c, values in text.items()}
                result = apply_contract(
                    name, frame, cfg.contract, unparseable=parsed.unparseable,
                    partition_column=cfg.partitioning.column if cfg.partitioning else None,
                    dates=dates, file_dates=file_dates, text_columns=text,
                )
            except (ContractError, RawFormatError) as exc:
                raise dg.Failure(str(exc), allow_retries=False) from exc
            clean, quarantine = result.clean, result.quarantine
            if not partitions:
                quarantine = quarantine.drop(columns=["date"])
            raw_records = count_records(cfg.kind, objects, _items_field(cfg), options)
            if result.missing_columns:
                context.log.warning(f"source {name}: declared column(s) {', '.join(result.missing_columns)} not in the "
                                    f"data; loaded as nulls (mark them required to fail instead)")
            accounted = len(clean) + len(quarantine)
            reasons = quarantine["reason"].str.split(": ", n=1).str[0].value_counts().to_dict() if len(quarantine) else {}
            context.add_output_metadata(
                {"quarantined": len(quarantine), "extra_columns_ignored": ", ".join(result.extra_columns) or "none",
                 "missing_columns": ", ".join(result.missing_columns) or "none"},
                output_name="clean",
            )
            context.add_output_metadata({"quarantined_by_column": dg.MetadataValue.json(reasons)}, output_name="quarantine")
            yield dg.Output(clean, output_name="clean")
            yield dg.Output(quarantine, output_name="quarantine")

            required = [c for c, spec in cfg.contract.columns.items() if spec.required]
            nulls = {c: int(clean[c].isna().sum()) for c in required if c in clean.columns}
            yield dg.AssetCheckResult(check_name="required_values_present", asset_key=ckey,
                                      passed=not any(nulls.values()), metadata={"nulls": dg.MetadataValue.json(nulls)})
            yield dg.AssetCheckResult(check_name="raw_records_reconciled", asset_key=ckey, passed=raw_records == accounted,
                                      metadata={"raw_records": raw_records, "clean_rows": len(clean),
                                                "quarantined_rows": len(quarantine)})
            rate = len(quarantine) / raw_records if raw_records else 0.0
            yield dg.AssetCheckResult(check_name="quarantine_rate", asset_key=ckey,
                                      passed=rate <= QUARANTINE_WARN_FRACTION, severity=dg.AssetCheckSeverity.WARN,
                                      metadata={"rate": dg.MetadataValue.float(round(rate, 5))})
            yield dg.AssetCheckResult(check_name="declared_columns_present", asset_key=ckey,
                                      passed=not result.missing_columns, severity=dg.AssetCheckSeverity.WARN,
                                      metadata={"missing": ", ".join(result.missing_columns) or "none"})

    return _clean


def build_source_assets(catalogue: Catalogue) -> list[dg.AssetsDefinition]:
    daily = daily_partitions(catalogue) if catalogue.partitions else None
    assets = []
    for name, cfg in catalogue.sources.items():
        partitions = daily if cfg.partitioning else None
        assets += [build_raw_asset(name, cfg, partitions), build_clean_assets(name, cfg, partitions)]
    return assets

