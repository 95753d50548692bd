"""The online feature store: the latest feature row per entity, in Redis, for serving to read.

One hash per entity (``features:<feature set>:<entity>``) holding the row as JSON and its
``as_of``; a set of known entities per feature set. Writes go through one pipeline (MULTI/EXEC),
so readers see the old or the new rows, never half of them.
"""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd


class OnlineStoreResource(dg.ConfigurableResource):
    host: str
    port: int
    db: int = 0
    password: str | None = None
    # Encryption in transit (a managed Redis, or redis-server with --tls-port): the server's
    # certificate is always verified, against tls_ca_certs or the system's CAs.
    tls: bool = False
    tls_ca_certs: str | None = None

    def client(self):
        import redis

        tls = {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": self.tls_ca_certs} if self.tls else {}
        return redis.Redis(host=self.host, port=self.port, db=self.db, password=self.password,
                           socket_connect_timeout=5, decode_responses=True, **tls)

    def write_latest(self, feature_set: str, entity: str, rows: pd.DataFrame, as_of: str) -> int:
        client = self.client()
        pipe = client.pipeline(transaction=True)
        keys_set = f"features:{feature_set}:entities"
        pipe.delete(keys_set)
        for record in rows.to_dict("records"):
            key = str(record[entity])
            payload = json.dumps(record, default=str)
            pipe.hset(f"features:{feature_set}:{key}", mapping={"row": payload, "as_of": str(record[as_of])})
            pipe.sadd(keys_set, key)
        pipe.execute()
        return len(rows)

    def read(self, feature_set: str, entities: list[str]) -> dict[str, dict | None]:
        client = self.client()
        pipe = client.pipeline(transaction=False)
        for e in entities:
            pipe.hget(f"features:{feature_set}:{e}", "row")
        return {e: (json.loads(v) if v else None) for e, v in zip(entities, pipe.execute())}

    def entities(self, feature_set: str) -> set[str]:
        return set(self.client().smembers(f"features:{feature_set}:entities"))
