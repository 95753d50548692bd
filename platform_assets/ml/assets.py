"""ML assets from the model catalogue: feature sets, candidates, challenger, champion, online store.

- ``lake/features/<set>``: a feature set in the lake, with a blocking point-in-time check.
- ``ml/online/<set>``: the latest row per entity in Redis, for serving.
- ``ml/candidates/<model>/<algorithm>``: one trained pipeline, tracked in MLflow and registered as
  a version of ``<model>``; metrics and a plot in the materialisation.
- ``ml/challenger/<model>``: the best candidate on the validation split, compared with the current
  champion re-scored on the same split. Blocking checks: it beats the champion, clears the floor,
  and the feature set's checks passed.
- ``ml/champion/<model>``: moves the ``champion`` alias; runs only when the challenger's blocking
  checks passed, so the alias never moves past a failed gate. Reports the test-set metrics.
"""

import dagster as dg
import pandas as pd

from platform_assets.batch.assets import PROCESSED_MACHINES
from platform_assets.ml import training as tr
from platform_assets.ml.config import FeatureSetConfig, ModelCatalogue, ModelConfig
from platform_assets.ml.features import machine_hourly_features
from platform_assets.ml.params import PARAMS
from platform_assets.policies import IO_RETRY, TRAINING_POOL, retry_only_transient
from platform_assets.sources.factory import clean_key
from resources.mlflow_tracking import MlflowResource
from resources.online_store import OnlineStoreResource

HOURLY_STATS = dg.AssetKey(["warehouse", "marts", "machine_hourly_stats"])
EAGER = dg.AutomationCondition.eager()


def features_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["lake", "features", name])


def candidate_key(model: str, algorithm: str) -> dg.AssetKey:
    return dg.AssetKey(["ml", "candidates", model, algorithm])


def challenger_key(model: str) -> dg.AssetKey:
    return dg.AssetKey(["ml", "challenger", model])


def champion_key(model: str) -> dg.AssetKey:
    return dg.AssetKey(["ml", "champion", model])


def _fail(exc: Exception) -> dg.Failure:
    return dg.Failure(str(exc), allow_retries=False)


def _feature_checks(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec("point_in_time", asset=key, blocking=True,
                              description="Every row uses only source data stamped before its as_of.")]


def _feature_meta(frame: pd.DataFrame, fs: FeatureSetConfig) -> dict:
    meta = {"source_window": f"{frame[fs.time].min()} .. {frame[fs.time].max()}" if fs.time else "all rows"}
    if fs.builder:
        meta |= {"positives_24h": int((frame["failure_within_24h"] == 1).sum()),
                 "rows_with_rul": int(frame["hours_to_failure"].notna().sum())}
    return meta


def build_feature_set(name: str, fs: FeatureSetConfig) -> dg.AssetsDefinition:
    key = features_key(name)
    common = {"key": key, "io_manager_key": "lake_io_manager", "group_name": "ml", "kinds": {"pandas", "parquet"},
                  "automation_condition": EAGER}
    if fs.builder == "machine_hourly":
        @dg.asset(**common, check_specs=_feature_checks(key),
                  ins={"hourly": dg.AssetIn(HOURLY_STATS), "machines": dg.AssetIn(PROCESSED_MACHINES),
                       "maintenance": dg.AssetIn(clean_key("maintenance")), "failures": dg.AssetIn(clean_key("failures"))},
                  description=f"Feature set {name}: point-in-time fleet features and labels per machine and hour.")
        def _built(context: dg.AssetExecutionContext, hourly: pd.DataFrame, machines: pd.DataFrame,
                   maintenance: pd.DataFrame, failures: pd.DataFrame):
            frame = machine_hourly_features(hourly, machines, maintenance, failures)
            yield dg.Output(frame, metadata=_feature_meta(frame, fs))
            leaks = int((frame["source_cutoff"] >= frame["as_of"]).sum())
            yield dg.AssetCheckResult(check_name="point_in_time", passed=leaks == 0, metadata={"rows_leaking": leaks})

        return _built

    @dg.asset(**common, ins={"table": dg.AssetIn(dg.AssetKey.from_user_string(fs.table))},
              description=f"Feature set {name} from {fs.table}.")
    def _from_table(context: dg.AssetExecutionContext, table: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in fs.columns or () if c not in table.columns]
        if missing:
            raise _fail(ValueError(f"feature set {name}: column(s) {', '.join(missing)} not in {fs.table} "
                                   f"(columns: {', '.join(table.columns)})"))
        frame = table[list(fs.columns)] if fs.columns else table
        context.add_output_metadata(_feature_meta(frame, fs))
        return frame

    return _from_table


