"""`make demo`: demo data → every asset materialised once (with progress) → the Dagster UI.

Runs inside deploy/local/with-services.sh, which has started PostgreSQL, MariaDB and the demo REST
API and stops them again on exit. Ctrl-C stops the webserver and daemon started here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from platform_assets.settings import load_local_defaults


def prepare_environment() -> Path:
    load_local_defaults()
    home = ROOT / ".local" / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    os.environ.setdefault("DAGSTER_HOME", str(home))
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The progress lines are the demo's output: libraries' INFO chatter goes.
    import logging

    for name in ("mlflow", "bentoml", "py4j"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    return Path(os.environ["DAGSTER_HOME"])


def generate_demo_data() -> None:
    print("== demo data")
    subprocess.run([sys.executable, "-m", "platform_assets.demo_data"], cwd=ROOT, check=True)


def run_with_progress(job_name: str, groups: tuple[str, ...], tags: dict | None = None) -> bool:
    """One in-process run of a job on the demo's instance, printing each asset as it lands."""
    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    import dagster as dg
    from dagster._core.events import DagsterEventType

    from platform_assets.definitions import defs

    job = defs.resolve_job_def(job_name)
    instance = dg.DagsterInstance.get()
    run_id = str(uuid.uuid4())
    total = len(dg.AssetSelection.groups(*groups).resolve(defs.get_repository_def().asset_graph))
    span = f" for partitions {tags['dagster/asset_partition_range_start']}..{tags['dagster/asset_partition_range_end']}" \
        if tags else ""
    print(f"== {job_name}: {total} assets{span} (run {run_id[:8]})")
    outcome: dict = {}

    def run() -> None:
        result = job.execute_in_process(
            instance=instance, run_id=run_id, raise_on_error=False, tags=tags or {},
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
        outcome["success"] = result.success

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    printed = 0
    shown: set = set()
    wanted = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.STEP_FAILURE,
              DagsterEventType.ASSET_CHECK_EVALUATION}
    while True:
        running = worker.is_alive()  # read before the logs, so the last poll sees every event
        logs = instance.all_logs(run_id, of_type=wanted)
        for entry in logs[printed:]:
            event = entry.dagster_event
            elapsed = time.monotonic() - started
            if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                mat = event.event_specific_data.materialization
                if mat.asset_key not in shown:  # partitioned assets report once per day: show the first
                    shown.add(mat.asset_key)
                    parts = "partitioned" if mat.partition else ""
                    print(f"  [{len(shown):>2}/{total}] {elapsed:6.1f}s  {mat.asset_key.to_user_string():<42} {parts}")
            elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                ev = event.event_specific_data
                if not ev.passed:
                    print(f"  check {ev.asset_key.to_user_string()}:{ev.check_name} did not pass ({ev.severity.value})")
            else:
                print(f"  FAILED {event.step_key}: {event.event_specific_data.error.message.strip()[:400]}")
        printed = len(logs)
        if not running:
            break
        time.sleep(0.5)
    worker.join()
    print(f"== {job_name} {'succeeded' if outcome.get('success') else 'FAILED'} in {time.monotonic() - started:.0f}s")
    return bool(outcome.get("success"))


def summarise_warehouse() -> None:
    from resources import build_resources

    warehouse = build_resources(resolved=True)["warehouse"]
    counts = warehouse.query(
        "SELECT table_schema || '.' || table_name AS tbl FROM information_schema.tables "
        "WHERE table_schema IN ('marts', 'quarantine') ORDER BY 1"
    )
    print("== warehouse (PostgreSQL)")
    for tbl in counts["tbl"]:
        schema, name = tbl.split(".")
        n = warehouse.query(f'SELECT count(*) AS n FROM "{schema}"."{name}"')["n"].iloc[0]
        print(f"  {tbl:<40} {n:>9,} rows")


