"""Training benchmark: what does the platform's ML path cost over bare scikit-learn fits?

The platform side is the ``ml_pipeline`` job run in-process: the machine_hourly feature set (read
from the warehouse and the lake, built, written to the lake, point-in-time check), six candidates
(fit, validation and test metrics, a plot, an MLflow run, the model logged and registered), the
challenger gates, the champion aliases and the online store. The baseline is, on the same feature
matrix (the run's own ``lake/features/machine_hourly/data.parquet``), the bare ``Pipeline.fit`` of
the same six models with the same hyper-parameters on the same training split, plus separately the
time of ``machine_hourly_features`` itself on the same inputs, so that feature building and
training are both visible. platform / (features + fits) is an upper bound of the overhead: the
platform also scores two splits, draws plots, tracks, registers, gates and publishes.

Each scale gets fresh databases, lake and REST API (bench_batch.fresh_platform), its batch path
materialised once (not timed in the ratio, reported as batch_s), a registry/experiment prefix of
its own and Redis DB 15 (flushed). The baseline's validation metric of every model must equal the
one in the platform's materialisation metadata: the two sides must train the same models.

Where the candidate steps spend their time, MLflow calls are clocked in-process by thin wrappers
that only read the clock around them (the MLflow run block, log_model, save, serving-input
validation, artifact upload, registration and its READY wait).

    .venv/bin/python tests/benchmarks/bench_training.py [--scales 1,10] [--days 7] [--keep]

Progress goes to stderr; the summary to stdout, whose last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

for key, value in {"SPARK_LOCAL_IP": "127.0.0.1", "DAGSTER_DISABLE_TELEMETRY": "1",
                   "MLFLOW_DISABLE_TELEMETRY": "true", "BENTOML_DO_NOT_TRACK": "true"}.items():
    os.environ.setdefault(key, value)  # as bench_batch, before anything imports dagster or mlflow
warnings.filterwarnings("ignore")

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from dagster._core.events import DagsterEventType

from platform_assets.definitions import defs
from platform_assets.demo_data.generate import generate_fleet
from platform_assets.ml import training as tr
from platform_assets.ml.assets import candidate_key, champion_key, features_key
from platform_assets.ml.config import load_models
from platform_assets.ml.features import machine_hourly_features
from platform_assets.ml.params import PARAMS
from platform_assets.settings import load_local_defaults
from resources import build_resources
from resources.mlflow_tracking import MlflowResource
from tests.benchmarks.bench_batch import START, demo_days, fresh_platform, log, run_platform

REDIS_DB = "15"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
FEATURE_SET = "machine_hourly"


# ---------------------------------------------------------------- MLflow clock (in-process wrappers)

class MlflowClock:
    """Seconds spent in MLflow calls, per candidate (the MLflow run name), while installed."""

    def __init__(self) -> None:
        self.per_run: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.current = "outside"
        self._undo: list[tuple[object, str, object]] = []

    def add(self, what: str, seconds: float) -> None:
        self.per_run[self.current][what] += seconds

    def _wrap(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - started)

        self._undo.append((owner, attr, original))
        setattr(owner, attr, timed)

    @contextlib.contextmanager
    def installed(self):
        import mlflow
        import mlflow.models.model
        import mlflow.models.utils
        import mlflow.sklearn
        from mlflow.store.model_registry.abstract_store import AbstractStore
        from mlflow.tracking._model_registry import fluent as registry_fluent

        clock, original_run = self, MlflowResource.run

        @contextlib.contextmanager
        def run(resource, context, experiment, run_name, tags=None):
            clock.current = run_name
            started = time.perf_counter()
            with original_run(resource, context, experiment, run_name, tags) as active:
                clock.add("start_run_s", time.perf_counter() - started)  # set_experiment, git, start_run
                yield active
                ending = time.perf_counter()
            clock.add("end_run_s", time.perf_counter() - ending)
            clock.add("mlflow_total_s", time.perf_counter() - started)

        self._undo.append((MlflowResource, "run", original_run))
        MlflowResource.run = run
        for owner, attr, label in (
                (MlflowResource, "log_batch", "log_batch_s"),  # params and metrics, one request
                (MlflowResource, "log_files", "log_plot_s"),  # plot and JSON reports, one upload
                (MlflowResource, "log_sklearn", "log_sklearn_s"),  # signature + log_model + registration
                (mlflow.sklearn, "log_model", "log_model_s"),
                (mlflow.models.model, "_create_logged_model", "create_logged_model_s"),  # REST
                (mlflow.sklearn, "save_model", "save_model_s"),  # pickle + MLmodel + env files, local
                (mlflow.models.utils, "_validate_serving_input", "validate_serving_input_s"),  # reload + predict
                (mlflow.MlflowClient, "log_model_artifacts", "upload_model_s"),  # to the server's artifact store
                (registry_fluent, "_register_model", "register_s"),
                (AbstractStore, "_await_model_version_creation", "await_ready_s")):
            self._wrap(owner, attr, label)
        try:
            yield self
        finally:
            for owner, attr, original in reversed(self._undo):
                setattr(owner, attr, original)
            self._undo.clear()


# ---------------------------------------------------------------- the platform

@contextlib.contextmanager
def ml_environment(prefix: str):
    """Registry and experiment prefix of this run's own, Redis DB 15 flushed before and after."""
    env = {"MLFLOW_REGISTRY_PREFIX": prefix, "MLFLOW_EXPERIMENT_PREFIX": f"bench-{prefix}", "REDIS_DB": REDIS_DB}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    online = build_resources(resolved=True)["online_store"]
    online.client().flushdb()
    try:
        yield online
    finally:
        online.client().flushdb()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def run_ml(clock: MlflowClock) -> tuple[float, dict[str, float], dict[str, float], dg.ExecuteInProcessResult]:
    """ml_pipeline in one in-process run: wall seconds, seconds per step, step start offsets, result."""
    instance = dg.DagsterInstance.ephemeral()
    run_id = str(uuid.uuid4())
    with clock.installed():
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links: keep stdout the summary
            result = defs.resolve_job_def("ml_pipeline").execute_in_process(
                instance=instance, run_id=run_id, raise_on_error=False, run_config=QUIET)
        wall = time.perf_counter() - started
    if not result.success:
        errors = [e.event_specific_data.error.to_string() for e in result.all_events
                  if e.event_type_value == "STEP_FAILURE"]
        raise RuntimeError("ml_pipeline failed:\n" + "\n".join(errors))
    began, steps = {}, {}
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}):
        event = entry.dagster_event
        if event.event_type == DagsterEventType.STEP_START:
            began[event.step_key] = entry.timestamp
        else:
            steps[event.step_key] = round(entry.timestamp - began[event.step_key], 2)
    first = min(began.values())
    starts = {k: round(t - first, 2) for k, t in began.items()}
    return wall, dict(sorted(steps.items(), key=lambda kv: -kv[1])), starts, result


