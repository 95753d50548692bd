"""Every resource the platform uses, built in one place from the environment.

Each setting is a ``dg.EnvVar``: in LOCAL mode ``platform_assets.settings`` fills unset variables
from ``deploy/local/services.env``; in PROD the deployment sets them (see README, "Deploying").
"""

from __future__ import annotations

import os

import dagster as dg

from platform_assets import namespace
from platform_assets.settings import load_local_defaults, setting
from resources.documents import DocumentStoreResource
from resources.engine import ProcessingEngine
from resources.kafka import KafkaResource
from resources.lake import LakeResource
from resources.lake_io_manager import LakeParquetIOManager
from resources.mlflow_tracking import MlflowResource
from resources.online_store import OnlineStoreResource
from resources.sources import FileStoreResource, MySQLSourceResource, PostgresSourceResource, RestApiResource
from resources.spark import SparkResource
from resources.stream_store import StreamStore
from resources.warehouse import PostgresPandasIOManager, WarehouseResource


class _Settings:
    """``dg.EnvVar`` for Dagster (resolved when a run starts), or the value itself for use outside Dagster."""

    def __init__(self, resolved: bool):
        self.resolved = resolved

    def __call__(self, name: str):
        return os.environ[name] if self.resolved else dg.EnvVar(name)

    def int(self, name: str):
        return int(os.environ[name]) if self.resolved else dg.EnvVar.int(name)


def _db(prefix: str, cls, env: _Settings):
    return cls(host=env(f"{prefix}_HOST"), port=env.int(f"{prefix}_PORT"), user=env(f"{prefix}_USER"),
               password=env(f"{prefix}_PASSWORD"), database=env(f"{prefix}_DB"))


def build_resources(resolved: bool = False) -> dict:
    """The platform's resources. ``resolved=True`` fills in today's settings instead of ``dg.EnvVar``,
    for code outside Dagster (the demo runner, the service, the dashboard, the exporter, tests): the
    resources are then usable as they are, with no Dagster instance behind them."""
    load_local_defaults()
    env = _Settings(resolved)
    # PLATFORM_NAMESPACE (platform_assets/namespace.py): checked here, so a bad value fails the load
    # with its name; with one, the lake is <LAKE_ROOT>/namespaces/<ns> (a lake on a shared object store).
    ns = namespace.current()
    lake = LakeResource(root=namespace.lake_root(setting("LAKE_ROOT"), ns) if ns else env("LAKE_ROOT"))
    warehouse = _db("WAREHOUSE", WarehouseResource, env)
    spark = SparkResource(master=env("SPARK_MASTER"), lake_access=env("SPARK_LAKE_ACCESS"))
    return {
        "lake": lake,
        "warehouse": warehouse,
        "lake_io_manager": LakeParquetIOManager(lake=lake),
        "warehouse_io_manager": PostgresPandasIOManager(warehouse=warehouse),
        "spark": spark,
        # What runs the batch transformations: DuckDB (embedded) or the Spark session above.
        "engine": ProcessingEngine(kind=env("PROCESSING_ENGINE"), spark=spark),
        "kafka": KafkaResource(
            bootstrap_servers=env("KAFKA_BOOTSTRAP_SERVERS"),
            # Optional: passed to librdkafka only when set (PLAINTEXT otherwise); secrets as EnvVar.
            security_protocol=os.environ.get("KAFKA_SECURITY_PROTOCOL"),
            sasl_mechanism=os.environ.get("KAFKA_SASL_MECHANISM"),
            sasl_username=os.environ.get("KAFKA_SASL_USERNAME"),
            sasl_password=env("KAFKA_SASL_PASSWORD") if os.environ.get("KAFKA_SASL_PASSWORD") else None,
            ssl_ca_location=os.environ.get("KAFKA_SSL_CA_LOCATION"),
            ssl_certificate_location=os.environ.get("KAFKA_SSL_CERTIFICATE_LOCATION"),
            ssl_key_location=os.environ.get("KAFKA_SSL_KEY_LOCATION"),
            ssl_key_password=env("KAFKA_SSL_KEY_PASSWORD") if os.environ.get("KAFKA_SSL_KEY_PASSWORD") else None,
        ),
        "stream_store": StreamStore(warehouse=warehouse),
        "mlflow": MlflowResource(tracking_uri=env("MLFLOW_TRACKING_URI"),
                                 experiment_prefix=env("MLFLOW_EXPERIMENT_PREFIX"),
                                 registry_prefix=env("MLFLOW_REGISTRY_PREFIX")),
        "online_store": OnlineStoreResource(
            host=env("REDIS_HOST"), port=env.int("REDIS_PORT"), db=env.int("REDIS_DB"),
            password=env("REDIS_PASSWORD") if os.environ.get("REDIS_PASSWORD") else None,
            tls=os.environ.get("REDIS_TLS", "false").lower() in ("1", "true", "yes"),
            tls_ca_certs=os.environ.get("REDIS_TLS_CA_CERTS"),
        ),
        # The document store (FerretDB locally, MongoDB or Atlas in production): documents/<source>
        # assets, and the connection of `mongodb` sources (their default `connection`).
        "documents": DocumentStoreResource(uri=env("MONGODB_URI"), database=env("MONGODB_DATABASE")),
        # Source connections, named by the catalogue's `connection` fields.
        "source_files": FileStoreResource(root=env("SOURCE_FILES_ROOT")),
        "ops_postgres": _db("OPS_POSTGRES", PostgresSourceResource, env),
        "plant_mysql": _db("MYSQL", MySQLSourceResource, env),
        "facilities_api": RestApiResource(base_url=env("DEMO_API_URL")),
    }