def summarise_models() -> None:
    from platform_assets.ml.config import load_models
    from resources import build_resources

    configured = build_resources(resolved=True)
    mlflow = configured["mlflow"]
    online = configured["online_store"]
    print(f"== models (MLflow {os.environ['MLFLOW_TRACKING_URI']})")
    client = mlflow.client()
    for name, model in load_models().models.items():
        registered = mlflow.registered_name(name)
        champion = mlflow.champion(registered)
        if champion is None:
            print(f"  {registered:<28} no champion")
            continue
        metrics = client.get_run(champion.run_id).data.metrics
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())
                          if k in (f"val_{model.selection_metric}", f"test_{model.selection_metric}"))
        versions = len(client.search_model_versions(f"name = '{registered}'"))
        print(f"  {registered:<28} champion v{champion.version} ({champion.tags.get('algorithm', '?')}), {shown}; "
              f"{versions} versions")
    for fs, cfg in load_models().feature_sets.items():
        if cfg.online:
            print(f"  online store: {len(online.entities(fs))} {cfg.entity}s of {fs} in Redis "
                  f"{os.environ['REDIS_HOST']}:{os.environ['REDIS_PORT']}")


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; see .local/dagster/*.log")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def start_producers(home: Path) -> list[subprocess.Popen]:
    """Live traffic for the streaming assets: readings (a few spikes, a few broken) and log events."""
    rate = os.environ.get("DEMO_STREAM_RATE", "100")
    specs = {"sensor_readings": ["--anomalies", "0.002", "--malformed", "0.005"], "app_logs": ["--malformed", "0.005"]}
    procs = []
    for stream, extra in specs.items():
        log = open(home / f"producer-{stream}.log", "ab")  # noqa: SIM115 (open while it runs)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "platform_assets.streaming.produce", "--stream", stream, "--rate", rate,
             "--duration", str(7 * 24 * 3600), *extra],
            cwd=ROOT, stdout=log, stderr=log, start_new_session=True))
    return procs


def start_prediction_service(home: Path, dagster_port: str) -> subprocess.Popen:
    """The champions behind `bentoml serve`, with a local signing secret made on first use."""
    from serving.mint_token import local_secret

    env = {**os.environ, "SERVING_JWT_SECRET": local_secret(create=True),
           "DAGSTER_GRAPHQL_URL": f"http://127.0.0.1:{dagster_port}/graphql"}
    log = open(home / "serving.log", "ab")  # noqa: SIM115 (open while it runs)
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:FleetPredictions",
         "--host", "127.0.0.1", "--port", os.environ.get("SERVING_PORT", "23001")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_dashboard(home: Path) -> subprocess.Popen:
    """The Streamlit dashboard over the same settings."""
    log = open(home / "dashboard.log", "ab")  # noqa: SIM115 (open while it runs)
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboards/app.py", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.address", "127.0.0.1",
         "--server.port", os.environ.get("DASHBOARD_PORT", "28501")],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_monitoring(home: Path) -> list[subprocess.Popen]:
    """The platform exporter and a Prometheus with the repository's configuration and alert rules."""
    log = open(home / "monitoring.log", "ab")  # noqa: SIM115 (open while they run)
    exporter = subprocess.Popen([sys.executable, "-m", "platform_assets.monitoring.exporter", "--port",
                                 os.environ.get("PLATFORM_EXPORTER_PORT", "29100")],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if not shutil.which("prometheus"):
        return [exporter]
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={ROOT / 'deploy' / 'monitoring' / 'prometheus.yml'}",
         f"--storage.tsdb.path={ROOT / '.local' / 'prometheus'}",
         f"--web.listen-address=127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '29090')}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return [exporter, prometheus]


def serve_ui(home: Path) -> None:
    port = os.environ.get("DAGSTER_WEBSERVER_PORT", "23000")
    bin_dir = Path(sys.executable).parent
    logs = {name: open(home / f"{name}.log", "ab") for name in ("webserver", "daemon")}  # noqa: SIM115 (open while they run)
    # Separate processes, default signal handling: `dagster dev` ignores SIGTERM when backgrounded.
    procs = [
        subprocess.Popen([str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", port, "-w", "workspace.yaml"],
                         cwd=ROOT, stdout=logs["webserver"], stderr=subprocess.STDOUT, start_new_session=True),
        subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                         cwd=ROOT, stdout=logs["daemon"], stderr=subprocess.STDOUT, start_new_session=True),
    ]
    producers = start_producers(home)
    procs.append(start_prediction_service(home, port))
    procs += start_monitoring(home)
    procs.append(start_dashboard(home))

    def stop(*_):
        for p in producers + procs:
            if p.poll() is None:
                p.terminate()
        for p in producers + procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        _wait_for(f"http://127.0.0.1:{port}/server_info", procs[0])
        serving = f"http://127.0.0.1:{os.environ.get('SERVING_PORT', '23001')}"
        _wait_for(f"{serving}/readyz", procs[2])
        from serving.auth import mint
        from serving.mint_token import local_secret

        token = mint("demo", ["predict", "train"], local_secret(), 8 * 3600)
        print("== ready")
        print(f"  Dagster UI       http://127.0.0.1:{port}  (asset graph: /asset-groups, runs: /runs)")
        print(f"  MLflow           {os.environ['MLFLOW_TRACKING_URI']}  (experiments platform/classification, "
              f"platform/regression; models with alias 'champion')")
        print(f"  Warehouse        postgresql://{os.environ['WAREHOUSE_USER']}@127.0.0.1:{os.environ['WAREHOUSE_PORT']}/{os.environ['WAREHOUSE_DB']}")
        print(f"  Lake             {os.environ['LAKE_ROOT']}")
        print(f"  Demo REST API    {os.environ['DEMO_API_URL']}/api/v1/sites")
        print(f"  Kafka            {os.environ['KAFKA_BOOTSTRAP_SERVERS']}  (producers: .local/dagster/producer-*.log;"
              f" watch: .venv/bin/python -m platform_assets.streaming.inspect --follow)")
        print("  Streaming        the stream sensors launch micro-batches every few seconds: see /runs and the"
              " 'streaming' asset group")
        print(f"  Predictions      {serving}  (OpenAPI: {serving}/docs; metrics: {serving}/metrics)")
        print(f"  Dashboard        http://127.0.0.1:{os.environ.get('DASHBOARD_PORT', '28501')}  (Streamlit: data, "
              f"models, predictions, streaming)")
        print(f"  Prometheus       http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '29090')}  (alerts: /alerts; "
              f"platform metrics: http://127.0.0.1:{os.environ.get('PLATFORM_EXPORTER_PORT', '29100')}/metrics)")
        print("  Try it           (a token with roles predict and train, valid 8 h)")
        print(f"    export TOKEN={token}")
        print(f"    curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
              f"-d '{{\"model\": \"failure_within_24h\", \"machine_ids\": [\"M001\", \"M002\"]}}' {serving}/predict")
        print(f"    curl -s -H \"Authorization: Bearer $TOKEN\" -X POST {serving}/train   # retrain through Dagster")
        print("    more tokens: .venv/bin/python -m serving.mint_token --roles predict,train")
        print("  Ctrl-C stops the UI, the prediction service, the producers and the services this command started.")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("a Dagster process exited; see .local/dagster/*.log")
    except KeyboardInterrupt:
        pass
    finally:
        stop()


def main() -> int:
    started = time.monotonic()
    home = prepare_environment()
    generate_demo_data()
    from platform_assets.partitions import daily_partitions
    from platform_assets.sources.config import load_catalogue

    days = daily_partitions(load_catalogue()).get_partition_keys()
    ok = run_with_progress("data_pipeline", ("raw", "clean", "quarantine", "processed", "warehouse"),
                           {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]})
    summarise_warehouse()
    ok = run_with_progress("ml_pipeline", ("ml", "serving")) and ok
    summarise_models()
    print(f"== pipeline part took {time.monotonic() - started:.0f}s")
    if os.environ.get("DEMO_NO_UI"):
        return 0 if ok else 1
    serve_ui(home)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
