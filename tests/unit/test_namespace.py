"""PLATFORM_NAMESPACE: one naming rule for schemas, topics, groups, Redis keys, experiments and registered
models; empty means today's names exactly; a bad value fails with the setting's name. And the default
executor (PLATFORM_EXECUTOR): in-process for a catalogue of one's own, multiprocess for the demo."""

from __future__ import annotations

import os

import dagster as dg
import pandas as pd
import pytest

import resources.stream_store  # imported here, under no namespace: its SCHEMA is fixed at import
from platform_assets import namespace
from platform_assets.namespace import NamespaceError

NAMES = {
    "schema": lambda ns: namespace.schema("marts", ns),
    "topic": lambda ns: namespace.topic("iot.sensor-readings", ns),
    "group": lambda ns: namespace.group("platform.sensor_readings", ns),
    "redis": lambda ns: namespace.redis_key("features", "iris", "17", ns=ns),
    "experiment": lambda ns: namespace.experiment("iris_species", "platform", ns),
    "registered": lambda ns: namespace.registered_model("iris_species", "", ns),
    "collection": lambda ns: namespace.collection("machine_events", ns),
    "lake": lambda ns: namespace.lake_root("s3://bucket/lake/", ns),
}


def test_no_namespace_keeps_todays_names_exactly():
    assert {k: f("") for k, f in NAMES.items()} == {
        "schema": "marts", "topic": "iot.sensor-readings", "group": "platform.sensor_readings",
        "redis": "features:iris:17", "experiment": "platform/iris_species", "registered": "iris_species",
        "collection": "machine_events", "lake": "s3://bucket/lake/"}


def test_a_namespace_changes_every_name_by_the_one_rule():
    assert {k: f("acme") for k, f in NAMES.items()} == {
        "schema": "acme_marts", "topic": "iot.sensor-readings.acme", "group": "platform.sensor_readings.acme",
        "redis": "acme:features:iris:17", "experiment": "platform/acme/iris_species",
        "registered": "acme.iris_species", "collection": "acme_machine_events",
        "lake": "s3://bucket/lake/namespaces/acme"}


def test_two_namespaces_never_share_a_name():
    for kind, name in NAMES.items():
        assert len({name(""), name("acme"), name("beta"), name("acme2")}) == 4, kind


def test_registry_prefix_and_namespace_compose_with_separators():
    from resources.mlflow_tracking import registered_name

    assert registered_name("staging_", "temp_max", ns="acme") == "staging_acme.temp_max"
    assert registered_name("corp", "temp_max", ns="acme") == "corp.acme.temp_max"
    assert registered_name("corp", "temp_max", ns="") == "corp.temp_max"
    assert namespace.experiment("temp_max", "", "acme") == "acme/temp_max"


@pytest.mark.parametrize("value", ["acme", "team_2", "a", "x" * 30])
def test_valid_namespaces(value):
    assert namespace.validate(value) == value


@pytest.mark.parametrize("value", ["Acme", "2team", "a-b", "a.b", "a b", "a__b", "acme_", "_acme", "x" * 31, "ü"])
def test_invalid_namespace_fails_naming_the_setting(value):
    with pytest.raises(NamespaceError, match=r"PLATFORM_NAMESPACE=.*lowercase letters, digits"):
        namespace.validate(value)
    with pytest.raises(NamespaceError, match="PLATFORM_NAMESPACE"):
        namespace.schema("marts", value)


def test_current_reads_the_environment(monkeypatch):
    assert namespace.current({}) == ""
    assert namespace.current({"PLATFORM_NAMESPACE": " acme "}) == "acme"
    monkeypatch.setenv("PLATFORM_NAMESPACE", "beta")
    assert namespace.schema("quarantine") == "beta_quarantine"
    monkeypatch.setenv("PLATFORM_NAMESPACE", "Beta")
    with pytest.raises(NamespaceError, match="PLATFORM_NAMESPACE='Beta'"):
        namespace.current()


def test_a_bad_namespace_fails_the_code_location_load(monkeypatch):
    from resources import build_resources

    monkeypatch.setenv("PLATFORM_NAMESPACE", "acme-prod")
    with pytest.raises(NamespaceError, match="PLATFORM_NAMESPACE='acme-prod'"):
        build_resources()


