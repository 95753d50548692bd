"""Data access for the dashboard, through the platform's own resources (no Streamlit in here).

Every function returns a ``Loaded``: a DataFrame and, when it is empty, the reason why (a platform
with nothing materialised, a service that is down). Expected failures are caught here, by type, so
the pages show guidance instead of a stack trace; anything else is a bug and still raises.
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from platform_assets import namespace
from platform_assets.settings import load_local_defaults

EMPTY_HINT = "Nothing materialised yet: run `make demo`"
WAREHOUSE_SCHEMAS = ("marts", "quarantine")
# Settings the dashboard's data depend on: part of every cache key, so a change of database (or a
# test session with its own) never serves another platform's cached frames.
SETTINGS = ("WAREHOUSE_HOST", "WAREHOUSE_PORT", "WAREHOUSE_DB", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_PREFIX",
            "LAKE_ROOT", "KAFKA_BOOTSTRAP_SERVERS", "PLATFORM_MODELS_FILE", namespace.SETTING)

# MLflow retries an unreachable server for minutes by default; a dashboard must answer quickly.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class Loaded(NamedTuple):
    frame: pd.DataFrame
    reason: str | None = None  # why the frame is empty (None when it holds data)

    @property
    def empty(self) -> bool:
        return self.frame.empty


def _empty(reason: str, columns: list[str] | None = None) -> Loaded:
    return Loaded(pd.DataFrame(columns=columns or []), reason)


def settings_key() -> tuple:
    load_local_defaults()
    return tuple(os.environ.get(k, "") for k in SETTINGS)


def dagster_ui_url() -> str:
    return os.environ.get("DAGSTER_UI_URL", "http://127.0.0.1:23000").rstrip("/")


def asset_url(*key_path: str) -> str:
    return f"{dagster_ui_url()}/assets/{'/'.join(key_path)}"


# -- resources -----------------------------------------------------------------------------------
def _resource(name: str):
    """A platform resource, configured from the current settings (built once per settings, then reused)."""
    return _initialized(name, settings_key())


@functools.lru_cache(maxsize=32)
def _initialized(name: str, settings: tuple):
    from resources import build_resources

    if name == "stream_store":
        # A resource nesting another cannot be initialised on its own: built over the warehouse.
        from resources.stream_store import StreamStore

        return StreamStore(warehouse=_initialized("warehouse", settings))
    return build_resources(resolved=True)[name]


def _db_errors() -> tuple[type[BaseException], ...]:
    import psycopg2

    return (ConnectionError, psycopg2.Error)


def _query(sql: str, params: tuple = ()) -> pd.DataFrame:
    return _resource("warehouse").query(sql, params)


def _warehouse_reason(exc: BaseException) -> str:
    import psycopg2

    if isinstance(exc, psycopg2.errors.UndefinedTable):
        return f"{EMPTY_HINT} (table missing: {str(exc).splitlines()[0]})"
    return f"{EMPTY_HINT} (warehouse: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"


def _s(name: str) -> str:
    """A warehouse schema in this process's namespace (``marts``, or ``acme_marts``)."""
    return namespace.schema(name)


def _tables(schemas: tuple[str, ...]) -> pd.DataFrame:
    """Tables of the (logical) ``schemas``: ``schema`` as the pages name it, ``physical`` on the server."""
    physical = {_s(name): name for name in schemas}
    frame = _query(
        "SELECT t.table_schema AS physical, t.table_name AS table, "
        "bool_or(c.column_name = 'date') AS has_date FROM information_schema.tables t "
        "JOIN information_schema.columns c USING (table_schema, table_name) "
        "WHERE t.table_schema = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2", (list(physical),))
    frame.insert(0, "schema", frame["physical"].map(physical))
    return frame


