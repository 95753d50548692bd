"""The three catalogues loaded together, and checked against each other when the code location loads.

Each catalogue validates itself (its own file, its own fields); what only shows across files is
checked here, so a mistake fails the load with the file and the names instead of failing a run
later: a model's target, features, time, entity or group column that the source contract behind
its table feature set does not declare; a classification target declared ``float``; a feature set
built by ``machine_hourly`` without the demo's sources and marts.

Where the files come from: ``sources.config.catalogue_path`` (``PLATFORM_CATALOGUE_DIR`` for a
folder of one's own, each file optional; else ``PLATFORM_*_FILE``; else the demo's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platform_assets.ml.config import ModelCatalogue, load_models
from platform_assets.sources.config import Catalogue, CatalogueError, catalogue_path, load_catalogue
from platform_assets.streaming.config import StreamCatalogue, load_streams

# Sources the demo's batch marts (platform_assets/batch) and the machine_hourly builder read.
DEMO_MART_SOURCES = ("sensor_readings", "machines", "sites", "failures", "maintenance", "app_logs")
_CLEAN = "lake/clean/"


@dataclass(frozen=True)
class Catalogues:
    sources: Catalogue
    streams: StreamCatalogue | None  # None: no streams file in this environment
    models: ModelCatalogue
    files: dict[str, Path | None]

    @property
    def has_demo_marts(self) -> bool:
        """The catalogue holds every source the demo's Spark marts are built from."""
        return all(s in self.sources.sources for s in DEMO_MART_SOURCES)


def load_catalogues(environ=os.environ) -> Catalogues:
    files = {kind: catalogue_path(kind, environ) for kind in ("sources", "streams", "models")}
    sources = load_catalogue(files["sources"]) if files["sources"] else Catalogue()
    streams = load_streams(sources, files["streams"], environ) if files["streams"] else None
    models = load_models(files["models"]) if files["models"] else ModelCatalogue(feature_sets={}, models={})
    loaded = Catalogues(sources, streams, models, files)
    check_models(loaded)
    return loaded


def _source_of(table: str | None) -> str | None:
    return table[len(_CLEAN):] if table and table.startswith(_CLEAN) else None


def check_models(cat: Catalogues) -> None:
    """Cross-check the model catalogue against the source catalogue; raise naming file, model and column."""
    where = f"model catalogue {cat.files['models']}"
    errors = []
    for name, fs in cat.models.feature_sets.items():
        if fs.builder == "machine_hourly" and not cat.has_demo_marts:
            missing = [s for s in DEMO_MART_SOURCES if s not in cat.sources.sources]
            errors.append(f"feature set {name}: builder machine_hourly reads the demo's warehouse marts, which "
                          f"need source(s) {', '.join(missing)} (not in {cat.files['sources'] or 'any catalogue'}); "
                          f"use table: lake/clean/<source> for a feature set over your own data")
        source = _source_of(fs.table)
        if fs.table and fs.table.startswith(_CLEAN) and source not in cat.sources.sources:
            errors.append(f"feature set {name}: table {fs.table}: no source {source!r} in the source catalogue "
                          f"{cat.files['sources']} (sources: {', '.join(cat.sources.sources) or 'none'})")
    for name, model in cat.models.models.items():
        fs = cat.models.feature_sets[model.feature_set]
        source = _source_of(fs.table)
        if source not in cat.sources.sources:
            continue  # a builder or a warehouse table: its columns are known only when it is built
        contract = cat.sources.sources[source].contract
        declared = set(fs.columns or contract.columns)
        named = {"target": [model.target], "feature": list(model.features or ()),
                 "time column": [fs.time] if fs.time else [], "entity column": [fs.entity] if fs.entity else [],
                 "group_by column": [model.split.group_by] if getattr(model.split, "group_by", None) else []}
        for role, columns in named.items():
            unknown = [c for c in columns if c not in declared or c not in contract.columns]
            if unknown:
                errors.append(f"model {name}: {role} {', '.join(map(repr, unknown))} not among the declared columns of "
                              f"source {source} ({', '.join(contract.columns)})"
                              + (f" kept by feature set {model.feature_set}" if fs.columns else ""))
        target = contract.columns.get(model.target)
        if model.task == "classification" and target is not None and target.type == "float":
            errors.append(f"model {name}: task classification, but target {model.target!r} is declared float in "
                          f"source {source}; declare it int, bool or string, or use task: regression")
        time = contract.columns.get(fs.time) if fs.time else None
        if time is not None and time.type not in ("timestamp", "date", "int", "float"):
            errors.append(f"feature set {model.feature_set}: time column {fs.time!r} is a {time.type} in source "
                          f"{source}; it orders rows, so declare it timestamp, date or a number")
    if errors:
        raise CatalogueError(f"{where} does not fit the source catalogue {cat.files['sources']}:\n"
                             + "\n".join(f"  - {e}" for e in dict.fromkeys(errors)))
