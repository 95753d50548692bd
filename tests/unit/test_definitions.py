"""The complete Definitions load: every asset, check, job, schedule and resource resolves."""

import dagster as dg

from platform_assets.definitions import defs
from platform_assets.sources.config import load_catalogue


def test_definitions_resolve_completely():
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    for name in load_catalogue().sources:
        assert {f"lake/raw/{name}", f"lake/clean/{name}", f"warehouse/quarantine/{name}"} <= keys
    assert {"lake/processed/sensor_readings", "warehouse/marts/machine_hourly_stats",
            "warehouse/marts/site_daily_stats", "warehouse/marts/dim_machines"} <= keys
    assert {"data_pipeline", "data_pipeline_daily"} <= {j.name for j in repo.get_all_jobs()}


def test_lineage_runs_from_source_to_warehouse():
    graph = defs.get_repository_def().asset_graph
    upstream = graph.get(dg.AssetKey(["warehouse", "marts", "site_daily_stats"])).parent_keys
    assert dg.AssetKey(["lake", "processed", "sensor_readings"]) in upstream
    clean = graph.get(dg.AssetKey(["lake", "processed", "sensor_readings"])).parent_keys
    assert dg.AssetKey(["lake", "clean", "sensor_readings"]) in clean


def test_daily_schedule_targets_the_previous_day():
    schedule = defs.resolve_schedule_def("data_pipeline_daily_schedule")
    context = dg.build_schedule_context(scheduled_execution_time=__import__("datetime").datetime(2026, 11, 5, 1, 0))
    requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2026-11-04"]


def test_io_assets_retry_and_partitioned_assets_backfill_in_one_run():
    repo = defs.get_repository_def()
    raw = repo.assets_defs_by_key[dg.AssetKey(["lake", "raw", "sensor_readings"])]
    assert raw.op.retry_policy.max_retries == 3
    assert raw.backfill_policy == dg.BackfillPolicy.single_run()


def test_one_automation_sensor_runs_by_default_and_covers_conditioned_assets():
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def("platform_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    conditioned = {k for k, node in ((k, repo.asset_graph.get(k)) for k in repo.asset_graph.get_all_asset_keys())
                   if node.automation_condition is not None}
    assert dg.AssetKey(["lake", "raw", "machines"]) in conditioned
    assert conditioned <= sensor.asset_selection.resolve(repo.asset_graph)


def test_own_catalogue_folder_loads_alone_without_demo_assets(tmp_path, monkeypatch):
    """PLATFORM_CATALOGUE_DIR: only the folder's sources and models; no demo marts, streams or schedule."""
    from platform_assets.definitions import build_definitions

    (tmp_path / "sources.yaml").write_text("""
sources:
  iris:
    kind: json
    path: /data/iris.json
    contract: {columns: {petal_width: {type: float}, species: {type: string, required: true}}}
""")
    (tmp_path / "models.yaml").write_text("""
feature_sets: {iris: {table: lake/clean/iris}}
models:
  species: {task: classification, feature_set: iris, target: species, algorithms: [random_forest],
            selection_metric: accuracy, floor: 0.5}
""")
    monkeypatch.setenv("PLATFORM_CATALOGUE_DIR", str(tmp_path))
    own = build_definitions()
    dg.Definitions.validate_loadable(own)
    repo = own.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"lake/raw/iris", "lake/clean/iris", "lake/features/iris", "ml/champion/species"} <= keys
    assert not [k for k in keys if "sensor_readings" in k or "marts" in k or k.startswith("kafka")]
    assert {s.name for s in repo.sensor_defs} == {"platform_automation", "record_run_failures"}
    assert not [s.name for s in repo.schedule_defs if s.name.startswith("data_pipeline")]
    (tmp_path / "models.yaml").unlink()
    assert {k.to_user_string() for k in build_definitions().get_repository_def().asset_graph.get_all_asset_keys()} \
        >= {"lake/raw/iris", "lake/clean/iris"}
