"""Catalogues that stand alone, and mistakes across them caught when the code location loads."""

import textwrap

import pytest

from platform_assets.catalogue import load_catalogues
from platform_assets.sources.config import CatalogueError, catalogue_path

SOURCES = """
sources:
  wine:
    kind: csv
    path: /data/wine.csv
    contract:
      columns:
        alcohol: {type: float, required: true}
        colour: {type: string, allowed: [red, white]}
        harvested: {type: date}
        quality: {type: int, required: true}
        rating: {type: float}
"""


def folder(tmp_path, **files):
    for name, body in files.items():
        (tmp_path / f"{name}.yaml").write_text(textwrap.dedent(body))
    return {"PLATFORM_CATALOGUE_DIR": str(tmp_path)}


def models(model: str = "", feature_set: str = "{table: lake/clean/wine}") -> str:
    return f"""
feature_sets:
  wine: {feature_set}
models:
  quality:
    task: {model or 'classification'}
    feature_set: wine
    target: quality
    algorithms: [random_forest]
    selection_metric: {'r2' if model == 'regression' else 'accuracy'}
    floor: 0.1
"""


def test_own_sources_alone_load_without_streams_models_or_demo(tmp_path):
    loaded = load_catalogues(folder(tmp_path, sources=SOURCES))
    assert list(loaded.sources.sources) == ["wine"]
    assert loaded.streams is None and loaded.models.models == {} and not loaded.has_demo_marts
    assert loaded.files == {"sources": tmp_path / "sources.yaml", "streams": None, "models": None}


def test_an_empty_folder_is_an_empty_platform_and_a_missing_folder_is_an_error(tmp_path):
    assert load_catalogues(folder(tmp_path)).sources.sources == {}
    with pytest.raises(CatalogueError, match="is not a folder"):
        catalogue_path("sources", {"PLATFORM_CATALOGUE_DIR": str(tmp_path / "nope")})


def test_demo_catalogues_by_default():
    loaded = load_catalogues({})
    assert loaded.has_demo_marts and loaded.streams is not None and "failure_within_24h" in loaded.models.models


def test_stream_over_a_missing_source_names_file_stream_and_fix(tmp_path):
    env = folder(tmp_path, sources=SOURCES, streams="""
        topics: {t: {partitions: 1}, alerts: {partitions: 1}}
        alerts_topic: alerts
        streams:
          readings: {topic: t, contract_of: sensor_readings, event_time: ts, key: machine_id}
        """)
    with pytest.raises(CatalogueError) as err:
        load_catalogues(env)
    message = str(err.value)
    assert str(tmp_path / "streams.yaml") in message and "stream readings" in message
    assert "contract_of 'sensor_readings' is not a source" in message and "its sources: wine" in message
    assert "Fix: declare source 'sensor_readings'" in message


def test_own_sources_with_the_demo_streams_fail_with_the_fix(tmp_path):
    (tmp_path / "sources.yaml").write_text(SOURCES)
    with pytest.raises(CatalogueError, match=r"streams\.yaml: stream sensor_readings: .*PLATFORM_CATALOGUE_DIR"):
        load_catalogues({"PLATFORM_SOURCES_FILE": str(tmp_path / "sources.yaml")})


def test_machine_hourly_without_the_demo_marts_fails_at_load(tmp_path):
    env = folder(tmp_path, sources=SOURCES, models=models(feature_set="{builder: machine_hourly, entity: machine_id}"))
    with pytest.raises(CatalogueError, match=r"feature set wine: builder machine_hourly reads the demo's warehouse "
                                             r"marts, which need source\(s\) sensor_readings, machines"):
        load_catalogues(env)


@pytest.mark.parametrize("change, message", [
    ("target: quality", None),
    ("target: grade", "model quality: target 'grade' not among the declared columns of source wine"),
    ("features: [alcohol, acidity]", "model quality: feature 'acidity' not among the declared columns"),
])
def test_model_target_and_features_must_be_declared_columns(tmp_path, change, message):
    body = models().replace("target: quality", change if change.startswith("target") else f"target: quality\n    {change}")
    env = folder(tmp_path, sources=SOURCES, models=body)
    if message is None:
        assert load_catalogues(env).models.models["quality"].target == "quality"
        return
    with pytest.raises(CatalogueError) as err:
        load_catalogues(env)
    assert message in str(err.value) and str(tmp_path / "models.yaml") in str(err.value)


def test_unknown_time_column_and_a_table_that_is_not_a_source(tmp_path):
    env = folder(tmp_path, sources=SOURCES, models=models(feature_set="{table: lake/clean/wine, time: bottled}"))
    with pytest.raises(CatalogueError, match="time column 'bottled' not among the declared columns of source wine"):
        load_catalogues(env)
    env = folder(tmp_path, sources=SOURCES, models=models(feature_set="{table: lake/clean/vine}"))
    with pytest.raises(CatalogueError, match=r"table lake/clean/vine: no source 'vine' .*\(sources: wine\)"):
        load_catalogues(env)


def test_classification_of_a_float_target_fails_at_load(tmp_path):
    env = folder(tmp_path, sources=SOURCES, models=models().replace("target: quality", "target: rating"))
    with pytest.raises(CatalogueError, match="task classification, but target 'rating' is declared float"):
        load_catalogues(env)
    env = folder(tmp_path, sources=SOURCES, models=models("regression").replace("target: quality", "target: rating"))
    assert load_catalogues(env).models.models["quality"].task == "regression"
