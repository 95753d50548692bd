"""The document store on the real server (FerretDB locally): JSON records kept whole, re-loads exact."""

from __future__ import annotations

import json
import os
import uuid

import dagster as dg
import pytest

from platform_assets.documents.assets import META, build_document_asset
from platform_assets.settings import load_local_defaults
from resources.documents import DocumentStoreResource
from resources.lake import LakeResource

pytestmark = pytest.mark.integration

DAY = "2026-11-03"
RECORDS = [
    {"ts": "2026-11-03T08:00:00Z", "service": "api", "level": "ERROR", "message": "timeout",
     "context": {"machine_id": "M-001", "attempts": [1, 2, 3], "upstream": {"host": "db", "ms": 5012.5}}},
    {"ts": "2026-11-03T08:00:01Z", "service": "api", "level": "INFO", "message": "ok",
     "context": {"machine_id": "M-002"}},
    {"ts": "2026-11-03T08:00:02Z", "service": "ingest", "level": "WARN", "message": "späte Daten ✓",
     "context": None},
]


@pytest.fixture()
def store():
    load_local_defaults()
    resource = DocumentStoreResource(uri=os.environ["MONGODB_URI"], database=f"t_docs_{uuid.uuid4().hex[:8]}")
    with resource.client() as client:
        try:
            client.admin.command("ping")
        except Exception as exc:  # noqa: BLE001 - any failure here means the server is not there
            pytest.fail(f"document store not reachable at {os.environ['MONGODB_URI']}: {exc}; "
                        f"start it with `make services-up`")
    yield resource
    with resource.client() as client:
        client.drop_database(resource.database)


def _write_raw(lake: LakeResource, lines: list[str]) -> None:
    lake.replace_dir(f"raw/app_logs/date={DAY}", [("part-0.jsonl", ("\n".join(lines) + "\n").encode())])


def _materialise(lake, store):
    partitions = dg.DailyPartitionsDefinition(start_date="2026-11-01", end_date="2026-11-08", timezone="UTC")
    asset = build_document_asset("app_logs", "app_logs", dg.AssetKey(["lake", "raw", "app_logs"]), partitions)
    result = dg.materialize([asset], resources={"lake": lake, "documents": store}, partition_key=DAY)
    assert result.success
    return result.asset_materializations_for_node(asset.node_def.name)[0].metadata


def test_records_kept_whole_and_queryable_with_mongodb_filters(tmp_path, store):
    lake = LakeResource(root=str(tmp_path / "lake"))
    _write_raw(lake, [json.dumps(r, ensure_ascii=False) for r in RECORDS] + ['{"truncated": ', '[1, 2]'])
    meta = _materialise(lake, store)
    assert meta["documents"].value == 3 and meta["not_objects"].value == 2

    with store.db() as db:
        coll = db["app_logs"]
        first = coll.find_one({"context.machine_id": "M-001"}, {"_id": 0, META: 0})
        assert first == RECORDS[0]  # nested document, array and float intact
        assert {d["level"] for d in coll.find({"level": {"$in": ["ERROR", "WARN"]}})} == {"ERROR", "WARN"}
        assert coll.count_documents({"context.upstream.ms": {"$gt": 5000}}) == 1
        assert coll.find_one({"service": "ingest"})["message"] == "späte Daten ✓"
        traced = coll.find_one({"level": "INFO"})[META]
        assert traced["source_file"].endswith("part-0.jsonl") and traced["source_row"] == 2
        assert traced["partition"] == DAY


def test_rematerialising_a_day_neither_duplicates_nor_keeps_removed_records(tmp_path, store):
    lake = LakeResource(root=str(tmp_path / "lake"))
    _write_raw(lake, [json.dumps(r) for r in RECORDS])
    _materialise(lake, store)
    _materialise(lake, store)
    with store.db() as db:
        assert db["app_logs"].count_documents({}) == 3

    _write_raw(lake, [json.dumps(r) for r in RECORDS[:2]])  # the day's export was corrected upstream
    meta = _materialise(lake, store)
    assert meta["stale_removed"].value == 3  # the previous generation of the day, replaced as a whole
    with store.db() as db:
        assert db["app_logs"].count_documents({}) == 2
        assert db["app_logs"].count_documents({"service": "ingest"}) == 0


def test_a_retried_load_inserts_nothing_twice(store):
    from platform_assets.documents.assets import documents_of, insert_generation

    docs, _ = documents_of("raw/app_logs/date=2026-11-03/part-0.jsonl",
                           "\n".join(json.dumps(r) for r in RECORDS).encode(), None, "run-1")
    with store.db() as db:
        insert_generation(db["app_logs"], docs[:2])  # the first attempt stopped half-way
        insert_generation(db["app_logs"], docs)  # the retry of the same run
        assert db["app_logs"].count_documents({}) == 3