# -- data overview -------------------------------------------------------------------------------
def warehouse_tables(schemas: tuple[str, ...] = WAREHOUSE_SCHEMAS) -> Loaded:
    """Per warehouse table: rows, latest partition date and the asset's page in the Dagster UI."""
    from psycopg2 import sql as q

    columns = ["schema", "table", "rows", "latest_date", "asset", "dagster_ui"]
    try:
        tables = _tables(schemas)
        if tables.empty:
            return _empty(f"{EMPTY_HINT} (no tables in the {', '.join(schemas)} schemas yet)", columns)
        wh = _resource("warehouse")
        rows = []
        with wh.connect() as conn, conn.cursor() as cur:
            for t in tables.itertuples(index=False):
                ident = q.Identifier(t.physical, t.table)
                latest = q.SQL("max(date)") if t.has_date else q.SQL("NULL::date")
                cur.execute(q.SQL("SELECT count(*), {} FROM {}").format(latest, ident))
                n, last = cur.fetchone()
                key = ("warehouse", t.schema, t.table)
                rows.append({"schema": t.schema, "table": t.table, "rows": int(n), "latest_date": last,
                             "asset": "/".join(key), "dagster_ui": asset_url(*key)})
        return Loaded(pd.DataFrame(rows, columns=columns))
    except _db_errors() as exc:
        return _empty(_warehouse_reason(exc), columns)


def quarantine_summary(top: int = 3) -> Loaded:
    """Per quarantined source: bad rows, the latest date and the ``top`` reasons with their counts."""
    from psycopg2 import sql as q

    columns = ["source", "rows", "latest_date", "top_reasons", "dagster_ui"]
    try:
        tables = _tables(("quarantine",))
        rows = []
        if not tables.empty:
            wh = _resource("warehouse")
            with wh.connect() as conn, conn.cursor() as cur:
                for t in tables.itertuples(index=False):
                    cur.execute(q.SQL("SELECT reason, count(*) FROM {} GROUP BY 1 ORDER BY 2 DESC, 1")
                                .format(q.Identifier(t.physical, t.table)))
                    reasons = cur.fetchall()
                    latest = None
                    if t.has_date:
                        cur.execute(q.SQL("SELECT max(date) FROM {}").format(q.Identifier(t.physical, t.table)))
                        latest = cur.fetchone()[0]
                    rows.append({"source": t.table, "rows": int(sum(n for _, n in reasons)), "latest_date": latest,
                                 "top_reasons": "; ".join(f"{r} ({n})" for r, n in reasons[:top]),
                                 "dagster_ui": asset_url("warehouse", "quarantine", t.table)})
        if not rows:
            return _empty(f"{EMPTY_HINT} (no quarantine tables yet)", columns)
        return Loaded(pd.DataFrame(rows, columns=columns))
    except _db_errors() as exc:
        return _empty(_warehouse_reason(exc), columns)


def quarantine_reasons() -> Loaded:
    """Bad rows per source and reason (for a chart)."""
    columns = ["source", "reason", "rows"]
    try:
        tables = _tables(("quarantine",))
        if tables.empty:
            return _empty(f"{EMPTY_HINT} (no quarantine tables yet)", columns)
        from psycopg2 import sql as q

        parts = [q.SQL("SELECT {} AS source, reason, count(*) AS rows FROM {} GROUP BY 1, 2")
                 .format(q.Literal(t), q.Identifier(_s("quarantine"), t)) for t in tables["table"]]
        wh = _resource("warehouse")
        with wh.connect() as conn:
            stmt = q.SQL(" UNION ALL ").join(parts).as_string(conn)
        frame = wh.query(stmt)
        return Loaded(frame) if not frame.empty else _empty("No quarantined rows: every record met its contract", columns)
    except _db_errors() as exc:
        return _empty(_warehouse_reason(exc), columns)


# -- filters -------------------------------------------------------------------------------------
def machines() -> Loaded:
    """Machines with their sites (``marts.dim_machines``), for the sidebar filters."""
    columns = ["machine_id", "site_id", "site_name"]
    try:
        frame = _query(f"SELECT machine_id, site_id, site_name FROM {_s('marts')}.dim_machines "
                       "ORDER BY site_id, machine_id")
        return Loaded(frame) if not frame.empty else _empty(f"{EMPTY_HINT} (marts.dim_machines is empty)", columns)
    except _db_errors() as exc:
        return _empty(_warehouse_reason(exc), columns)