def materialisation(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    mats = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()
            if e.event_specific_data.materialization.asset_key == key]
    return {k: v.value for k, v in mats[-1].metadata.items()} if mats else {}


def step_group(step_key: str) -> str:
    for prefix, group in (("lake__features__", "features"), ("ml__candidates__", "candidates"),
                          ("ml__challenger__", "gates"), ("ml__champion__", "gates"), ("ml__online__", "online")):
        if step_key.startswith(prefix):
            return group
    return "other"


# ---------------------------------------------------------------- the baseline

def read_lake(lake_root: Path, rel: str) -> pd.DataFrame:
    """A lake table as the lake IO manager loads it: data.parquet, or every date= folder with its date."""
    base = lake_root / rel
    if (base / "data.parquet").exists():
        return pq.read_table(base / "data.parquet").to_pandas()
    frames = []
    for part in sorted(base.glob("date=*")):
        frame = pq.read_table(part / "part-0.parquet").to_pandas()
        frame["date"] = dt.date.fromisoformat(part.name.split("=", 1)[1])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def baseline_features(lake_root: Path) -> tuple[float, float, pd.DataFrame]:
    """machine_hourly_features on the same inputs: (seconds loading them, seconds building, frame)."""
    started = time.perf_counter()
    warehouse = build_resources(resolved=True)["warehouse"]
    hourly = warehouse.query("SELECT * FROM marts.machine_hourly_stats")
    machines = read_lake(lake_root, "processed/machines")
    maintenance = read_lake(lake_root, "clean/maintenance")
    failures = read_lake(lake_root, "clean/failures")
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    frame = machine_hourly_features(hourly, machines, maintenance, failures)
    return load_s, time.perf_counter() - started, frame


