"""Every way into the lake reads and writes the same data in the same layout: Spark's two
lake-access modes and the DuckDB engine (tiny frames)."""

import datetime as dt

import pandas as pd
import pyarrow as pa
import pytest

from resources.engine import ProcessingEngine
from resources.lake import LakeResource
from resources.lake_io_manager import PART_FILE
from resources.spark import SparkResource
from resources.spark_lake import read_days, read_snapshot, write_days

D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)


def spark_engine(mode: str) -> ProcessingEngine:
    return ProcessingEngine(kind="spark", spark=SparkResource(lake_access=mode))


@pytest.fixture
def lake(tmp_path):
    lake = LakeResource(root=str(tmp_path / "lake"))
    for day, values in ((D1, [1.0, 2.0]), (D2, [3.0])):
        ts = pd.to_datetime([f"{day}T00:0{i}:00Z" for i in range(len(values))], utc=True).astype("datetime64[us, UTC]")
        frame = pd.DataFrame({"machine_id": ["M1"] * len(values), "ts": ts, "value": values})
        lake.write_parquet(f"clean/r/date={day}/{PART_FILE}", pa.Table.from_pandas(frame, preserve_index=False))
    lake.write_parquet("clean/s/data.parquet", pa.table({"machine_id": ["M1"], "site": ["S1"]}))
    return lake


def rows(df):
    return sorted(tuple(r) for r in df.collect())


@pytest.mark.slow  # a local Spark session
def test_arrow_mode_reads_what_direct_mode_reads(spark, lake):
    direct, arrow = spark_engine("direct"), spark_engine("arrow")
    d, a = read_days(direct, lake, "clean/r", [D1, D2]), read_days(arrow, lake, "clean/r", [D1, D2])
    assert d.schema == a.schema and d.columns[-1] == "date"
    assert rows(d) == rows(a) and len(rows(a)) == 3
    assert rows(read_snapshot(direct, lake, "clean/s/data.parquet")) == rows(
        read_snapshot(arrow, lake, "clean/s/data.parquet"))
    with pytest.raises(FileNotFoundError, match="date=2026-11-03"):
        read_days(arrow, lake, "clean/r", [D3])


@pytest.mark.slow
def test_duckdb_reads_what_spark_reads(spark, lake):
    duck = ProcessingEngine(kind="duckdb", spark=SparkResource())
    assert duck.lake_access_mode(lake_is_local=True) == "arrow"
    d, s = read_days(duck, lake, "clean/r", [D1, D2]), read_days(spark_engine("direct"), lake, "clean/r", [D1, D2])
    assert d.columns == s.columns == ["machine_id", "ts", "value", "date"]
    assert rows(d) == rows(s) and len(rows(d)) == 3
    duck.release()