# -- models --------------------------------------------------------------------------------------
def _mlflow_reachable(uri: str) -> str | None:
    """None when the tracking server answers; otherwise why not (fast, instead of MLflow's retries)."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=3).close()
        return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as exc:
        return f"MLflow at {uri} is not reachable ({getattr(exc, 'reason', exc)})"


def _mlflow():
    """The MLflow resource, or the reason it cannot be used."""
    load_local_defaults()
    res = _resource("mlflow")
    return res, _mlflow_reachable(res.tracking_uri)


def model_catalogue() -> dict:
    from platform_assets.ml.config import load_models

    return load_models().models


def models_overview() -> Loaded:
    """Per model in the catalogue: the champion's version, algorithm and metrics."""
    from mlflow.exceptions import MlflowException

    columns = ["model", "registered_name", "task", "selection_metric", "champion_version", "algorithm",
               "run_id", "validation", "test"]
    try:
        res, down = _mlflow()
        if down:
            return _empty(f"{EMPTY_HINT} ({down})", columns)
        client = res.client()
        rows = []
        for name, cfg in model_catalogue().items():
            registered = res.registered_name(name)
            champ = res.champion(registered)
            if champ is None:
                continue
            metrics = client.get_run(champ.run_id).data.metrics if champ.run_id else {}
            rows.append({
                "model": name, "registered_name": registered, "task": cfg.task,
                "selection_metric": cfg.selection_metric, "champion_version": str(champ.version),
                "algorithm": champ.tags.get("algorithm", ""), "run_id": champ.run_id,
                "validation": {k[4:]: v for k, v in metrics.items() if k.startswith("val_")},
                "test": {k[5:]: v for k, v in metrics.items() if k.startswith("test_")},
            })
        if not rows:
            return _empty(f"{EMPTY_HINT} (no model in the MLflow registry has a champion)", columns)
        return Loaded(pd.DataFrame(rows, columns=columns))
    except (MlflowException, ConnectionError, OSError) as exc:
        return _empty(f"{EMPTY_HINT} (MLflow: {str(exc).splitlines()[0]})", columns)


def model_versions(model: str, limit: int = 30) -> Loaded:
    """The latest ``limit`` registered versions of a model with their algorithm and validation metric."""
    from mlflow.exceptions import MlflowException

    columns = ["version", "algorithm", "metric", "value", "champion", "run_id"]
    try:
        res, down = _mlflow()
        if down:
            return _empty(f"{EMPTY_HINT} ({down})", columns)
        cfg = model_catalogue()[model]
        registered = res.registered_name(model)
        client = res.client()
        champ = res.champion(registered)
        metric = f"val_{cfg.selection_metric}"
        versions = sorted(client.search_model_versions(f"name='{registered}'"), key=lambda v: int(v.version))[-limit:]
        rows = []
        for v in versions:
            value = v.tags.get(metric)
            if value is None and v.run_id:
                value = client.get_run(v.run_id).data.metrics.get(metric)
            rows.append({"version": int(v.version), "algorithm": v.tags.get("algorithm", "?"), "metric": metric,
                         "value": float(value) if value is not None else None,
                         "champion": champ is not None and str(champ.version) == str(v.version), "run_id": v.run_id})
        if not rows:
            return _empty(f"{EMPTY_HINT} (no registered versions of {registered})", columns)
        return Loaded(pd.DataFrame(rows, columns=columns))
    except (MlflowException, ConnectionError, OSError) as exc:
        return _empty(f"{EMPTY_HINT} (MLflow: {str(exc).splitlines()[0]})", columns)


def validation_plot(run_id: str) -> bytes | None:
    """The run's ``validation_plot.png`` artifact, downloaded through the MLflow client (None if absent)."""
    from mlflow.exceptions import MlflowException

    try:
        res, down = _mlflow()
        if down:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = res.client().download_artifacts(run_id, "validation_plot.png", dst_path=tmp)
            return Path(path).read_bytes()
    except (MlflowException, OSError):
        return None


