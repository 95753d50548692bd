"""The document store: semi-structured records kept as documents, over the MongoDB wire protocol.

Locally the server is FerretDB (MongoDB's protocol on SQLite, started by deploy/local/services.sh);
in production the same ``MONGODB_URI`` points at MongoDB or Atlas. pymongo is the client either way,
so nothing here depends on which server answers.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field

RECORDS_FILE = "documents.jsonl"


def plain_json(value: Any) -> Any:
    """BSON values as plain JSON, the way a contract reads them: dates as ISO 8601 (UTC when naive),
    ObjectId, Decimal128, UUID and others as their string form. Nested documents and arrays stay."""
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def window_filter(field: str, day: dt.date) -> dict:
    """One day of a collection by ``field``, whether it holds BSON dates or ISO 8601 strings."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    return {"$or": [{field: {"$gte": start, "$lt": end}},
                    {field: {"$gte": day.isoformat(), "$lt": (day + dt.timedelta(days=1)).isoformat()}}]}


class DocumentStoreResource(dg.ConfigurableResource):
    """A MongoDB-compatible database: ``uri`` (credentials and TLS in the URI, as MongoDB users write
    them) and the ``database`` that holds the platform's collections."""

    uri: str
    database: str
    server_selection_timeout_ms: int = Field(default=5000, gt=0)

    @contextmanager
    def client(self) -> Iterator:
        import pymongo

        client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=self.server_selection_timeout_ms,
                                     uuidRepresentation="standard", tz_aware=True)
        try:
            yield client
        finally:
            client.close()

    @contextmanager
    def db(self) -> Iterator:
        with self.client() as client:
            yield client[self.database]

    def fetch(self, name: str, cfg, dates: Sequence[dt.date] | None) -> dict:
        """A ``mongodb`` source: the collection's documents (the catalogue's filter and projection; one
        day per partition by the partitioning field) as JSON Lines in ``plain_json`` form, in ``_id``
        order so a re-read lands identical bytes."""
        from pymongo.errors import PyMongoError

        from resources.sources import RawObject, SourceUnavailable

        batch: dict = {}
        try:
            with self.db() as db:
                coll = db[cfg.collection]
                for day in dates or [None]:
                    query = dict(cfg.filter)
                    if day is not None and cfg.partitioning is not None:
                        query = {"$and": [query, window_filter(cfg.partitioning.column, day)]}
                    cursor = coll.find(query, dict(cfg.projection) if cfg.projection else None).sort("_id", 1)
                    lines = [json.dumps(plain_json(doc), ensure_ascii=False, sort_keys=True) for doc in cursor]
                    batch[day] = [RawObject(RECORDS_FILE, "".join(line + "\n" for line in lines).encode())]
        except PyMongoError as exc:
            raise SourceUnavailable(f"source {name}: collection {cfg.collection!r} of {self.database} "
                                    f"at {self._where()} cannot be read: {exc}") from exc
        return batch

    def _where(self) -> str:
        """The server, without credentials, for error messages."""
        return self.uri.split("@")[-1]