def test_duckdb_writes_one_file_per_day_and_replaces_the_window(lake):
    duck = ProcessingEngine(kind="duckdb", spark=SparkResource())
    frame = read_days(duck, lake, "clean/r", [D1, D2])
    write_days(duck, lake, frame, "processed/r", [D1, D2, D3])
    assert lake.list_files("processed/r/date=2026-11-01") == [f"processed/r/date=2026-11-01/{PART_FILE}"]
    written = lake.read_parquet(f"processed/r/date=2026-11-01/{PART_FILE}")
    assert written.num_rows == 2 and str(written.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert lake.read_parquet(f"processed/r/date=2026-11-03/{PART_FILE}").num_rows == 0
    assert rows(read_days(duck, lake, "processed/r", [D1, D2])) == rows(frame)
    with pytest.raises(ValueError, match="outside the run's partitions"):
        write_days(duck, lake, frame, "processed/r", [D1])
    duck.release()


@pytest.mark.slow
def test_arrow_mode_writes_one_file_per_day_and_replaces_the_window(spark, lake):
    arrow = spark_engine("arrow")
    frame = read_days(arrow, lake, "clean/r", [D1, D2])
    write_days(arrow, lake, frame, "processed/r", [D1, D2, D3])
    assert lake.list_files("processed/r/date=2026-11-01") == [f"processed/r/date=2026-11-01/{PART_FILE}"]
    assert lake.read_parquet(f"processed/r/date=2026-11-03/{PART_FILE}").num_rows == 0  # a day without rows
    back = read_days(spark_engine("direct"), lake, "processed/r", [D1, D2, D3])
    assert rows(back) == rows(frame)
    # A rerun of one day replaces that day only.
    write_days(arrow, lake, frame.where("date = '2026-11-02'"), "processed/r", [D2])
    assert len(rows(read_days(arrow, lake, "processed/r", [D1, D2]))) == 3
    with pytest.raises(ValueError, match="outside the run's partitions"):
        write_days(arrow, lake, frame, "processed/r", [D1])


# -- connector jars and their settings (deploy/local/spark) ---------------------------------------
def test_the_connector_pom_pins_the_locked_pyspark_and_its_hadoop():
    """A connector built for another Spark or Hadoop fails at run time (NoSuchMethodError), so the
    pom follows the lock: hadoop-aws at the Hadoop of pyspark's jars; the Kafka connector at the
    newest release Maven Central serves for pyspark's major version (4.3.0 is not served: 4.2.0)."""
    import pathlib
    import re

    import pyspark

    from platform_assets.settings import PROJECT_ROOT

    pom = (PROJECT_ROOT / "deploy" / "local" / "spark" / "pom.xml").read_text()
    prop = lambda name: re.search(rf"<{name}>([^<]+)</{name}>", pom).group(1)
    assert prop("spark.version") == pyspark.__version__
    jars = pathlib.Path(pyspark.__file__).parent / "jars"
    assert (jars / f"hadoop-client-api-{prop('hadoop.version')}.jar").exists()
    assert prop("spark-kafka.version").split(".")[0] == pyspark.__version__.split(".")[0]


def test_local_spark_loads_the_connector_jars_in_place_and_a_cluster_reads_them_from_the_class_path(tmp_path):
    for name in ("hadoop-aws-3.5.0.jar", "bundle-2.35.4.jar"):
        (tmp_path / name).write_bytes(b"")
    local = SparkResource(master="local[2]", jars_dir=str(tmp_path)).spark_config()
    assert local["spark.jars"].split(",") == [str(tmp_path / "bundle-2.35.4.jar"), str(tmp_path / "hadoop-aws-3.5.0.jar")]
    cluster = SparkResource(master="spark://h:7077", jars_dir=str(tmp_path)).spark_config()
    assert "spark.jars" not in cluster
    assert cluster["spark.executor.extraClassPath"] == cluster["spark.driver.extraClassPath"]
    assert cluster["spark.executor.extraClassPath"].endswith("hadoop-aws-3.5.0.jar")
    assert "spark.jars" not in SparkResource(jars_dir=str(tmp_path / "absent")).spark_config()


def test_s3a_reaches_the_store_the_aws_environment_names(monkeypatch):
    from resources.spark import s3a_conf

    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:29000", "AWS_REGION": "eu-west-1"}
    assert s3a_conf(env) == {"spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:29000",
                             "spark.hadoop.fs.s3a.path.style.access": "true",
                             "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
                             "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1"}
    assert s3a_conf({}) == {}  # AWS itself: the SDK's defaults
    # Static keys are settings, so a session started before they were set (same JVM) still gets them.
    keyed = s3a_conf({"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "shh"})
    assert keyed == {"spark.hadoop.fs.s3a.access.key": "AKID", "spark.hadoop.fs.s3a.secret.key": "shh"}
    assert s3a_conf({"AWS_ACCESS_KEY_ID": "AKID"}) == {}  # half a key pair: left to the SDK's chain
    temporary = s3a_conf({"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S", "AWS_SESSION_TOKEN": "T"})
    assert temporary["spark.hadoop.fs.s3a.session.token"] == "T"
    assert temporary["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("TemporaryAWSCredentialsProvider")
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://minio.example:9000")
    conf = SparkResource(extra_conf={"spark.hadoop.fs.s3a.path.style.access": "false"}).spark_config()
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "false"  # extra_conf wins


def test_spark_reads_kafka_with_the_platform_login_and_the_pem_ca(tmp_path):
    from resources.kafka import KafkaResource
    from resources.spark import kafka_options

    kafka = KafkaResource(bootstrap_servers="127.0.0.1:29092", security_protocol="SASL_SSL",
                          sasl_mechanism="SCRAM-SHA-512", sasl_username="platform", sasl_password='p"w\\d',
                          ssl_ca_location=str(tmp_path / "ca.crt"))
    opts = kafka_options(kafka)
    assert opts["kafka.bootstrap.servers"] == "127.0.0.1:29092" and opts["kafka.security.protocol"] == "SASL_SSL"
    assert opts["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert opts["kafka.sasl.jaas.config"] == ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                                              'username="platform" password="p\\"w\\\\d";')
    assert opts["kafka.ssl.truststore.type"] == "PEM"
    assert opts["kafka.ssl.truststore.location"] == str(tmp_path / "ca.crt")
    assert not any(k.startswith("kafka.ssl.keystore") for k in opts)
    (tmp_path / "c.crt").write_text("CERT")
    (tmp_path / "c.key").write_text("KEY")
    mtls = kafka_options(KafkaResource(bootstrap_servers="h:29093", security_protocol="SSL",
                                       ssl_certificate_location=str(tmp_path / "c.crt"),
                                       ssl_key_location=str(tmp_path / "c.key")))
    assert (mtls["kafka.ssl.keystore.type"], mtls["kafka.ssl.keystore.certificate.chain"],
            mtls["kafka.ssl.keystore.key"]) == ("PEM", "CERT", "KEY")
    assert "kafka.sasl.jaas.config" not in mtls
    with pytest.raises(ValueError, match="OAUTHBEARER"):
        kafka_options(KafkaResource(bootstrap_servers="h:1", security_protocol="SASL_SSL",
                                    sasl_mechanism="OAUTHBEARER"))
