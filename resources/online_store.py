"""The online feature store: the latest feature row per entity, in Redis, for serving to read.

One hash per entity (``features:<feature set>:<entity>``) holding the row as JSON and its
``as_of``; a set of known entities per feature set. Writes go through one pipeline (MULTI/EXEC),
so readers see the old or the new rows, never half of them.

Two writers: the batch pipeline (``write_latest``, hours old) and the stream (``write_stream_rows``,
seconds old), which also stamps ``updated_at`` (when the row was computed), ``source`` (the topic,
partition and offset of the last reading in it) and a ``version`` counter. A batch write never
replaces a stream row of the same or a later hour: the fresher row stays (a check in Redis itself,
inside the transaction).
"""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd

from platform_assets import namespace


class OnlineStoreResource(dg.ConfigurableResource):
    host: str
    port: int
    db: int = 0
    password: str | None = None
    # Encryption in transit (a managed Redis, or redis-server with --tls-port): the server's
    # certificate is always verified, against tls_ca_certs or the system's CAs.
    tls: bool = False
    tls_ca_certs: str | None = None

    def key(self, feature_set: str, part: str) -> str:
        """``features:<feature set>:<part>``, under this process's namespace (``acme:features:...``,
        platform_assets/namespace.py), so namespaces share one Redis."""
        return namespace.redis_key("features", feature_set, str(part))

    def client(self):
        import redis

        tls = {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": self.tls_ca_certs} if self.tls else {}
        return redis.Redis(host=self.host, port=self.port, db=self.db, password=self.password,
                           socket_connect_timeout=5, decode_responses=True, **tls)

    def write_latest(self, feature_set: str, entity: str, rows: pd.DataFrame, as_of: str) -> int:
        client = self.client()
        pipe = client.pipeline(transaction=True)
        keys_set = self.key(feature_set, "entities")
        pipe.delete(keys_set)
        for record in rows.to_dict("records"):
            key = str(record[entity])
            payload = json.dumps(record, default=str)
            pipe.eval(_BATCH_WRITE, 1, self.key(feature_set, key), payload, _as_of_text(record[as_of]))
            pipe.sadd(keys_set, key)
        pipe.execute()
        return len(rows)

    def write_stream_rows(self, feature_set: str, entity: str, rows: pd.DataFrame, *, as_of: str,
                          updated_at: pd.Timestamp, sources: dict[str, str]) -> int:
        """The stream's rows, all in one MULTI/EXEC: each hash is replaced whole (row, as_of, updated_at,
        source) and its ``version`` incremented, so a reader sees the old row or the new one."""
        pipe = self.client().pipeline(transaction=True)
        stamp = updated_at.isoformat()
        for record in rows.to_dict("records"):
            key = str(record[entity])
            pipe.hset(self.key(feature_set, key), mapping={
                "row": json.dumps(record, default=str), "as_of": _as_of_text(record[as_of]), "updated_at": stamp,
                "source": sources.get(key, ""), "writer": "stream"})
            pipe.hincrby(self.key(feature_set, key), "version", 1)
            pipe.sadd(self.key(feature_set, "entities"), key)
        pipe.execute()
        return len(rows)

    def read_with_meta(self, feature_set: str, entities: list[str]) -> dict[str, dict | None]:
        """Per entity: ``row`` (the features), ``as_of``, ``updated_at`` (None for batch rows), ``source``,
        ``writer`` (stream or batch) and ``version``; None when unknown. One atomic read per hash."""
        pipe = self.client().pipeline(transaction=False)
        fields = ("row", "as_of", "updated_at", "source", "writer", "version")
        for e in entities:
            pipe.hmget(self.key(feature_set, e), *fields)
        out = {}
        for e, values in zip(entities, pipe.execute()):
            meta = dict(zip(fields, values))
            out[e] = None if not meta["row"] else {**meta, "row": json.loads(meta["row"]),
                                                   "writer": meta["writer"] or "batch"}
        return out

    def read(self, feature_set: str, entities: list[str]) -> dict[str, dict | None]:
        client = self.client()
        pipe = client.pipeline(transaction=False)
        for e in entities:
            pipe.hget(self.key(feature_set, e), "row")
        return {e: (json.loads(v) if v else None) for e, v in zip(entities, pipe.execute())}

    def entities(self, feature_set: str) -> set[str]:
        return set(self.client().smembers(self.key(feature_set, "entities")))


def _as_of_text(value) -> str:
    """One text form for every writer (ISO 8601 in UTC), so Redis can compare two rows' hours as strings."""
    try:
        return pd.Timestamp(value).tz_convert("UTC").isoformat() if pd.Timestamp(value).tzinfo else \
            pd.Timestamp(value).tz_localize("UTC").isoformat()
    except (TypeError, ValueError):
        return str(value)


# A batch row replaces a hash unless the stream wrote one of the same or a later hour there.
_BATCH_WRITE = """
local writer = redis.call('HGET', KEYS[1], 'writer')
local as_of = redis.call('HGET', KEYS[1], 'as_of')
if writer == 'stream' and as_of and as_of >= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'row', ARGV[1], 'as_of', ARGV[2], 'writer', 'batch')
return 1
"""