def _tickets_source(**extra):
    from platform_assets.sources.config import MongoSource

    return MongoSource.model_validate({
        "kind": "mongodb", "collection": "tickets", "filter": {"site": {"$ne": "closed"}},
        "projection": {"internal": 0}, "partitioning": {"column": "opened"},
        "contract": {"primary_key": ["_id"], "columns": {
            "_id": {"type": "string", "required": True}, "opened": {"type": "timestamp", "required": True},
            "site": {"type": "string", "required": True, "allowed": ["S1", "S2"]},
            "detail": {"type": "json"}, "tags": {"type": "json"}}}, **extra})


def _insert_tickets(store):
    import datetime as dt

    from bson import ObjectId

    oid = ObjectId()
    with store.db() as db:
        db["tickets"].insert_many([
            {"_id": oid, "opened": dt.datetime(2026, 11, 3, 9, 30, tzinfo=dt.UTC), "site": "S1",
             "tags": ["pump", "leak"], "detail": {"severity": 2}, "internal": "x"},
            {"opened": "2026-11-03T23:59:59+00:00", "site": "S2", "internal": "y"},  # ISO string, same day
            {"opened": dt.datetime(2026, 11, 4, 0, 0, tzinfo=dt.UTC), "site": "S1", "internal": "z"},  # next day
            {"opened": dt.datetime(2026, 11, 3, 12, 0, tzinfo=dt.UTC), "site": "closed", "internal": "w"},
            {"opened": dt.datetime(2026, 11, 3, 13, 0, tzinfo=dt.UTC), "site": "S9", "internal": "v"},  # not allowed
        ])
    return oid


def test_a_collection_read_as_a_source_one_day_at_a_time(store):
    import datetime as dt

    oid = _insert_tickets(store)
    cfg = _tickets_source()
    batch = store.fetch("tickets", cfg, [dt.date(2026, 11, 3)])
    (obj,) = batch[dt.date(2026, 11, 3)]
    rows = [json.loads(line) for line in obj.data.decode().splitlines()]
    assert sorted(r["site"] for r in rows) == ["S1", "S2", "S9"]  # the next day and the filtered one left out
    first = next(r for r in rows if r["_id"] == str(oid))
    assert first["opened"] == "2026-11-03T09:30:00+00:00" and first["detail"] == {"severity": 2}
    assert first["tags"] == ["pump", "leak"] and all("internal" not in r for r in rows)
    assert store.fetch("tickets", cfg, [dt.date(2026, 11, 3)]) == batch  # the same bytes on a re-read


def test_mongodb_source_lands_raw_and_clean_with_the_same_contract_and_quarantine(tmp_path, store):
    from platform_assets.sources.factory import build_clean_assets, build_raw_asset
    from resources.lake_io_manager import LakeParquetIOManager

    oid = _insert_tickets(store)
    cfg = _tickets_source()
    partitions = dg.DailyPartitionsDefinition(start_date="2026-11-01", end_date="2026-11-08", timezone="UTC")
    lake = LakeResource(root=str(tmp_path / "lake"))
    assets = [build_raw_asset("tickets", cfg, partitions), build_clean_assets("tickets", cfg, partitions)]
    result = dg.materialize(assets, partition_key="2026-11-03", resources={
        "lake": lake, "documents": store, "lake_io_manager": LakeParquetIOManager(lake=lake),
        "warehouse_io_manager": dg.InMemoryIOManager()})
    assert result.success
    clean = result.output_for_node("clean_tickets", "clean")
    quarantine = result.output_for_node("clean_tickets", "quarantine")
    assert sorted(clean["site"]) == ["S1", "S2"]
    row = clean[clean["_id"] == str(oid)].iloc[0]
    assert json.loads(row["detail"]) == {"severity": 2} and json.loads(row["tags"]) == ["pump", "leak"]
    assert len(quarantine) == 1 and "S9" in quarantine.iloc[0]["record"] and "site" in quarantine.iloc[0]["reason"]
    assert lake.list_files("raw/tickets/date=2026-11-03")  # the documents as received, in the raw zone


def test_an_unreachable_server_is_a_clear_source_error():
    from resources.sources import SourceUnavailable

    dead = DocumentStoreResource(uri="mongodb://user:secret@127.0.0.1:1/", database="x",
                                 server_selection_timeout_ms=300)
    cfg = _tickets_source(partitioning=None)
    with pytest.raises(SourceUnavailable, match=r"source tickets: collection 'tickets' of x at 127.0.0.1:1/") as err:
        dead.fetch("tickets", cfg, None)
    assert "secret" not in str(err.value)