# -- predictions ---------------------------------------------------------------------------------
def champion_predictions(latest_hours: int | None = 72) -> Loaded:
    """The champion classifier's predicted probability over the latest feature rows of its feature set.

    The prediction service does not log its predictions to the warehouse yet, so this scores the
    lake's feature set (``lake/features/<set>``) with the registry's ``champion`` (what the service
    serves). ``latest_hours`` keeps the rows of the last hours before the newest ``as_of`` (None: all).
    """
    import mlflow
    import pyarrow as pa
    from mlflow.exceptions import MlflowException

    columns = ["machine_id", "as_of", "site_id", "site_name", "probability", "model", "version"]
    classifiers = {n: c for n, c in model_catalogue().items() if c.task == "classification"}
    if not classifiers:
        return _empty("No classification model in the model catalogue (platform_assets/models.yaml)", columns)
    name, cfg = next(iter(classifiers.items()))
    try:
        res, down = _mlflow()
        if down:
            return _empty(f"{EMPTY_HINT} ({down})", columns)
        registered = res.registered_name(name)
        champ = res.champion(registered)
        if champ is None:
            return _empty(f"{EMPTY_HINT} ({registered} has no champion in the MLflow registry)", columns)
        lake = _resource("lake")
        rel = f"features/{cfg.feature_set}/data.parquet"
        if not lake.exists(rel):
            return _empty(f"{EMPTY_HINT} (feature set lake/features/{cfg.feature_set} not materialised)", columns)
        features = lake.read_parquet(rel).to_pandas()
        from platform_assets.ml.config import load_models

        time_col = load_models().feature_sets[cfg.feature_set].time or "as_of"
        if latest_hours is not None and time_col in features:
            cutoff = features[time_col].max() - pd.Timedelta(hours=latest_hours)
            features = features[features[time_col] > cutoff]
        mlflow.set_tracking_uri(res.tracking_uri)
        pipeline = mlflow.sklearn.load_model(f"models:/{registered}@champion")
        cols = list(getattr(pipeline, "feature_names_in_", [c for c in features.columns]))
        proba = pipeline.predict_proba(features[cols])[:, 1]
    except (MlflowException, OSError, pa.ArrowException) as exc:
        return _empty(f"{EMPTY_HINT} ({type(exc).__name__}: {str(exc).splitlines()[0]})", columns)
    out = pd.DataFrame({"machine_id": features["machine_id"].astype(str).to_numpy(),
                        "as_of": features[time_col].to_numpy(), "probability": proba})
    sites = machines().frame
    if not sites.empty:
        out = out.merge(sites, on="machine_id", how="left")
    for c in ("site_id", "site_name"):
        out[c] = out[c].fillna("unknown") if c in out else "unknown"
    out["model"], out["version"] = registered, str(champ.version)
    return Loaded(out[columns])


def served_predictions() -> Loaded:
    """Predictions the service served, per minute and model (``serving.predictions``, its request log)."""
    return _warehouse_query(
        "SELECT date_trunc('minute', predicted_at) AS minute, model, version, count(*) AS predictions, "
        "avg(probability) AS mean_probability, avg((prediction >= 0.5)::int) AS positive_share "
        f"FROM {_s('serving')}.predictions GROUP BY 1, 2, 3 ORDER BY 1", (),
        ["minute", "model", "version", "predictions", "mean_probability", "positive_share"],
        missing="No predictions served yet: call the prediction service (`make demo` prints a curl)",
        empty="No predictions served yet")


# -- streaming -----------------------------------------------------------------------------------
def _warehouse_query(sql: str, params: tuple, columns: list[str], *, missing: str, empty: str) -> Loaded:
    """A query whose table may not exist yet: ``missing`` then, ``empty`` when it has no rows."""
    try:
        frame = _query(sql, params)
    except _db_errors() as exc:
        import psycopg2

        if isinstance(exc, psycopg2.errors.UndefinedTable):
            return _empty(missing, columns)
        return _empty(_warehouse_reason(exc), columns)
    return Loaded(frame) if not frame.empty else _empty(empty, columns)


def _streaming_query(sql: str, params: tuple, columns: list[str], what: str) -> Loaded:
    return _warehouse_query(sql, params, columns, missing=f"No {what} yet: start the stream producers (`make demo` does)",
                            empty=f"No {what} in the selected range")


def _window(since: pd.Timestamp | None) -> pd.Timestamp:
    return since if since is not None else pd.Timestamp("1970-01-01", tz="UTC")


def events_per_minute(since: pd.Timestamp | None = None, machine_ids: list[str] | None = None) -> Loaded:
    """Readings per one-minute window (``streaming.sensor_readings_minute_stats``, by event time)."""
    where = "window_start >= %s" + (" AND machine_id = ANY(%s)" if machine_ids else "")
    params = (_window(since).to_pydatetime(), *([list(machine_ids)] if machine_ids else []))
    return _streaming_query(
        f"SELECT window_start AS minute, sum(events)::bigint AS events, count(DISTINCT machine_id) AS machines "
        f"FROM {_s('streaming')}.sensor_readings_minute_stats WHERE {where} GROUP BY 1 ORDER BY 1",
        params, ["minute", "events", "machines"], "windowed readings")


