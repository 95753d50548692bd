"""``documents/<source>``: a JSON source's records kept whole, nested fields intact, in a collection.

The clean lake table flattens a record to the contract's columns; users of the documents (support,
incident review) want the record as it was, queryable by any nested field with MongoDB filters.
A load writes a new generation of each day (``_platform.load_id`` = the run; ``_id`` = raw file,
line and run, so a retry of the same run inserts nothing twice), then deletes the day's earlier
generations: the day is never missing, and afterwards holds each raw record exactly once. (Per
document upserts would keep one copy even during the load, but cost milliseconds each on FerretDB;
a bulk insert costs microseconds, and the document store has no transactions to do better.) Records
that are not JSON objects are counted, not stored: the clean step quarantines them with their reason.
"""

import datetime as dt
import json
import posixpath
from collections.abc import Iterator

import dagster as dg

from platform_assets import namespace
from platform_assets.policies import IO_RETRY, SINGLE_RUN_BACKFILL, retry_only_transient
from resources.lake_io_manager import days_in, partition_dir

META = "_platform"  # where the platform's own fields live in each document, apart from the record's


def document_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["documents", name])


def iter_records(text: str) -> Iterator[tuple[int, dict | None]]:
    """(line or item number, the record or None when it is not a JSON object), for JSON Lines or an array."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list):
            for i, item in enumerate(items, start=1):
                yield i, item if isinstance(item, dict) else None
            return
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        yield i, record if isinstance(record, dict) else None


def documents_of(rel: str, data: bytes, day: dt.date | None, load_id: str) -> tuple[list[dict], int]:
    """The documents of one raw object, and how many of its records were not JSON objects."""
    docs, bad = [], 0
    for row, record in iter_records(data.decode("utf-8-sig", errors="replace")):
        if record is None:
            bad += 1
            continue
        meta = {"source_file": rel, "source_row": row, "load_id": load_id,
                "partition": day.isoformat() if day else None}
        if "_id" in record:  # the record's own id, kept beside the platform's
            meta["record_id"] = record["_id"]
        docs.append({**record, "_id": f"{rel}#{row}#{load_id}", META: meta})
    return docs, bad


def insert_generation(coll, docs: list[dict], batch: int = 5000) -> None:
    """Bulk-insert a generation; documents a retry of the same run already stored are skipped."""
    from pymongo.errors import BulkWriteError

    for start in range(0, len(docs), batch):
        try:
            coll.insert_many(docs[start:start + batch], ordered=False)
        except BulkWriteError as exc:
            other = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]  # 11000: duplicate _id
            if other or exc.details.get("writeConcernErrors"):
                raise


def build_document_asset(name: str, collection: str, raw_key: dg.AssetKey,
                         partitions: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    key = document_key(name)

    @dg.asset(
        key=key,
        deps=[raw_key],
        description=f"{name}: every raw record kept whole as a document in the '{collection}' collection.",
        group_name="documents",
        kinds={"mongodb"},
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN_BACKFILL if partitions else None,
        retry_policy=IO_RETRY,
        required_resource_keys={"lake", "documents"},
        check_specs=[dg.AssetCheckSpec("records_stored", asset=key, blocking=True,
                                       description="Documents stored = JSON-object records in the raw zone.")],
        automation_condition=dg.AutomationCondition.eager(),
    )
    @retry_only_transient
    def _documents(context: dg.AssetExecutionContext):
        lake = context.resources.lake
        days = days_in(context.partition_time_window) if partitions else [None]
        base = posixpath.join("raw", name)
        stored, skipped = 0, 0
        with context.resources.documents.db() as db:
            coll = db[namespace.collection(collection)]
            coll.create_index(f"{META}.partition")
            for day in days:
                rel_dir = partition_dir(base, day) if day else posixpath.join(base, "snapshot")
                docs, bad = [], 0
                for rel in lake.list_files(rel_dir):
                    more, more_bad = documents_of(rel, lake.read_bytes(rel), day, context.run_id)
                    docs += more
                    bad += more_bad
                insert_generation(coll, docs)
                stored += len(docs)
                skipped += bad
            # Every day's earlier generations in one delete after all inserts: a filter on a nested field
            # is a scan of the whole collection on FerretDB (one scan per day cost 200 s at 10x volume).
            day_keys = [day.isoformat() if day else None for day in days]
            stale = {f"{META}.partition": {"$in": day_keys}, f"{META}.load_id": {"$ne": context.run_id}}
            removed = coll.delete_many(stale).deleted_count
            in_store = coll.count_documents({f"{META}.load_id": context.run_id})
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={"documents": dg.MetadataValue.int(stored), "not_objects": dg.MetadataValue.int(skipped),
                      "stale_removed": dg.MetadataValue.int(removed), "collection": namespace.collection(collection)},
            check_results=[dg.AssetCheckResult(
                check_name="records_stored", passed=in_store == stored,
                metadata={"stored": stored, "in_collection": in_store})],
        )

    return _documents


def build_document_assets(catalogue, partitions: dg.PartitionsDefinition | None) -> list[dg.AssetsDefinition]:
    """One ``documents/<source>`` asset per source whose catalogue entry names a ``documents`` collection."""
    from platform_assets.sources.factory import raw_key

    return [build_document_asset(name, cfg.documents, raw_key(name), partitions if cfg.partitioning else None)
            for name, cfg in catalogue.sources.items() if cfg.documents]
