"""MLflow tracking and registry for the asset API.

dagster-mlflow offers only the legacy ``mlflow_tracking`` resource (op-centric, global state) and
an end-of-run hook; this small resource gives assets what they need instead: a run per
materialisation tagged with the Dagster run, asset and partitions, models logged with signature and
input example and registered as versions, and alias moves. Its settings come from the environment
like every other resource (``MLFLOW_TRACKING_URI``); experiment and registered model names follow
``PLATFORM_NAMESPACE`` (platform_assets/namespace.py), so namespaces share one server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import subprocess
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from platform_assets import namespace
from platform_assets.settings import PROJECT_ROOT

CHAMPION = "champion"
REGISTRY_SEPARATORS = namespace.REGISTRY_SEPARATORS


def registered_name(prefix: str, model: str, ns: str | None = None) -> str:
    """The registry name of ``model`` under ``prefix`` and this process's namespace (``ns=None``):
    ``acme`` and ``temp_max`` give ``acme.temp_max``; a prefix that already ends in a separator
    (``staging_``, ``acme.``) is used as it is; ``PLATFORM_NAMESPACE=team`` makes it ``acme.team.temp_max``
    (the rule: ``platform_assets.namespace.registered_model``)."""
    return namespace.registered_model(model, prefix, ns)


@functools.cache
def code_version() -> str:
    """The git commit of the code that trained a model (``unknown`` outside a checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("PLATFORM_CODE_VERSION", "unknown")


class MlflowResource(dg.ConfigurableResource):
    tracking_uri: str
    experiment_prefix: str = "platform"
    # Prefix of registered model names: lets several environments (or test sessions) share one server.
    registry_prefix: str = ""

    def registered_name(self, model: str) -> str:
        return registered_name(self.registry_prefix, model)

    def experiment_name(self, experiment: str) -> str:
        """``<experiment_prefix>/<experiment>``, with this process's namespace between the two."""
        return namespace.experiment(experiment, self.experiment_prefix)

    def _mlflow(self):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    @contextlib.contextmanager
    def run(self, context: dg.AssetExecutionContext, experiment: str, run_name: str, tags: dict | None = None) -> Iterator:
        """An MLflow run tagged with where it came from in Dagster."""
        mlflow = self._mlflow()
        mlflow.set_experiment(self.experiment_name(experiment))
        key = context.asset_key.to_user_string() if len(context.assets_def.keys) == 1 else context.op.name
        base_tags = {"dagster.run_id": context.run_id, "dagster.asset": key, "dagster.job": context.job_name,
                     "code_version": code_version()}
        with mlflow.start_run(run_name=run_name, tags={**base_tags, **(tags or {})}) as run:
            yield run

    def log_batch(self, run_id: str, params: dict, metrics: dict) -> None:
        """Params and metrics of a run in one request (one round trip instead of one per call)."""
        import time

        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        self.client().log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                                params=[Param(k, str(v)) for k, v in params.items()])

    def log_files(self, run_id: str, files: dict[str, bytes | dict | list]) -> None:
        """Artifacts of a run from memory (bytes as they are, dicts and lists as JSON), in one upload."""
        import json
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                data = content if isinstance(content, bytes) else json.dumps(content, indent=1, default=str).encode()
                (Path(tmp) / name).write_bytes(data)
            self.client().log_artifacts(run_id, tmp)

    def log_sklearn(self, pipeline, registered_name: str, input_example, tags: dict | None = None):
        """Log a fitted pipeline with signature and input example; register it as a new version.

        Saved with cloudpickle on purpose: mlflow 3.17's default (skops) refuses to load scikit-learn
        types it does not trust, which includes the pipelines here; the registry is ours, so trusted.
        """
        mlflow = self._mlflow()
        from mlflow.models import infer_signature

        # Integer features may be missing at inference (the pipelines impute them), and a missing
        # value makes a column float: declare them as doubles so such requests are not refused.
        ints = input_example.select_dtypes("integer").columns
        input_example = input_example.astype(dict.fromkeys(ints, "float64"))
        # Columns of datetime.date objects (Parquet dates) have no MLflow type: declare them as datetimes.
        for col in input_example.columns[input_example.dtypes == object]:
            sample = input_example[col].dropna()
            if len(sample) and all(isinstance(v, dt.date) for v in sample):
                input_example[col] = pd.to_datetime(input_example[col])
        _pickle_by_value("platform_assets.ml.dateparts")
        signature = infer_signature(input_example, _predict_for_signature(pipeline, input_example))
        info = mlflow.sklearn.log_model(
            pipeline, name="model", signature=signature, input_example=input_example,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            pip_requirements=_serving_requirements(),
        )
        # Registered with its tags in one step (not a request per tag afterwards).
        registered = mlflow.register_model(info.model_uri, registered_name,
                                           tags={k: str(v) for k, v in (tags or {}).items()})
        return str(registered.version)

    def champion(self, registered_name: str):
        """The version the ``champion`` alias points to, or None when there is really none yet.

        Only "no such model" (RESOURCE_DOES_NOT_EXIST) and "no such alias" (INVALID_PARAMETER_VALUE) mean
        no champion; an unreachable server or a 5xx is raised, or the gate would take an outage for "no
        champion" and promote a challenger never compared with the real one."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(registered_name, CHAMPION)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def load(self, registered_name: str, version: str):
        return self._mlflow().sklearn.load_model(f"models:/{registered_name}/{version}")

    def promote(self, registered_name: str, version: str) -> None:
        self.client().set_registered_model_alias(registered_name, CHAMPION, version)


def _pickle_by_value(module: str) -> None:
    """Our own transformers travel inside the pickled model, so loading it needs no checkout of ours."""
    import importlib

    import cloudpickle

    cloudpickle.register_pickle_by_value(importlib.import_module(module))


def _serving_requirements() -> list[str]:
    """What loading the model needs, pinned to what trained it (instead of exporting the whole project)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("scikit-learn", "cloudpickle", "pandas", "numpy", "scipy")]


def _predict_for_signature(pipeline, example):
    if hasattr(pipeline, "predict_proba"):
        return pipeline.predict_proba(example)
    return pipeline.predict(example)
