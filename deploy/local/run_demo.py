"""`make demo`: demo data → every asset materialised once (with progress) → the Dagster UI.

Runs inside deploy/local/with-services.sh, which has started PostgreSQL, MariaDB and the demo REST
API and stops them again on exit. Ctrl-C stops the webserver and daemon started here.

The terminal shows progress and results only. Everything else written to the process's standard
output and error (MLflow's and Spark's warnings and banners, pip notices, "View run" lines, the
JVM's log4j lines, child processes' chatter) goes to .local/dagster/demo.log: file descriptors 1
and 2 are redirected, so output from C, Java and subprocesses is caught too, not only Python's.
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

_terminal = sys.stdout  # the demo's own lines; the terminal even after quiet_output()


def say(*parts) -> None:
    print(*parts, file=_terminal, flush=True)


def shown(path: Path) -> str:
    """A path as the user would type it from the project folder."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def quiet_output(home: Path) -> Path:
    """Send fd 1 and 2 (libraries, the JVM, children) to the demo log; keep the terminal for say()."""
    global _terminal
    log = home / "demo.log"
    sys.stdout.flush()
    sys.stderr.flush()
    _terminal = os.fdopen(os.dup(1), "w", buffering=1)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return log


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
    say("== demo data")
    done = subprocess.run([sys.executable, "-m", "platform_assets.demo_data"], cwd=ROOT, check=True,
                          stdout=subprocess.PIPE, text=True)  # its table of sources is a result; stderr is noise
    for line in done.stdout.splitlines():
        say(f"  {line}")


GATE_CHECK = "beats_champion"


def only_gate_refused(message: str) -> bool:
    """A step failure raised only because the challenger did not beat the champion (Dagster fails a
    step whose blocking check fails; here that is the gate keeping a weaker retrain out)."""
    if "DagsterAssetCheckFailedError" not in message:
        return False
    named = [line.strip() for line in message.splitlines()[1:] if line.strip()]
    return bool(named) and all(line.endswith(f": {GATE_CHECK}") for line in named)


def run_with_progress(job_name: str, tags: dict | None = None) -> bool:
    """One in-process run of a job on the demo's instance, printing each asset as it lands."""
    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    import dagster as dg
    from dagster._core.events import DagsterEventType

    from platform_assets.definitions import defs

    job = defs.resolve_job_def(job_name)
    instance = dg.DagsterInstance.get()
    run_id = str(uuid.uuid4())
    total = len(job.asset_layer.selected_asset_keys)  # the job's own selection: one place says what it runs
    span = f" for partitions {tags['dagster/asset_partition_range_start']}..{tags['dagster/asset_partition_range_end']}" \
        if tags else ""
    say(f"== {job_name}: {total} assets{span} (run {run_id[:8]})")
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
    printed = failed = refused = 0
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
                    say(f"  [{len(shown):>2}/{total}] {elapsed:6.1f}s  {mat.asset_key.to_user_string():<42} {parts}")
            elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                ev = event.event_specific_data
                if ev.passed:
                    continue
                if ev.check_name == GATE_CHECK:  # the gate doing its job, not a failure
                    md = {k: getattr(v, "value", v) for k, v in ev.metadata.items()}
                    say(f"  gate: {ev.asset_key.to_user_string()} not promoted, the champion stays "
                        f"(challenger {md.get('challenger')} against champion {md.get('champion')} on validation)")
                else:
                    say(f"  check {ev.asset_key.to_user_string()}:{ev.check_name} did not pass ({ev.severity.value})")
            elif only_gate_refused(event.event_specific_data.error.message):
                refused += 1
            else:
                failed += 1
                say(f"  FAILED {event.step_key}: {event.event_specific_data.error.message.strip()[:400]}")
        printed = len(logs)
        if not running:
            break
        time.sleep(0.5)
    worker.join()
    # A run whose only failures are challengers the gate kept out did what it should: say so.
    ok = bool(outcome.get("success")) or (refused > 0 and failed == 0)
    kept = f" ({refused} challenger(s) kept out by the gate; their champions serve on)" if refused else ""
    say(f"== {job_name} {'succeeded' if ok else 'FAILED'}{kept} in {time.monotonic() - started:.0f}s")
    return ok


def summarise_warehouse() -> None:
    from resources import build_resources

    warehouse = build_resources(resolved=True)["warehouse"]
    counts = warehouse.query(
        "SELECT table_schema || '.' || table_name AS tbl FROM information_schema.tables "
        "WHERE table_schema IN ('marts', 'quarantine') ORDER BY 1"
    )
    say("== warehouse (PostgreSQL)")
    for tbl in counts["tbl"]:
        schema, name = tbl.split(".")
        n = warehouse.query(f'SELECT count(*) AS n FROM "{schema}"."{name}"')["n"].iloc[0]
        say(f"  {tbl:<40} {n:>9,} rows")