def baseline_fits(features: pd.DataFrame) -> dict[str, dict]:
    """Bare Pipeline.fit of every candidate, default hyper-parameters, the platform's training split."""
    catalogue = load_models()
    out = {}
    for name, model in catalogue.models.items():
        fs = catalogue.feature_sets[model.feature_set]
        rows = tr.check_inputs(features, model, fs, name)  # labels normalised as the platform does
        plan = tr.plan_features(rows, model, fs, name)
        columns = plan.columns
        splits = tr.split(rows, model, fs, name)
        X, y = splits.train[columns], splits.train[model.target]
        for algorithm in model.algorithms:
            pipeline = tr.pipeline_for(model.task, algorithm, PARAMS[algorithm]().model_dump(), plan)
            started = time.perf_counter()
            pipeline.fit(X, y)
            fit_s = time.perf_counter() - started
            # Not timed: the validation metric, to tie the baseline to the platform's model.
            val = tr.metrics(model.task, pipeline, splits.validation[columns], splits.validation[model.target],
                             model.positive_class)
            out[f"{name}/{algorithm}"] = {"fit_s": round(fit_s, 3), "metric": model.selection_metric,
                                          "val": val[model.selection_metric], "train_rows": len(X),
                                          "features": len(columns)}
    return out


# ---------------------------------------------------------------- one scale, and all of them

