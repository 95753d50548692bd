"""The production Dagster instance (deploy/dagster/dagster.yaml) against Dagster's own schemas."""

import copy
import shutil

import pytest
import yaml

from platform_assets.policies import SPARK_POOL, TRAINING_POOL
from platform_assets.settings import PROJECT_ROOT

INSTANCE_FILE = PROJECT_ROOT / "deploy" / "dagster" / "dagster.yaml"
ENV = {"DAGSTER_PG_HOST": "pg.example", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "dagster",
       "DAGSTER_PG_PASSWORD": "dummy", "DAGSTER_PG_DB": "dagster", "DAGSTER_K8S_JOB_NAMESPACE": "ml-platform"}


@pytest.fixture
def instance_env(monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


def load() -> dict:
    return yaml.safe_load(INSTANCE_FILE.read_text())


def validate_instance(tmp_path, config: dict) -> dict:
    """Dagster's loader: the instance schema plus its cross-field rules (e.g. concurrency conflicts)."""
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    value, _ = dagster_instance_config(str(tmp_path))
    return value


def class_config(section: dict) -> dict:
    """A configurable class's `config` checked against that class's own config_type(), env vars resolved."""
    from dagster._config import process_config, resolve_to_config_type
    from dagster._serdes.config_class import ConfigurableClassData, class_from_code_pointer

    # ConfigurableClassData maps public module names (`dagster.core...`) to Dagster's private ones.
    data = ConfigurableClassData(section["module"], section["class"], "{}")
    cls = class_from_code_pointer(data.module_name, data.class_name)
    result = process_config(resolve_to_config_type(cls.config_type()), section.get("config") or {})
    assert result.success, f"{section['class']}: " + "; ".join(e.message for e in result.errors)
    return result.value


def test_the_instance_file_passes_dagsters_instance_schema(tmp_path, instance_env):
    value = validate_instance(tmp_path, load())
    assert value["telemetry"] == {"enabled": False}
    assert value["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_every_configurable_class_accepts_its_config(instance_env):
    config = load()
    for key in ("run_storage", "event_log_storage", "schedule_storage", "run_launcher", "run_coordinator",
                "compute_logs"):
        class_config(config[key])


def test_storage_is_postgres_with_env_settings_and_tls(instance_env):
    config = load()
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        assert config[key]["module"].startswith("dagster_postgres"), key
        db = class_config(config[key])["postgres_db"]
        assert db["hostname"] == "pg.example" and db["port"] == 5432 and db["password"] == "dummy", key
        raw = config[key]["config"]["postgres_db"]
        assert all(isinstance(raw[f], dict) and "env" in raw[f] for f in ("hostname", "username", "password")), \
            f"{key}: connection settings must come from the environment, not the file"
        # `params` is permissive and goes to libpq as is: an `env:` there would reach the server verbatim.
        assert all(isinstance(v, str) for v in raw["params"].values()), f"{key}: params must be literal strings"
        # Explicit params override PGSSLMODE: anything weaker than verify-full would skip the check.
        assert raw["params"]["sslmode"] == "verify-full" and raw["params"]["sslrootcert"].startswith("/"), key


def test_the_k8s_run_launcher_config_is_complete(instance_env):
    launcher = class_config(load()["run_launcher"])
    assert launcher["job_namespace"] == "ml-platform"
    assert launcher["env_config_maps"] == ["platform-settings"]
    assert "platform-credentials" in launcher["env_secrets"]
    limits = launcher["run_k8s_config"]["container_config"]["resources"]["limits"]
    assert {"cpu", "memory"} <= set(limits)


def test_pools_and_run_limits():
    concurrency = load()["concurrency"]
    assert concurrency["pools"]["default_limit"] >= 1
    assert concurrency["runs"]["max_concurrent_runs"] > 0
    # The pools the code claims are documented with the command that sets their limits.
    text = INSTANCE_FILE.read_text()
    for pool in (SPARK_POOL, TRAINING_POOL):
        assert f"dagster instance concurrency set {pool} " in text, pool


def test_the_queue_is_dequeued_every_second_here_and_in_the_helm_values():
    # 1 s, the least Dagster takes: its default 5 s costs every queued run 2.5-3 s (../shared/PERF.md).
    assert load()["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1
    values = yaml.safe_load((PROJECT_ROOT / "deploy" / "helm" / "dagster-values.yaml").read_text())
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queue["dequeueIntervalSeconds"] == 1


def test_the_local_instance_lets_micro_batches_skip_the_queue(tmp_path, monkeypatch):
    """deploy/local/dagster.yaml: the platform's coordinator, a QueuedRunCoordinator to Dagster (so
    the queue daemon runs and `concurrency` applies), with its config accepted by Dagster's schema."""
    from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator

    from jobs.run_coordinator import StreamFirstRunCoordinator

    local = yaml.safe_load((PROJECT_ROOT / "deploy" / "local" / "dagster.yaml").read_text())
    section = local["run_coordinator"]
    assert (section["module"], section["class"]) == ("jobs.run_coordinator", "StreamFirstRunCoordinator")
    assert issubclass(StreamFirstRunCoordinator, QueuedRunCoordinator)
    assert class_config(section)["dequeue_interval_seconds"] == 1


def test_a_broken_instance_is_rejected_with_a_clear_error(tmp_path, instance_env):
    from dagster._core.errors import DagsterInvalidConfigError

    unknown = copy.deepcopy(load())
    unknown["telemetry"]["enbled"] = False  # a typo
    with pytest.raises(DagsterInvalidConfigError, match="enbled"):
        validate_instance(tmp_path, unknown)

    # Tag limits in the coordinator and in `concurrency` at once: Dagster refuses the ambiguity.
    both = copy.deepcopy(load())
    both["run_coordinator"]["config"]["tag_concurrency_limits"] = [{"key": "dagster/backfill", "limit": 1}]
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    with pytest.raises(DagsterInvalidConfigError, match="tag_concurrency_limits"):
        validate_instance(tmp_path, both)


def test_a_launcher_without_its_instance_config_map_is_rejected(instance_env):
    section = copy.deepcopy(load()["run_launcher"])
    del section["config"]["instance_config_map"]
    with pytest.raises(AssertionError, match="instance_config_map"):
        class_config(section)