# -- the resources build their names through the rule ----------------------------------------------
def test_resources_name_their_tables_keys_experiments_and_models_in_the_namespace(monkeypatch):
    from resources import build_resources
    from resources.mlflow_tracking import MlflowResource
    from resources.online_store import OnlineStoreResource
    from resources.warehouse import table_for

    key = dg.AssetKey(["warehouse", "quarantine", "iris"])
    mlflow = MlflowResource(tracking_uri="http://x", experiment_prefix="platform", registry_prefix="")
    redis = OnlineStoreResource(host="x", port=1)
    assert (table_for(key), mlflow.experiment_name("iris"), mlflow.registered_name("iris"), redis.key("fs", "e1")) \
        == (("quarantine", "iris"), "platform/iris", "iris", "features:fs:e1")
    monkeypatch.setenv("PLATFORM_NAMESPACE", "acme")
    assert (table_for(key), mlflow.experiment_name("iris"), mlflow.registered_name("iris"), redis.key("fs", "e1")) \
        == (("acme_quarantine", "iris"), "platform/acme/iris", "acme.iris", "acme:features:fs:e1")
    assert build_resources(resolved=True)["lake"].root == f"{os.environ['LAKE_ROOT'].rstrip('/')}/namespaces/acme"


def test_the_dashboard_reads_the_namespaced_schemas_and_shows_their_logical_names(monkeypatch):
    from dashboards import data

    seen = {}

    def query(sql, params=()):
        seen["schemas"] = params[0]
        return pd.DataFrame({"physical": ["acme_marts"], "table": ["dim_machines"], "has_date": [False]})

    monkeypatch.setenv("PLATFORM_NAMESPACE", "acme")
    monkeypatch.setattr(data, "_query", query)
    tables = data._tables(("marts", "quarantine"))
    assert seen["schemas"] == ["acme_marts", "acme_quarantine"]
    assert tables[["schema", "physical", "table"]].values.tolist() == [["marts", "acme_marts", "dim_machines"]]


# -- Kafka: topics follow the namespace, the broker's prefix ACLs still allow them -------------------
def test_stream_topics_are_namespaced_and_still_under_the_provisioned_acls(monkeypatch):
    import importlib.util

    from platform_assets.settings import PROJECT_ROOT
    from platform_assets.sources.config import load_catalogue
    from platform_assets.streaming.config import load_streams

    spec = importlib.util.spec_from_file_location("provision", PROJECT_ROOT / "deploy/local/kafka/provision.py")
    provision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provision)

    plain = load_streams(load_catalogue(), environ={})
    acls_plain = provision.wanted_acls("platform")
    monkeypatch.setenv("PLATFORM_NAMESPACE", "acme")
    named = load_streams(load_catalogue())
    assert set(named.topics) == {f"{t}.acme" for t in plain.topics}
    assert named.alerts_topic == f"{plain.alerts_topic}.acme"
    assert {s.topic for s in named.streams.values()} == {f"{s.topic}.acme" for s in plain.streams.values()}
    # Provisioning under a namespace makes the same ACLs (so it never removes another namespace's),
    # and their prefixes cover every namespaced topic and consumer group.
    acls = provision.wanted_acls("platform")
    assert acls == acls_plain
    prefixes = {a.restype.name: [] for a in acls}
    for a in acls:
        prefixes[a.restype.name].append(a.name)
    for t in [*named.topics, named.alerts_topic]:
        assert any(t.startswith(p) for p in prefixes["TOPIC"]), t
    assert any(namespace.group("platform.sensor_readings").startswith(p) for p in prefixes["GROUP"])
    assert provision.os.environ["PLATFORM_NAMESPACE"] == "acme"  # restored after the ACLs


def test_stream_overrides_name_topics_as_the_catalogue_does(monkeypatch):
    from platform_assets.sources.config import load_catalogue
    from platform_assets.streaming.config import load_streams

    plain = load_streams(load_catalogue(), environ={})
    topic = next(iter(plain.topics))
    named = load_streams(load_catalogue(), environ={"PLATFORM_NAMESPACE": "acme", "STREAM_TOPIC_PARTITIONS": f"{topic}=7"})
    assert named.topics[f"{topic}.acme"].partitions == 7