def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def bench_scale(scale: float, days: list[dt.date], root: Path, prefix: str, keep: bool) -> dict:
    started = time.perf_counter()
    data = generate_fleet(start_date=START, days=len(days), scale=scale)
    log(f"== scale {scale:g}: {len(data.sensor_readings):,} sensor readings, {len(data.machines)} machines "
        f"(generated in {time.perf_counter() - started:.1f}s)")
    with fresh_platform(data, root, keep) as env:
        batch_s, _ = run_platform(days)
        log(f"  batch path {batch_s:.1f}s (not in the ratio)")
        clock = MlflowClock()
        with ml_environment(prefix) as online:
            platform_s, steps, starts, result = run_ml(clock)
            entities = len(online.entities(FEATURE_SET))
        log(f"  ml_pipeline {platform_s:.1f}s")
        lake = Path(env["LAKE_ROOT"])
        features = pq.read_table(lake / "features" / FEATURE_SET / "data.parquet").to_pandas()
        load_s, features_s, rebuilt = baseline_features(lake)
        log(f"  baseline features {features_s:.2f}s")
        fits = baseline_fits(features)
        log(f"  baseline fits {sum(f['fit_s'] for f in fits.values()):.2f}s")

    catalogue = load_models()
    candidates = {}
    for name, model in catalogue.models.items():
        for algorithm in model.algorithms:
            label = f"{name}/{algorithm}"
            md = materialisation(result, candidate_key(name, algorithm))
            step = f"ml__candidates__{name}__{algorithm}"
            mlflow_s = {k: round(v, 2) for k, v in sorted(clock.per_run.get(f"{name}-{algorithm}", {}).items())}
            step_s, fit_s = steps.get(step, 0.0), fits[label]["fit_s"]
            candidates[label] = {
                "metric": model.selection_metric, "platform_val": md[f"val_{model.selection_metric}"],
                "baseline_val": fits[label]["val"],
                "same_model": _same(md[f"val_{model.selection_metric}"], fits[label]["val"]),
                "version": md["model_version"], "started_s": starts.get(step), "step_s": step_s, "baseline_fit_s": fit_s,
                "mlflow_s": mlflow_s,
                # What is neither the fit nor MLflow: input load, checks and split, scoring val and
                # test, the plot, metadata (and, in the first candidate step, first-use imports).
                "rest_s": round(step_s - fit_s - mlflow_s.get("mlflow_total_s", 0.0), 2),
            }
    champions = {name: materialisation(result, champion_key(name)).get("algorithm") for name in catalogue.models}
    groups: dict[str, float] = defaultdict(float)
    for key, secs in steps.items():
        groups[step_group(key)] += secs
    fit_total = sum(f["fit_s"] for f in fits.values())
    feature_md = materialisation(result, features_key(FEATURE_SET))
    return {
        "scale": scale, "machines": len(data.machines), "sensor_rows": len(data.sensor_readings),
        "feature_rows": len(features), "feature_columns": features.shape[1],
        "train_rows": {name: next(f["train_rows"] for k, f in fits.items() if k.startswith(name + "/"))
                       for name in catalogue.models},
        "features_reproduced": rebuilt.shape == features.shape and list(rebuilt.columns) == list(features.columns),
        "positives_24h": feature_md.get("positives_24h"), "online_entities": entities,
        "batch_s": round(batch_s, 2), "platform_s": round(platform_s, 2),
        "baseline_features_s": round(features_s, 3), "baseline_inputs_load_s": round(load_s, 3),
        "baseline_fit_s": round(fit_total, 3),
        "ratio": round(platform_s / (features_s + fit_total), 1),
        "steps_total_s": round(sum(steps.values()), 2), "step_groups_s": {k: round(v, 2) for k, v in groups.items()},
        "steps_s": steps, "candidates": candidates, "champions": champions,
        "all_same_models": all(c["same_model"] for c in candidates.values()),
    }