def batches_per_minute(since: pd.Timestamp | None = None) -> Loaded:
    """Messages recorded per minute and stream by the micro-batches (``streaming.batches``)."""
    return _streaming_query(
        "SELECT date_trunc('minute', written_at) AS minute, stream, sum(valid_messages)::bigint AS valid, "
        f"sum(dead_letters)::bigint AS dead_letters, count(DISTINCT run_id) AS runs FROM {_s('streaming')}.batches "
        "WHERE written_at >= %s GROUP BY 1, 2 ORDER BY 1, 2",
        (_window(since).to_pydatetime(),), ["minute", "stream", "valid", "dead_letters", "runs"], "micro-batches")


def dead_letters(since: pd.Timestamp | None = None) -> Loaded:
    """Dead letters per minute, stream and reason (``streaming.dead_letters``)."""
    return _streaming_query(
        "SELECT date_trunc('minute', recorded_at) AS minute, stream, reason, count(*) AS messages "
        f"FROM {_s('streaming')}.dead_letters WHERE recorded_at >= %s GROUP BY 1, 2, 3 ORDER BY 1",
        (_window(since).to_pydatetime(),), ["minute", "stream", "reason", "messages"], "dead letters")


def alerts(since: pd.Timestamp | None = None, machine_ids: list[str] | None = None) -> Loaded:
    """Anomaly alerts (``streaming.alerts``) by event time."""
    where = "event_time >= %s" + (" AND key = ANY(%s)" if machine_ids else "")
    params = (_window(since).to_pydatetime(), *([list(machine_ids)] if machine_ids else []))
    return _streaming_query(
        f"SELECT event_time, stream, key, signal, value, baseline_mean, zscore, topic, partition, \"offset\" "
        f"FROM {_s('streaming')}.alerts WHERE {where} ORDER BY event_time",
        params, ["event_time", "stream", "key", "signal", "value", "baseline_mean", "zscore", "topic", "partition",
                 "offset"], "alerts")


def streaming_latest() -> pd.Timestamp | None:
    """The newest streaming timestamp (for ranges relative to the data, not the wall clock)."""
    try:
        st = _s("streaming")
        frame = _query(f"SELECT greatest((SELECT max(written_at) FROM {st}.batches), "
                       f"(SELECT max(event_time) FROM {st}.alerts), "
                       f"(SELECT max(window_start) FROM {st}.sensor_readings_minute_stats)) AS latest")
    except _db_errors():
        return None
    value = frame["latest"].iloc[0] if not frame.empty else None
    return None if value is None or pd.isna(value) else pd.Timestamp(value)


def _kafka_reachable(bootstrap: str) -> str | None:
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=2).close()
            return None
        except (OSError, ValueError):
            continue
    return f"Kafka at {bootstrap} is not reachable"


def consumer_lag() -> Loaded:
    """Per stream and partition: Kafka watermarks, durable offsets and lag (as ``streaming.inspect``)."""
    from platform_assets.catalogue import load_catalogues
    from platform_assets.streaming.assets import group_id
    from platform_assets.streaming.inspect import snapshot
    from resources.kafka import KafkaUnavailable, TopicNotFound

    columns = ["stream", "topic", "partition", "low", "high", "committed", "durable", "lag"]
    try:
        kafka = _resource("kafka")
        down = _kafka_reachable(kafka.bootstrap_servers)
        if down:
            return _empty(f"Consumer lag not available: {down}", columns)
        kafka = kafka.model_copy(update={"timeout_seconds": 3.0})
        try:
            store = _resource("stream_store")
            store.durable_ends("-")
        except _db_errors():
            store = None
        rows = []
        streams = load_catalogues().streams
        for name, stream in (streams.streams if streams else {}).items():
            try:
                for r in snapshot(kafka, store, stream.topic, group_id(name)):
                    rows.append({"stream": name, "topic": stream.topic, **r})
            except TopicNotFound:
                continue
        if not rows:
            return _empty("Consumer lag not available: no stream topic exists yet (`make demo` creates them)", columns)
        return Loaded(pd.DataFrame(rows, columns=columns))
    except (KafkaUnavailable, ConnectionError, OSError) as exc:
        return _empty(f"Consumer lag not available: {str(exc).splitlines()[0]}", columns)
    except Exception as exc:  # noqa: BLE001 (confluent_kafka.KafkaException and friends: lag is optional)
        return _empty(f"Consumer lag not available: {type(exc).__name__}: {exc}", columns)
