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
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field, PrivateAttr

LAKE_ACCESS_MODES = ("auto", "direct", "arrow")
LAKE_ACCESS_ENV = "SPARK_LAKE_ACCESS"


class SparkResource(dg.ConfigurableResource):
    master: str = "local[2]"
    app_name: str = "dagster-ml-platform"
    shuffle_partitions: int = 4
    driver_memory: str = "2g"
    # Extra Spark properties (e.g. spark.hadoop.fs.s3a.* for an object-store lake).
    extra_conf: dict[str, str] = Field(default_factory=dict)
    # How Spark reaches the lake (see the module docstring); unset: $SPARK_LAKE_ACCESS, else "auto".
    lake_access: str | None = None

    _lazy: LazyPySparkResource | None = PrivateAttr(default=None)

    def spark_config(self) -> dict[str, str]:
        return {
            "spark.app.name": self.app_name,
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
            "spark.driver.memory": self.driver_memory,
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.sources.partitionOverwriteMode": "dynamic",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.bindAddress": "127.0.0.1" if self.master.startswith("local") else "0.0.0.0",
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
            conf = {**self.spark_config(), "spark.master": self.master}
            self._lazy = LazyPySparkResource(spark_config=conf)
        return self._lazy.spark_session
