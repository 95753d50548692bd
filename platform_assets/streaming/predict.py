"""Predictions on the stream: online features, the champion's scores and model alerts, per batch.

``process_batch`` calls ``StreamPredictor`` twice per batch:

- ``prepare`` (before the warehouse transaction): folds the batch's minute partials into each
  machine's hourly sums, computes its online feature row (platform_assets/streaming/online.py: the
  batch feature set's own code), scores it with the champion classifier and flags scores above the
  threshold. Nothing is written: the predictions and model alerts go into the batch's ONE
  transaction with its ranges, so a prediction is recorded exactly when its reading is.
- ``publish`` (after the transaction): the feature rows to Redis in one MULTI/EXEC, the predictions
  to the predictions topic and model alerts to the alerts topic (keyed by their ids: at least once,
  consumers deduplicate), and the rolling state advanced.

The champion comes from the registry alias; its version is checked at most every
``reload_seconds`` and the model reloaded when the alias moved. No champion yet, or the registry
down: the batch still lands (features are still written), and its metadata says why nothing was
scored.
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

import numpy as np
import pandas as pd

from platform_assets.ml.features import ONLINE_HISTORY_ROWS
from platform_assets.streaming import online
from platform_assets.streaming.config import Predictions, StreamConfig
from platform_assets.streaming.microbatch import alert_id
from platform_assets.streaming.publish import Publisher
from resources.kafka import KafkaResource, KafkaUnavailable, OffsetRange
from resources.lake import LakeResource
from resources.mlflow_tracking import MlflowResource
from resources.online_store import OnlineStoreResource
from resources.stream_store import StreamStore

# How far back a machine's hourly history is read when the consumer first sees it (its last
# ONLINE_HISTORY_ROWS hours with readings are kept; older gaps are not looked for).
HISTORY_LOOKBACK = pd.Timedelta(hours=3 * ONLINE_HISTORY_ROWS)
CONTEXT_LAKE = {"machines": "processed/machines/data.parquet", "failures": "clean/failures/data.parquet",
                "maintenance": "clean/maintenance"}


class Scored(NamedTuple):
    """What ``prepare`` computed for one batch (nothing of it written yet)."""

    batch_sums: pd.DataFrame
    features: pd.DataFrame
    sources: dict[str, str]
    predictions: pd.DataFrame | None
    alerts: pd.DataFrame | None
    updated_at: pd.Timestamp
    status: dict


class Champion(NamedTuple):
    version: str
    pipeline: object
    columns: list[str]
    positive: int  # index of the positive class in predict_proba's columns


class StreamPredictor:
    def __init__(self, name: str, stream: StreamConfig, *, lake: LakeResource, stream_store: StreamStore,
                 mlflow: MlflowResource, online_store: OnlineStoreResource, kafka: KafkaResource,
                 predictions_topic: str, alerts_topic: str, log=None):
        from platform_assets.ml.config import load_models

        cfg: Predictions = stream.predictions
        catalogue = load_models()
        model = catalogue.models.get(cfg.model)
        if model is None or model.task != "classification":
            raise ValueError(f"stream {name}: predictions.model {cfg.model!r} is not a classification model of the "
                             f"model catalogue (its models: {', '.join(catalogue.models) or 'none'})")
        fs = catalogue.feature_sets[model.feature_set]
        if fs.builder != "machine_hourly":
            raise ValueError(f"stream {name}: model {cfg.model} reads feature set {model.feature_set}, which the "
                             f"stream cannot compute (only the machine_hourly builder has online definitions)")
        self.name, self.stream, self.cfg, self.feature_set = name, stream, cfg, model.feature_set
        self.positive_class = model.positive_class
        self.lake, self.store, self.mlflow, self.online, self.kafka = lake, stream_store, mlflow, online_store, kafka
        self.predictions_topic, self.alerts_topic, self.log = predictions_topic, alerts_topic, log
        self.state = online.HourlyState(stream.key)
        self.champion: Champion | None = None
        self.champion_note = "not checked yet"
        self._checked = float("-inf")
        self._context: online.Context | None = None
        self._context_at = float("-inf")
        self._publisher: Publisher | None = None

    # -- inputs that change slowly -------------------------------------------------------------------
    def context(self) -> online.Context:
        """The register, maintenance and failures from the lake, re-read every ``context_refresh_seconds``."""
        now = time.monotonic()
        if self._context is None or now - self._context_at >= self.cfg.context_refresh_seconds:
            self._context_at = now
            self._context = load_context(self.lake)
        return self._context

    def current_champion(self) -> Champion | None:
        """The champion, its alias checked at most every ``reload_seconds`` (one registry call)."""
        now = time.monotonic()
        if now - self._checked < self.cfg.reload_seconds:
            return self.champion
        self._checked = now
        registered = self.mlflow.registered_name(self.cfg.model)
        try:
            version = self.mlflow.champion(registered)
            if version is None:
                self.champion, self.champion_note = None, f"no champion yet for {registered}: readings land unscored"
            elif self.champion is None or self.champion.version != str(version.version):
                self.champion = load_champion(self.mlflow, registered, str(version.version), self.positive_class)
                self.champion_note = f"champion {registered} v{version.version} loaded"
                if self.log:
                    self.log.info(f"stream {self.name}: scoring with {registered} version {version.version}")
        except Exception as exc:  # noqa: BLE001 (registry down or model unloadable: the stream keeps landing)
            self.champion_note = f"registry unavailable ({type(exc).__name__}: {str(exc)[:200]}); " + (
                f"still scoring with v{self.champion.version}" if self.champion else "readings land unscored")
        return self.champion

    # -- per batch -----------------------------------------------------------------------------------
    def prepare(self, valid: pd.DataFrame, partials: pd.DataFrame | None, ranges: list[OffsetRange],
                topic: str) -> Scored:
        key, event_time = self.stream.key, self.stream.event_time
        updated_at = pd.Timestamp.now(tz="UTC")
        if valid.empty or partials is None or partials.empty:
            return Scored(online.hour_sums(None, key), pd.DataFrame(), {}, None, None, updated_at,
                          {"predictions": 0, "champion": self.champion_note})
        t0 = time.perf_counter()
        batch_sums = online.hour_sums(partials, key)
        keys = sorted(valid[key].astype(str).unique())
        missing = self.state.missing(keys)
        if missing:
            since = batch_sums["hour"].min() - HISTORY_LOOKBACK
            self.state.load(missing, self.store.hour_sums(self.name, key, missing, since, ranges,
                                                          online.READING_COLUMNS))
        context = self.context()
        rows = online.feature_rows(self.state.with_batch(batch_sums, keys), key, context)
        readings = online.scored_readings(valid, key, event_time)
        sources = {r.key: f"{topic}:{r.partition}:{r.offset}" for r in readings.itertuples(index=False)}
        features_s = time.perf_counter() - t0
        champion = self.current_champion()
        t1 = time.perf_counter()
        predictions = alerts = None
        status = {"champion": self.champion_note, "features_written": len(rows),
                  "context": "; ".join(context.notes) or "register, maintenance and failures from the lake"}
        scores = None
        if champion is not None and len(rows):
            try:
                scores = score(champion, rows)
            except (ValueError, TypeError, KeyError) as exc:  # the rows do not fit this model: land, unscored
                status["champion"] = f"v{champion.version} could not score these rows ({exc}); readings land unscored"
        if scores is not None:
            predictions = online.predictions_frame(readings, rows, scores, topic=topic, model=self.cfg.model,
                                                   version=champion.version, threshold=self.cfg.threshold,
                                                   updated_at=updated_at)
            alerts = model_alerts(predictions, topic, self.cfg.model)
            status |= {"model_version": champion.version, "predictions": len(predictions),
                       "prediction_alerts": len(alerts), "threshold": self.cfg.threshold,
                       "score_max": round(float(predictions["score"].max()), 4) if len(predictions) else 0.0}
        else:
            status |= {"predictions": 0}
        status |= {"features_seconds": round(features_s, 4), "score_seconds": round(time.perf_counter() - t1, 4)}
        return Scored(batch_sums, rows, sources, predictions, alerts, updated_at, status)

    def publish(self, scored: Scored) -> None:
        """After the transaction: the state advances (first: nothing below can leave it wrong), features to
        Redis, predictions and alerts to Kafka."""
        self.state.commit(scored.batch_sums)
        if len(scored.features):
            self.online.write_stream_rows(self.feature_set, "machine_id", scored.features, as_of="as_of",
                                          updated_at=scored.updated_at, sources=scored.sources)
        messages = []
        if scored.predictions is not None and len(scored.predictions):
            messages += [(self.predictions_topic, p["prediction_id"], {**p, "stream": self.name})
                         for p in _records(scored.predictions)]
        if scored.alerts is not None and len(scored.alerts):
            messages += [(self.alerts_topic, a["key"], {**a, "stream": self.name}) for a in _records(scored.alerts)]
        if messages:
            self._produce(messages)

    def use_publisher(self, publisher: Publisher) -> None:
        """Publish through the consumer's own long-lived producer (one handshake per consumer, not two)."""
        self._publisher = publisher

    def reset(self) -> None:
        """A batch failed: the in-memory state may be ahead of or behind the warehouse; re-read it."""
        self.state.reset()

    def _produce(self, messages) -> None:
        if self._publisher is None:  # one producer for the consumer's life (a TLS handshake per batch costs)
            self._publisher = Publisher(self.kafka)
        try:
            self._publisher.produce((topic, str(key).encode(), json.dumps(value, default=str).encode())
                                    for topic, key, value in messages)
        except KafkaUnavailable as exc:
            raise KafkaUnavailable(f"predictions: {exc}") from exc


