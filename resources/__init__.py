"""Every resource the platform uses, built in one place from the environment.

Each setting is a ``dg.EnvVar``: in LOCAL mode ``platform_assets.settings`` fills unset variables
from ``deploy/local/services.env``; in PROD the deployment sets them (see README, "Deploying").
"""

from __future__ import annotations

import os

import dagster as dg

from platform_assets.settings import load_local_defaults
from resources.kafka import KafkaResource
from resources.lake import LakeResource
from resources.lake_io_manager import LakeParquetIOManager
from resources.mlflow_tracking import MlflowResource
from resources.online_store import OnlineStoreResource
from resources.sources import FileStoreResource, MySQLSourceResource, PostgresSourceResource, RestApiResource
from resources.spark import SparkResource
from resources.stream_store import StreamStore
from resources.warehouse import PostgresPandasIOManager, WarehouseResource


def _db(prefix: str, cls):
    return cls(
        host=dg.EnvVar(f"{prefix}_HOST"),
        port=dg.EnvVar.int(f"{prefix}_PORT"),
        user=dg.EnvVar(f"{prefix}_USER"),
        password=dg.EnvVar(f"{prefix}_PASSWORD"),
        database=dg.EnvVar(f"{prefix}_DB"),
    )


def build_resources() -> dict:
    load_local_defaults()
    lake = LakeResource(root=dg.EnvVar("LAKE_ROOT"))
    warehouse = _db("WAREHOUSE", WarehouseResource)
    return {
        "lake": lake,
        "warehouse": warehouse,
        "lake_io_manager": LakeParquetIOManager(lake=lake),
        "warehouse_io_manager": PostgresPandasIOManager(warehouse=warehouse),
        "spark": SparkResource(master=dg.EnvVar("SPARK_MASTER")),
        "kafka": KafkaResource(
            bootstrap_servers=dg.EnvVar("KAFKA_BOOTSTRAP_SERVERS"),
            security_protocol=os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            sasl_mechanism=os.environ.get("KAFKA_SASL_MECHANISM"),
            sasl_username=os.environ.get("KAFKA_SASL_USERNAME"),
            sasl_password=dg.EnvVar("KAFKA_SASL_PASSWORD") if os.environ.get("KAFKA_SASL_PASSWORD") else None,
            ssl_ca_location=os.environ.get("KAFKA_SSL_CA_LOCATION"),
        ),
        "stream_store": StreamStore(warehouse=warehouse),
        "mlflow": MlflowResource(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"),
                                 experiment_prefix=dg.EnvVar("MLFLOW_EXPERIMENT_PREFIX"),
                                 registry_prefix=dg.EnvVar("MLFLOW_REGISTRY_PREFIX")),
        "online_store": OnlineStoreResource(host=dg.EnvVar("REDIS_HOST"), port=dg.EnvVar.int("REDIS_PORT"),
                                            db=dg.EnvVar.int("REDIS_DB")),
        # Source connections, named by the catalogue's `connection` fields.
        "source_files": FileStoreResource(root=dg.EnvVar("SOURCE_FILES_ROOT")),
        "ops_postgres": _db("OPS_POSTGRES", PostgresSourceResource),
        "plant_mysql": _db("MYSQL", MySQLSourceResource),
        "facilities_api": RestApiResource(base_url=dg.EnvVar("DEMO_API_URL")),
    }