def build_online(name: str, fs: FeatureSetConfig) -> dg.AssetsDefinition:
    @dg.asset(key=["ml", "online", name], ins={"features": dg.AssetIn(features_key(name))}, group_name="ml",
              kinds={"redis"}, automation_condition=EAGER, retry_policy=IO_RETRY,
              description=f"Latest {name} row per {fs.entity} in the online store (Redis), read by serving.")
    @retry_only_transient
    def _online(features: pd.DataFrame, online_store: OnlineStoreResource) -> dg.MaterializeResult:
        order = features.sort_values(fs.time) if fs.time else features
        latest = order.groupby(fs.entity, as_index=False).tail(1)
        written = online_store.write_latest(name, fs.entity, latest, fs.time or fs.entity)
        return dg.MaterializeResult(metadata={"entities": written,
                                              "as_of_max": str(latest[fs.time].max()) if fs.time else "n/a"})

    return _online


def _train(model_name: str, model: ModelConfig, fs: FeatureSetConfig, algorithm: str, params: dict,
           features: pd.DataFrame):
    """Checks, split, feature plan, fit and scores of one candidate (no I/O)."""
    try:
        rows = tr.check_inputs(features, model, fs, model_name)
        plan = tr.plan_features(rows, model, fs, model_name)
        splits = tr.split(rows, model, fs, model_name)
    except tr.TrainingInputError as exc:
        raise _fail(exc) from exc
    columns = plan.columns
    pipeline = tr.pipeline_for(model.task, algorithm, params, plan)
    with tr.native_threads(len(rows)):
        pipeline.fit(splits.train[columns], splits.train[model.target])
        val, pred = tr.scores(model.task, pipeline, splits.validation[columns], splits.validation[model.target],
                              model.positive_class)  # pred: the validation plot's, from the same pass
        test = tr.metrics(model.task, pipeline, splits.test[columns], splits.test[model.target],
                          model.positive_class)
    return plan, splits, pipeline, val, test, pred


def build_candidate(model_name: str, model: ModelConfig, fs: FeatureSetConfig, algorithm: str) -> dg.AssetsDefinition:
    params_cls = PARAMS[algorithm]

    @dg.asset(key=candidate_key(model_name, algorithm), ins={"features": dg.AssetIn(features_key(model.feature_set))},
              group_name="ml", kinds={"scikit-learn", "mlflow"}, automation_condition=EAGER,
              pool=TRAINING_POOL, retry_policy=IO_RETRY,
              description=f"{algorithm} {model.task} of {model.target}, tracked in MLflow and registered "
                          f"as a version of {model_name}.")
    @retry_only_transient
    def _candidate(context: dg.AssetExecutionContext, config: params_cls, features: pd.DataFrame,
                   mlflow: MlflowResource) -> dg.MaterializeResult:
        params = config.model_dump()
        plan, splits, pipeline, val, test, pred = _train(model_name, model, fs, algorithm, params, features)
        columns, target = plan.columns, model.target
        title = f"{model_name} / {algorithm} (validation)"
        extra: dict = {}
        files = {"feature_rules.json": plan.rules()}
        if model.task == "classification":
            classes = list(pipeline.classes_)
            png = tr.confusion_matrix_png(splits.validation[target], pred, title, labels=classes)
            files["per_class_validation.json"] = tr.per_class(classes, splits.validation[target], pred)
            extra = {"classes": dg.MetadataValue.json([str(c) for c in classes]),
                     "per_class_validation": dg.MetadataValue.json(files["per_class_validation.json"])}
            if len(classes) == 2:
                extra["positive_class"] = str(tr.positive_class(classes, model.positive_class))
        else:
            png = tr.residuals_png(splits.validation[target], pred, title)
        strategy = tr.split_strategy(model, fs)
        window = {p: (f"{s[fs.time].min()} .. {s[fs.time].max()}" if strategy == "time" else f"{len(s)} rows")
                  for p, s in zip(tr.Splits._fields, splits)}
        with mlflow.run(context, experiment=model.task, run_name=f"{model_name}-{algorithm}",
                        tags={"model": model_name, "algorithm": algorithm, "feature_set": model.feature_set,
                              "split_strategy": strategy, "training_window": window["train"],
                              "validation_window": window["validation"]}) as run:
            # The model first: logged after the metrics, MLflow would copy each metric onto the logged
            # model with one request per metric (about a second per candidate on a busy server).
            version = mlflow.log_sklearn(pipeline, mlflow.registered_name(model_name), splits.train[columns].head(5),
                                         tags={"algorithm": algorithm, f"val_{model.selection_metric}":
                                               val[model.selection_metric], "dagster_run_id": context.run_id})
            mlflow.log_batch(run.info.run_id,
                             params={**params, "algorithm": algorithm, "features": len(columns)},
                             metrics={**{f"val_{k}": v for k, v in val.items()},
                                      **{f"test_{k}": v for k, v in test.items()}})
            mlflow.log_files(run.info.run_id, {"validation_plot.png": png, **files})
        return dg.MaterializeResult(metadata={
            **{f"val_{k}": dg.MetadataValue.float(v) for k, v in val.items()},
            **{f"test_{k}": dg.MetadataValue.float(v) for k, v in test.items()},
            "selection_metric": model.selection_metric, "model_version": version,
            "mlflow_run_id": run.info.run_id, "algorithm": algorithm, "features": len(columns),
            "feature_rules": dg.MetadataValue.json(plan.rules()), "split_strategy": strategy,
            "splits": dg.MetadataValue.json({k: len(v) for k, v in zip(tr.Splits._fields, splits)}),
            "windows": dg.MetadataValue.json(window), **extra,
            "plot": dg.MetadataValue.md(tr.png_markdown(png, title)),
        })

    return _candidate