def _records(frame: pd.DataFrame) -> list[dict]:
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = out[col].map(lambda t: t.isoformat() if pd.notna(t) else None)
    return out.astype(object).where(out.notna(), None).to_dict("records")


def load_context(lake: LakeResource) -> online.Context:
    """The feature set's slow inputs as the batch feature asset reads them; empty (with a note) if missing."""
    frames, notes = {}, []
    empty = online.empty_context("")
    for name, rel in CONTEXT_LAKE.items():
        try:
            frames[name] = lake.read_parquet(rel).to_pandas() if lake.exists(rel) else None
        except OSError as exc:
            frames[name], notes = None, [*notes, f"{rel}: {exc}"]
        if frames[name] is None:
            frames[name] = getattr(empty, name)
            notes.append(f"lake {rel} missing (its features stay empty)")
    if "date" in frames["maintenance"].columns:
        frames["maintenance"] = frames["maintenance"].drop(columns=["date"])
    return online.Context(frames["machines"], frames["maintenance"], frames["failures"], tuple(notes))


def load_champion(mlflow: MlflowResource, registered: str, version: str, positive_class) -> Champion:
    from platform_assets.ml.training import positive_class as pick

    pipeline = mlflow.load(registered, version)
    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    if "n_jobs" in estimator.get_params():  # a few rows a batch: thread start-up would dominate
        estimator.set_params(n_jobs=1)
    classes = list(pipeline.classes_)
    return Champion(version, pipeline, list(pipeline.feature_names_in_),
                    classes.index(pick(classes, positive_class, registered)))


def score(champion: Champion, rows: pd.DataFrame) -> np.ndarray:
    frame = rows.reindex(columns=champion.columns)
    return champion.pipeline.predict_proba(frame)[:, champion.positive]


def model_alerts(predictions: pd.DataFrame, topic: str, model: str) -> pd.DataFrame:
    """Scores above the threshold as alerts beside the z-score ones (signal ``model:<name>``)."""
    hit = predictions[predictions["alert"]]
    signal = f"model:{model}"
    return pd.DataFrame({
        "alert_id": [alert_id(topic, p, o, signal) for p, o in zip(hit["partition"], hit["offset"])],
        "key": hit["key"].to_numpy(), "event_time": hit["event_time"].to_numpy(), "signal": signal,
        "value": hit["score"].to_numpy(), "baseline_mean": np.nan, "baseline_std": np.nan, "zscore": np.nan,
        "partition": hit["partition"].to_numpy(), "offset": hit["offset"].to_numpy(),
        "model_version": hit["model_version"].to_numpy(), "threshold": hit["threshold"].to_numpy(),
        "prediction_id": hit["prediction_id"].to_numpy()})