def print_result(r: dict) -> None:
    print(f"\nscale {r['scale']:g}: {r['machines']} machines, {r['sensor_rows']:,} sensor rows -> "
          f"{r['feature_rows']:,} feature rows x {r['feature_columns']} columns "
          f"(train rows {', '.join(f'{k} {v:,}' for k, v in r['train_rows'].items())})")
    print(f"  batch path (not in the ratio)   {r['batch_s']:8.2f} s")
    print(f"  platform  ml_pipeline            {r['platform_s']:8.2f} s")
    print(f"  baseline  machine_hourly_features {r['baseline_features_s']:7.2f} s  "
          f"(+ {r['baseline_inputs_load_s']:.2f} s loading its inputs, not counted; "
          f"{'same shape as the lake file' if r['features_reproduced'] else 'SHAPE DIFFERS from the lake file'})")
    print(f"  baseline  6 x Pipeline.fit       {r['baseline_fit_s']:8.2f} s")
    print(f"  ratio platform/(features+fits): {r['ratio']}x")
    g = r["step_groups_s"]
    print(f"  steps: {r['steps_total_s']:.1f} s in {len(r['steps_s'])} steps "
          f"(features {g.get('features', 0):.1f}, candidates {g.get('candidates', 0):.1f}, "
          f"gates {g.get('gates', 0):.1f}, online {g.get('online', 0):.1f}), "
          f"{r['platform_s'] - r['steps_total_s']:.1f} s outside steps; slowest:")
    for key, secs in list(r["steps_s"].items())[:8]:
        print(f"    {secs:7.2f} s  {key}")
    print("  candidates in run order: validation metric platform | baseline; seconds: step = "
          "bare fit + MLflow + rest (rest may dip below 0: fit times vary run to run); MLflow's log_model = "
          "create logged model / save / validate input / upload / register (READY wait)")
    for label, c in sorted(r["candidates"].items(), key=lambda kv: kv[1]["started_s"] or 0):
        m = c["mlflow_s"]
        print(f"    {label:<40} {c['metric']:<6} {c['platform_val']:9.4f} | {c['baseline_val']:9.4f} "
              f"{'=' if c['same_model'] else '!='} v{c['version']}  {c['step_s']:6.2f} = {c['baseline_fit_s']:6.2f} + "
              f"{m.get('mlflow_total_s', 0):5.2f} + {c['rest_s']:5.2f};  log_model {m.get('log_model_s', 0):.2f} = "
              f"{m.get('create_logged_model_s', 0):.2f} / {m.get('save_model_s', 0):.2f} / {m.get('validate_serving_input_s', 0):.2f} / "
              f"{m.get('upload_model_s', 0):.2f} / {m.get('register_s', 0):.2f} ({m.get('await_ready_s', 0):.2f})")
    mlflow_total = sum(c["mlflow_s"].get("mlflow_total_s", 0) for c in r["candidates"].values())
    rest_total = sum(c["rest_s"] for c in r["candidates"].values())
    print(f"  candidate steps {r['step_groups_s'].get('candidates', 0):.1f} s = bare fits {r['baseline_fit_s']:.1f} s "
          f"+ MLflow {mlflow_total:.1f} s + rest {rest_total:.1f} s")
    print(f"  champions: {', '.join(f'{k} -> {v}' for k, v in r['champions'].items())}; "
          f"online store: {r['online_entities']} machines")


def cleanup_mlflow(run_id: str) -> None:
    """Registered models and experiments of this benchmark invocation (every scale's prefix)."""
    mlflow = build_resources(resolved=True)["mlflow"]
    client = mlflow.client()
    for m in client.search_registered_models(filter_string=f"name LIKE 'bench{run_id}%'"):
        client.delete_registered_model(m.name)
    for e in client.search_experiments(filter_string=f"name LIKE 'bench-bench{run_id}%'"):
        client.delete_experiment(e.experiment_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1,10", help="multiples of the demo volume, comma-separated")
    parser.add_argument("--days", type=int, default=7, help="days from 2026-11-01 (the demo's week)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder and the databases "
                                                            "(registered models and experiments are still deleted)")
    args = parser.parse_args()

    load_local_defaults()
    days = demo_days(parser, args.days)
    scales = [int(s) if float(s).is_integer() else float(s) for s in args.scales.split(",")]
    print("Platform = ml_pipeline in-process (features, 6 candidates tracked + registered in MLflow, gates, "
          "champions, online store). Baseline = machine_hourly_features + 6 bare Pipeline.fit on the same "
          "data and split: no scoring, plots, tracking or registry. The ratio is an upper bound of the overhead.")

    run_id = uuid.uuid4().hex[:6]
    root = Path(tempfile.mkdtemp(prefix="bench_training_"))
    results = []
    try:
        for i, scale in enumerate(scales):
            results.append(bench_scale(scale, days, root / f"scale_{i}", f"bench{run_id}s{i}_", args.keep))
            print_result(results[-1])
    finally:
        try:
            cleanup_mlflow(run_id)
        except Exception as exc:  # noqa: BLE001 - report, and go on cleaning
            log(f"could not delete the registered models/experiments bench{run_id}*: {exc}")
        try:
            with ml_environment(f"bench{run_id}_"):
                pass  # flushes Redis DB 15 on the way in and out
        except Exception as exc:  # noqa: BLE001
            log(f"could not flush Redis DB {REDIS_DB}: {exc}")
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"benchmark": "training", "days": args.days, "results": results}, default=str), flush=True)
    return 0 if all(r["all_same_models"] and r["features_reproduced"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
