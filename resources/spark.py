"""Spark for batch processing, through dagster-pyspark's lazy session.

The batch transformations run on it when ``PROCESSING_ENGINE=spark`` (``resources/engine.py``;
the embedded DuckDB engine is the default on one machine). ``SPARK_MASTER`` picks the cluster:
``local[N]`` on a laptop or in CI, ``spark://host:7077`` for a standalone cluster,
``sc://host:15002`` for Spark Connect. The session starts only when an asset
first asks for it, so runs that do not touch Spark never pay its start-up.

``SPARK_LAKE_ACCESS`` (or ``lake_access``) says how Spark reaches the lake: ``direct`` (Spark reads
and writes ``LakeResource.uri()`` itself: local paths, or ``s3a://`` on a cluster with hadoop-aws),
``arrow`` (the driver moves Parquet through pyarrow's filesystems and hands Arrow tables to Spark:
any lake pyarrow reaches, no Hadoop connector, but every byte passes through the driver), or
``auto`` (direct for a local lake, arrow for an object store). See ``resources/spark_lake.py``.

Connector jars pyspark lacks (hadoop-aws and the AWS SDK bundle for ``s3a://``, spark-sql-kafka-0-10
for Structured Streaming) are installed by ``deploy/local/spark/install.sh`` into
``.local/spark-jars`` (or ``$SPARK_JARS_DIR``) and loaded when that folder is there (``spark.jars``
locally, the class path on a cluster, whose nodes or image hold the same folder). With those jars, ``s3a://`` reaches the same store as pyarrow: its
endpoint, region and keys come from the standard AWS environment (``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), so one set of settings serves both.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

LAKE_ACCESS_MODES = ("auto", "direct", "arrow")
LAKE_ACCESS_ENV = "SPARK_LAKE_ACCESS"
JARS_DIR_ENV = "SPARK_JARS_DIR"
DEFAULT_JARS_DIR = Path(__file__).resolve().parent.parent / ".local" / "spark-jars"


def s3a_conf(environ=os.environ) -> dict[str, str]:
    """Hadoop's S3A settings from the standard AWS environment (what pyarrow and boto3 read).

    S3A would find the keys in its JVM's environment itself, but that is the environment the JVM
    started with: a session started before the keys were set (another asset's, in the same process)
    would never see them, so static keys are passed as settings (Spark redacts them in its UI). S3A
    finds no endpoint or region on its own; an S3-compatible store (moto, MinIO) also wants path-style
    addressing, since its host names no buckets."""
    conf = {}
    keys = {"AWS_ACCESS_KEY_ID": "access.key", "AWS_SECRET_ACCESS_KEY": "secret.key", "AWS_SESSION_TOKEN": "session.token"}
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        conf |= {f"spark.hadoop.fs.s3a.{name}": environ[var] for var, name in keys.items() if environ.get(var)}
        if environ.get("AWS_SESSION_TOKEN"):
            conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = \
                "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        conf |= {"spark.hadoop.fs.s3a.endpoint": endpoint, "spark.hadoop.fs.s3a.path.style.access": "true",
                 "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https")).lower()}
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    return conf


class SparkResource(dg.ConfigurableResource):
    master: str = "local[2]"
    app_name: str = "dagster-ml-platform"
    shuffle_partitions: int = 4
    driver_memory: str = "2g"
    # Extra Spark properties (e.g. spark.hadoop.fs.s3a.* for an object-store lake).
    extra_conf: dict[str, str] = Field(default_factory=dict)
    # How Spark reaches the lake (see the module docstring); unset: $SPARK_LAKE_ACCESS, else "auto".
    lake_access: str | None = None
    # Folder of extra jars for spark.jars; unset: $SPARK_JARS_DIR, else .local/spark-jars (when present).
    jars_dir: str | None = None

    # dagster_pyspark's LazyPySparkResource, made (and pyspark imported, ~0.4 s) on first use only.
    _lazy: Any = PrivateAttr(default=None)

    def jars(self) -> list[str]:
        """The connector jars to load, sorted; none when the folder is absent (a cluster's own image)."""
        folder = self.jars_dir or os.environ.get(JARS_DIR_ENV) or str(DEFAULT_JARS_DIR)
        return sorted(glob.glob(os.path.join(folder, "*.jar")))

    def _jars_conf(self, jars: list[str]) -> dict[str, str]:
        """Local Spark loads the jars in place (``spark.jars``). A cluster's executors would each fetch
        the 690 MB SDK bundle from the driver that way, so there they are put on the class path
        instead, read where they lie (the same folder on each node: this machine's standalone
        cluster, or an image that brings them)."""
        if not jars:
            return {}
        if self.master.startswith("local"):
            return {"spark.jars": ",".join(jars)}
        path = os.pathsep.join(jars)
        return {"spark.driver.extraClassPath": path, "spark.executor.extraClassPath": path}

    def spark_config(self) -> dict[str, str]:
        jars = self.jars()
        return {
            "spark.app.name": self.app_name,
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
            "spark.driver.memory": self.driver_memory,
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.sources.partitionOverwriteMode": "dynamic",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.bindAddress": "127.0.0.1" if self.master.startswith("local") else "0.0.0.0",
            **self._jars_conf(jars),
            **s3a_conf(),
            **self.extra_conf,
        }

    def lake_access_mode(self, lake_is_local: bool) -> str:
        """``direct`` or ``arrow`` for a lake, resolving ``auto``: one place decides, at run time."""
        mode = (self.lake_access or os.environ.get(LAKE_ACCESS_ENV) or "auto").strip().lower()
        if mode not in LAKE_ACCESS_MODES:
            raise ValueError(f"{LAKE_ACCESS_ENV} (lake_access) must be one of {', '.join(LAKE_ACCESS_MODES)}, "
                             f"got {mode!r}")
        if mode == "auto":
            return "direct" if lake_is_local else "arrow"
        return mode

    @property
    def session(self):
        if self._lazy is None:
            if self.master.startswith("sc://"):
                from pyspark.sql import SparkSession

                return SparkSession.builder.remote(self.master).getOrCreate()
            from dagster_pyspark import LazyPySparkResource

            conf = {**self.spark_config(), "spark.master": self.master}
            self._lazy = LazyPySparkResource(spark_config=conf)
            session = self._lazy.spark_session
            # A session is process-wide: one started earlier (another resource, other settings) keeps
            # its Hadoop settings, so this resource's S3A settings are applied to it as well.
            hadoop = session.sparkContext._jsc.hadoopConfiguration()
            for key, value in conf.items():
                if key.startswith("spark.hadoop.fs.s3a."):
                    hadoop.set(key.removeprefix("spark.hadoop."), value)
        return self._lazy.spark_session


_LOGIN_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                  "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                  "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}


def kafka_options(kafka) -> dict[str, str]:
    """``kafka.*`` options of Spark's Kafka source from the KafkaResource's settings (one place).

    librdkafka's settings become the Java client's: the SASL login as a JAAS line, the CA's PEM
    file as a PEM trust store (Java clients read PEM since Kafka 2.7), a client certificate and key
    (PKCS#8 PEM) as an inline PEM key store."""
    conf = kafka.client_config()
    out = {"kafka.bootstrap.servers": conf["bootstrap.servers"], "kafka.client.id": conf["client.id"]}
    if "security.protocol" in conf:
        out["kafka.security.protocol"] = conf["security.protocol"]
    mechanism = conf.get("sasl.mechanism")
    if mechanism:
        module = _LOGIN_MODULES.get(mechanism.upper())
        if module is None:
            raise ValueError(f"Kafka sasl_mechanism {mechanism!r}: Spark's engine knows {sorted(_LOGIN_MODULES)}")
        quote = lambda v: '"' + str(v or "").replace("\\", "\\\\").replace('"', '\\"') + '"'
        out |= {"kafka.sasl.mechanism": mechanism.upper(),
                "kafka.sasl.jaas.config": f"{module} required username={quote(conf.get('sasl.username'))} "
                                          f"password={quote(conf.get('sasl.password'))};"}
    if conf.get("ssl.ca.location"):
        out |= {"kafka.ssl.truststore.type": "PEM",
                "kafka.ssl.truststore.location": os.path.abspath(conf["ssl.ca.location"])}
    if conf.get("ssl.certificate.location"):
        if not conf.get("ssl.key.location"):
            raise ValueError("Kafka ssl_certificate_location is set without ssl_key_location")
        out |= {"kafka.ssl.keystore.type": "PEM",
                "kafka.ssl.keystore.certificate.chain": Path(conf["ssl.certificate.location"]).read_text(),
                "kafka.ssl.keystore.key": Path(conf["ssl.key.location"]).read_text()}
        if conf.get("ssl.key.password"):
            out["kafka.ssl.key.password"] = conf["ssl.key.password"]
    return out