def _latest_metadata(context, key: dg.AssetKey) -> dict:
    event = context.instance.get_latest_materialization_event(key)
    if event is None:
        raise dg.Failure(f"{key.to_user_string()} has never been materialised", allow_retries=False)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _checks_passed(context, key: dg.AssetKey, names: list[str]) -> dict[str, bool]:
    """Latest evaluation of each named check on ``key`` (False when missing or failed)."""
    storage = context.instance.event_log_storage
    check_keys = [dg.AssetCheckKey(key, n) for n in names]
    latest = storage.get_latest_asset_check_execution_by_key(check_keys)
    out = {}
    for ck in check_keys:
        record = latest.get(ck)
        ev = record.event.dagster_event.event_specific_data if record and record.event and record.event.dagster_event else None
        out[ck.name] = bool(ev is not None and getattr(ev, "passed", False))
    return out


def _tolerance(model: ModelConfig) -> str:
    drop = model.gate.max_test_drop
    return "off" if drop is None else f"{drop:.0%}"


def build_gate(model_name: str, model: ModelConfig, fs: FeatureSetConfig) -> list[dg.AssetsDefinition]:
    ckey = challenger_key(model_name)
    candidates = [candidate_key(model_name, a) for a in model.algorithms]
    metric, higher = model.selection_metric, model.higher_is_better
    checks = [
        dg.AssetCheckSpec("beats_champion", asset=ckey, blocking=True,
                          description=f"{metric} at least as good as the current champion's, re-scored on the "
                                      f"same validation split."),
        dg.AssetCheckSpec("clears_floor", asset=ckey, blocking=True,
                          description=f"{metric} {'≥' if higher else '≤'} {model.floor} on validation."),
        dg.AssetCheckSpec("inputs_passed_checks", asset=ckey, blocking=True,
                          description="The feature set's leakage and data-quality checks passed."),
        dg.AssetCheckSpec("test_not_collapsed", asset=ckey, blocking=True,
                          description=f"Test {metric} no more than {_tolerance(model)} worse than validation "
                                      f"(relative to the validation value): the model generalises past "
                                      f"the split it was chosen on."),
    ]

    @dg.asset(key=ckey, deps=candidates, ins={"features": dg.AssetIn(features_key(model.feature_set))},
              group_name="ml", kinds={"mlflow"}, check_specs=checks, automation_condition=EAGER,
              retry_policy=IO_RETRY,
              description=f"The best {model_name} candidate on validation {metric}, against the champion.")
    @retry_only_transient
    def _challenger(context: dg.AssetExecutionContext, features: pd.DataFrame, mlflow: MlflowResource):
        best = None
        scores = {}
        for key in candidates:
            md = _latest_metadata(context, key)
            scores[md["algorithm"]] = md[f"val_{metric}"]
            if best is None or tr.better(md[f"val_{metric}"], best[f"val_{metric}"], higher):
                best = md
        registered = mlflow.registered_name(model_name)
        champion = mlflow.champion(registered)
        champion_score, champion_note = None, "no champion yet"
        if champion is not None:
            try:
                rows = tr.check_inputs(features, model, fs, model_name)
                splits = tr.split(rows, model, fs, model_name)
            except tr.TrainingInputError as exc:
                raise _fail(exc) from exc
            pipeline = mlflow.load(registered, champion.version)
            cols = list(pipeline.feature_names_in_)
            try:
                with tr.native_threads(len(rows)):
                    champion_score = tr.metrics(model.task, pipeline, splits.validation[cols],
                                                splits.validation[model.target], model.positive_class)[metric]
                champion_note = "re-scored on this validation split"
            except (KeyError, ValueError) as exc:  # its columns or classes no longer fit the data
                champion_note = f"cannot be re-scored on this data ({exc}); the challenger replaces it"
        # Not worse than the champion: a retrain on unchanged data (an equal score) refreshes the champion.
        beats = champion_score is None or not tr.better(champion_score, best[f"val_{metric}"], higher)
        floor_ok = best[f"val_{metric}"] >= model.floor if higher else best[f"val_{metric}"] <= model.floor
        inputs = _checks_passed(context, features_key(model.feature_set), ["point_in_time"]) if fs.builder else {}
        val_score, test_score = best[f"val_{metric}"], best[f"test_{metric}"]
        drop = tr.metric_drop(val_score, test_score, higher)
        collapsed = tr.collapsed(val_score, test_score, higher, model.gate.max_test_drop)
        yield dg.MaterializeResult(metadata={
            "challenger_version": str(best["model_version"]), "challenger_algorithm": best["algorithm"],
            f"challenger_val_{metric}": dg.MetadataValue.float(val_score),
            "champion_version": str(champion.version) if champion else "none",
            f"champion_val_{metric}": dg.MetadataValue.float(champion_score) if champion_score is not None else "n/a",
            "champion_note": champion_note,
            "candidates": dg.MetadataValue.json(scores),
            f"challenger_test_{metric}": dg.MetadataValue.float(test_score),
        })
        yield dg.AssetCheckResult(check_name="beats_champion", passed=bool(beats), metadata={
            "challenger": val_score, "champion": champion_score if champion_score is not None else "none",
            "note": champion_note})
        yield dg.AssetCheckResult(check_name="clears_floor", passed=bool(floor_ok),
                                  metadata={"value": val_score, "floor": model.floor})
        yield dg.AssetCheckResult(check_name="inputs_passed_checks", passed=all(inputs.values()),
                                  metadata={"checks": dg.MetadataValue.json(inputs)})
        yield dg.AssetCheckResult(check_name="test_not_collapsed", passed=not collapsed, metadata={
            f"validation_{metric}": dg.MetadataValue.float(val_score),
            f"test_{metric}": dg.MetadataValue.float(test_score),
            "relative_drop": dg.MetadataValue.float(drop), "max_test_drop": _tolerance(model),
            "rule": "(validation - test) / |validation| for higher-is-better metrics, "
                    "(test - validation) / |validation| for lower-is-better; 0 when test is better"})

    @dg.asset(key=champion_key(model_name), deps=[ckey], group_name="ml", kinds={"mlflow"},
              automation_condition=EAGER, retry_policy=IO_RETRY,
              description=f"Moves the registry alias 'champion' of {model_name} to the challenger.")
    @retry_only_transient
    def _champion(context: dg.AssetExecutionContext, mlflow: MlflowResource) -> dg.MaterializeResult:
        challenger = _latest_metadata(context, ckey)
        version = challenger["challenger_version"]
        mlflow.promote(mlflow.registered_name(model_name), version)
        candidate = _latest_metadata(context, candidate_key(model_name, challenger["challenger_algorithm"]))
        return dg.MaterializeResult(metadata={
            "champion_version": version, "algorithm": challenger["challenger_algorithm"],
            **{k: dg.MetadataValue.float(v) for k, v in candidate.items() if k.startswith("test_")},
            "registry": f"models:/{mlflow.registered_name(model_name)}@champion",
        })

    return [_challenger, _champion]


def build_ml_assets(catalogue: ModelCatalogue) -> list:
    assets = []
    for name, fs in catalogue.feature_sets.items():
        assets.append(build_feature_set(name, fs))
        if fs.online:
            assets.append(build_online(name, fs))
    for name, model in catalogue.models.items():
        fs = catalogue.feature_sets[model.feature_set]
        assets += [build_candidate(name, model, fs, a) for a in model.algorithms]
        assets += build_gate(name, model, fs)
    return assets