# -- the default executor ----------------------------------------------------------------------------
def test_executor_setting_resolves_in_one_place():
    from jobs.executor import executor_kind

    assert executor_kind(own_catalogue=True, environ={}) == "in_process"
    assert executor_kind(own_catalogue=False, environ={}) == "in_process"  # the embedded engine by default
    assert executor_kind(own_catalogue=False, environ={"PROCESSING_ENGINE": "duckdb"}) == "in_process"
    assert executor_kind(own_catalogue=False, environ={"PROCESSING_ENGINE": "spark"}) == "multiprocess"
    assert executor_kind(own_catalogue=True, environ={"PROCESSING_ENGINE": "spark"}) == "in_process"
    assert executor_kind(own_catalogue=False, environ={"PLATFORM_EXECUTOR": "In_Process"}) == "in_process"
    assert executor_kind(own_catalogue=True, environ={"PLATFORM_EXECUTOR": "multiprocess"}) == "multiprocess"
    assert executor_kind(own_catalogue=True, environ={"PLATFORM_EXECUTOR": "auto"}) == "in_process"
    with pytest.raises(ValueError, match="PLATFORM_EXECUTOR='threads'"):
        executor_kind(own_catalogue=True, environ={"PLATFORM_EXECUTOR": "threads"})


def _default_execution(defs: dg.Definitions, job: str | None = None) -> dict:
    job_def = defs.resolve_job_def(job) if job else defs.resolve_implicit_global_asset_job_def()
    return job_def.executor_def.config_schema.as_field().default_value


def test_own_catalogue_and_embedded_engine_run_in_process_and_the_demo_on_spark_multiprocess(tmp_path, monkeypatch):
    from platform_assets.definitions import build_definitions

    monkeypatch.delenv("PLATFORM_EXECUTOR", raising=False)
    monkeypatch.setenv("PROCESSING_ENGINE", "duckdb")
    embedded = build_definitions()
    for job in (None, "ml_pipeline", "data_pipeline"):
        assert _default_execution(embedded, job) == {"in_process": {}}, job
    monkeypatch.setenv("PROCESSING_ENGINE", "spark")
    defs = build_definitions()
    for job in (None, "ml_pipeline", "data_pipeline"):
        assert _default_execution(defs, job) == {"multiprocess": {}}, job
    # data_pipeline keeps its check that a run names its partitions
    assert defs.resolve_job_def("data_pipeline").executor_def.name == "multi_or_in_process_partitions_named"
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  iris:\n    kind: json\n    path: /data/iris.json\n"
        "    contract: {columns: {species: {type: string, required: true}}}\n")
    monkeypatch.setenv("PLATFORM_CATALOGUE_DIR", str(tmp_path))
    own = build_definitions()
    assert [_default_execution(own, job) for job in (None, "ml_pipeline", "data_pipeline")] == [{"in_process": {}}] * 3
    assert own.resolve_job_def("data_pipeline").executor_def.name == "multi_or_in_process_partitions_named"
    monkeypatch.setenv("PLATFORM_EXECUTOR", "multiprocess")
    own = build_definitions()
    assert _default_execution(own) == {"multiprocess": {}}
    dg.Definitions.validate_loadable(own)


def _steps_ran(result) -> str:
    return " ".join(e.message or "" for e in result.all_events if e.event_type_value == "ENGINE_EVENT")


def test_the_setting_is_only_a_default_a_run_can_choose(tmp_path):
    """No run config: the default (in one process); run config still picks multiprocess."""
    job = dg.reconstructable(in_process_by_default)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        with dg.execute_job(job, instance=instance) as default:
            assert default.success and "in process" in _steps_ran(default)
        with dg.execute_job(job, instance=instance,
                            run_config={"execution": {"config": {"multiprocess": {}}}}) as chosen:
            assert chosen.success and "multiprocess executor" in _steps_ran(chosen)


def in_process_by_default():
    from jobs.executor import default_executor

    @dg.op
    def noop() -> int:
        return 1

    @dg.job(executor_def=default_executor("in_process"))
    def tiny():
        noop()

    return tiny


def test_a_process_under_a_namespace_records_streams_in_its_own_schema():
    """The stream store's schema is fixed when the process imports it: from this process's setting."""
    import subprocess
    import sys

    from platform_assets.settings import PROJECT_ROOT

    code = "from resources.stream_store import SCHEMA, _DDL; print(SCHEMA, 'CREATE SCHEMA IF NOT EXISTS acme_streaming;' in _DDL)"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PLATFORM_NAMESPACE": "acme"}, check=True).stdout.split()
    assert out == ["acme_streaming", "True"]
    assert resources.stream_store.SCHEMA == "streaming"
