"""Packaging assets: champions from the MLflow registry into BentoML, and the Bento of the service.

Lineage then runs from the data to the deployable artefact: ... → ml/champion/<model> →
serving/models/<model> (the BentoML model, labelled with its MLflow version) → serving/bento.
"""

import os

import dagster as dg

from platform_assets.ml import bentobuild
from platform_assets.ml.assets import champion_key
from platform_assets.ml.config import ModelCatalogue
from platform_assets.settings import PROJECT_ROOT
from resources.mlflow_tracking import MlflowResource


def bento_model_key(model: str) -> dg.AssetKey:
    return dg.AssetKey(["serving", "models", model])


def build_bento_model(name: str) -> dg.AssetsDefinition:
    @dg.asset(key=bento_model_key(name), deps=[champion_key(name)], group_name="serving", kinds={"bentoml"},
              automation_condition=dg.AutomationCondition.eager(),
              description=f"The champion of {name}, imported from the MLflow registry into the BentoML store.")
    def _import(context: dg.AssetExecutionContext, mlflow: MlflowResource) -> dg.MaterializeResult:
        import bentoml

        registered = mlflow.registered_name(name)
        champion = mlflow.champion(registered)
        if champion is None:
            raise dg.Failure(f"{registered} has no champion yet: materialise ml/champion/{name}", allow_retries=False)
        os.environ.setdefault("MLFLOW_TRACKING_URI", mlflow.tracking_uri)
        model = bentoml.mlflow.import_model(
            name, model_uri=f"models:/{registered}@champion",
            labels={"registered_name": registered, "mlflow_version": str(champion.version),
                    "algorithm": champion.tags.get("algorithm", "")},
            metadata={"mlflow_version": str(champion.version), "mlflow_run_id": champion.run_id,
                      "dagster_run_id": context.run_id},
        )
        return dg.MaterializeResult(metadata={"bento_model": str(model.tag), "mlflow_version": str(champion.version),
                                              "algorithm": champion.tags.get("algorithm", "")})

    return _import


def build_packaging_assets(catalogue: ModelCatalogue) -> list[dg.AssetsDefinition]:
    assets = [build_bento_model(name) for name in catalogue.models]

    @dg.asset(key=["serving", "bento"], deps=[bento_model_key(n) for n in catalogue.models], group_name="serving",
              kinds={"bentoml"}, automation_condition=dg.AutomationCondition.eager(),
              description="The Bento of the prediction service (serving/bentofile.yaml) with the champions inside.")
    def bento(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        built, requirements = bentobuild.build(PROJECT_ROOT / "serving" / "bentofile.yaml", PROJECT_ROOT)
        return dg.MaterializeResult(metadata={
            "bento": str(built.tag), "path": dg.MetadataValue.path(built.path), "requirements": requirements,
            "models": dg.MetadataValue.json([str(m.tag) for m in built.info.models]),
        })

    assets.append(bento)
    return assets