def summarise_models() -> None:
    from platform_assets.ml.config import load_models
    from resources import build_resources

    configured = build_resources(resolved=True)
    mlflow = configured["mlflow"]
    online = configured["online_store"]
    say(f"== models (MLflow {os.environ['MLFLOW_TRACKING_URI']})")
    client = mlflow.client()
    for name, model in load_models().models.items():
        registered = mlflow.registered_name(name)
        champion = mlflow.champion(registered)
        if champion is None:
            say(f"  {registered:<28} no champion")
            continue
        metrics = client.get_run(champion.run_id).data.metrics
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())
                          if k in (f"val_{model.selection_metric}", f"test_{model.selection_metric}"))
        versions = len(client.search_model_versions(f"name = '{registered}'"))
        say(f"  {registered:<28} champion v{champion.version} ({champion.tags.get('algorithm', '?')}), {shown}; "
              f"{versions} versions")
    for fs, cfg in load_models().feature_sets.items():
        if cfg.online:
            say(f"  online store: {len(online.entities(fs))} {cfg.entity}s of {fs} in Redis "
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
        # The daemon first, so no sensor starts a consumer again; then the continuous consumers (a
        # long-running run each: their code server does not exit while they execute); then the rest.
        daemon = procs[1]
        if daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        try:
            import dagster as dg

            from platform_assets.streaming.continuous import stop_consumers

            with dg.DagsterInstance.get() as instance:
                stopped = stop_consumers(instance)
            if stopped:
                say(f"stopped {len(stopped)} continuous stream consumer run(s)")
        except Exception as exc:  # noqa: BLE001 - stopping must go on whatever happens here
            say(f"could not stop the continuous consumers cleanly: {exc}")
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
        say("== ready")
        say(f"  Dagster UI       http://127.0.0.1:{port}  (asset graph: /asset-groups, runs: /runs)")
        say(f"  MLflow           {os.environ['MLFLOW_TRACKING_URI']}  (experiments platform/classification, "
              f"platform/regression; models with alias 'champion')")
        say(f"  Warehouse        postgresql://{os.environ['WAREHOUSE_USER']}@127.0.0.1:{os.environ['WAREHOUSE_PORT']}/{os.environ['WAREHOUSE_DB']}")
        say(f"  Lake             {os.environ['LAKE_ROOT']}")
        say(f"  Demo REST API    {os.environ['DEMO_API_URL']}/api/v1/sites")
        say(f"  Kafka            {os.environ['KAFKA_BOOTSTRAP_SERVERS']}  (producers: .local/dagster/producer-*.log;"
              f" watch: .venv/bin/python -m platform_assets.streaming.inspect --follow)")
        say("  Streaming        sensor readings: one long-running consumer run (continuous mode, a batch each"
              " second); app logs: micro-batch runs every few seconds; see /runs and the 'streaming' asset group")
        say("  Live scores      each reading batch is scored by the champion classifier within seconds: the"
              " dashboard's Streaming page (Live scores), table streaming.predictions, topic 'predictions',"
              " model alerts in streaming.alerts")
        say(f"  Predictions      {serving}  (OpenAPI: {serving}/docs; metrics: {serving}/metrics)")
        say(f"  Dashboard        http://127.0.0.1:{os.environ.get('DASHBOARD_PORT', '28501')}  (Streamlit: data, "
              f"models, predictions, streaming)")
        say(f"  Prometheus       http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '29090')}  (alerts: /alerts; "
              f"platform metrics: http://127.0.0.1:{os.environ.get('PLATFORM_EXPORTER_PORT', '29100')}/metrics)")
        say("  Try it           (a token with roles predict and train, valid 8 h)")
        say(f"    export TOKEN={token}")
        say(f"    curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
              f"-d '{{\"model\": \"failure_within_24h\", \"machine_ids\": [\"M001\", \"M002\"]}}' {serving}/predict")
        say(f"    curl -s -H \"Authorization: Bearer $TOKEN\" -X POST {serving}/train   # retrain through Dagster")
        say("    more tokens: .venv/bin/python -m serving.mint_token --roles predict,train")
        say(f"  Logs             {shown(home)}/demo.log (libraries' output), webserver.log, daemon.log, "
            f"serving.log, producer-*.log, dashboard.log, monitoring.log")
        say("  Ctrl-C stops the UI, the prediction service, the producers and the services this command started.")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        say(f"a process exited; see {shown(home)}/*.log")
    except KeyboardInterrupt:
        pass
    finally:
        stop()


def main() -> int:
    started = time.monotonic()
    home = prepare_environment()
    log = quiet_output(home)
    say(f"== logs: {shown(log)} (libraries' warnings and banners); {shown(home)}/*.log "
        f"(UI, daemon, prediction service, producers, dashboard, monitoring)")
    try:
        return _demo(home, started)
    except Exception as exc:
        say(f"FAILED: {type(exc).__name__}: {str(exc)[:400]}\n  the traceback and the libraries' output: {shown(log)}")
        raise


def _demo(home: Path, started: float) -> int:
    generate_demo_data()
    from platform_assets.partitions import daily_partitions
    from platform_assets.sources.config import load_catalogue

    days = daily_partitions(load_catalogue()).get_partition_keys()
    ok = run_with_progress("data_pipeline",
                           {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]})
    summarise_warehouse()
    ok = run_with_progress("ml_pipeline") and ok
    summarise_models()
    say(f"== pipeline part took {time.monotonic() - started:.0f}s")
    if os.environ.get("DEMO_NO_UI"):
        return 0 if ok else 1
    serve_ui(home)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
