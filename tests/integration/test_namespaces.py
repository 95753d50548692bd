"""Two namespaces, one set of servers: the same catalogue materialised twice, side by side, apart.

One catalogue folder (a JSON source, an online feature set, a classifier) is materialised through
`dagster asset materialize` (no `--config-json`: a catalogue of one's own runs in one process) by two
concurrent processes that differ only in ``PLATFORM_NAMESPACE`` and in their input file (150 iris rows
in ``a…``, 100 rows of two species plus one broken row in ``b…``). They share one warehouse database,
one lake root, Redis and the MLflow server, with no registry prefix: the namespace alone keeps them
apart. Each then finds only its own rows in its schemas, lake, Redis keys and registered champion.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pytest

from platform_assets.settings import PROJECT_ROOT
from tests.integration.conftest import _pg_admin, pg_connect
from tests.integration.test_own_data import DAGSTER, own_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOGUE = {
    "sources.yaml": """
sources:
  flowers:
    kind: json
    path: flowers.json
    contract:
      primary_key: [flower_id]
      columns:
        flower_id: {type: int, required: true}
        sepal_length: {type: float, required: true}
        sepal_width: {type: float, required: true}
        petal_length: {type: float, required: true}
        petal_width: {type: float, required: true}
        species: {type: string, required: true}
""",
    "models.yaml": """
feature_sets:
  flowers: {table: lake/clean/flowers, entity: flower_id, online: true}
models:
  species:
    task: classification
    feature_set: flowers
    target: species
    algorithms: [logistic_regression]
    selection_metric: accuracy
    floor: 0.5
""",
}
SELECTION = ("lake/raw/flowers,lake/clean/flowers,warehouse/quarantine/flowers,lake/features/flowers,"
             "ml/online/flowers,ml/candidates/species/logistic_regression,ml/challenger/species,ml/champion/species")


def _iris() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = [data.target_names[t] for t in frame.pop("target")]
    frame.insert(0, "flower_id", range(len(frame)))
    return frame


def _inputs(root: Path) -> dict[str, Path]:
    """Namespace a: all 150 flowers. Namespace b: the first 100 (no virginica) and one without a species."""
    iris = _iris()
    rows_b = [*iris.iloc[:100].to_dict("records"), {**iris.iloc[0].to_dict(), "flower_id": 999, "species": None}]
    folders = {}
    for name, rows in (("a", iris.to_dict("records")), ("b", rows_b)):
        folders[name] = root / f"files_{name}"
        folders[name].mkdir()
        pd.DataFrame(rows).to_json(folders[name] / "flowers.json", orient="records")
    return folders


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    import redis

    root = tmp_path_factory.mktemp("namespaces")
    tag = uuid.uuid4().hex[:6]
    base = own_environment(root, "ns")  # a warehouse database of this test's own, shared by both
    base.update({"MLFLOW_REGISTRY_PREFIX": "", "MLFLOW_EXPERIMENT_PREFIX": "test-ns"})
    base.pop("PLATFORM_EXECUTOR", None)
    catalogue = Path(base["PLATFORM_CATALOGUE_DIR"])
    catalogue.mkdir()
    for name, text in CATALOGUE.items():
        (catalogue / name).write_text(text)
    files = _inputs(root)
    spaces = {"a": f"a{tag}", "b": f"b{tag}"}
    envs, procs = {}, {}
    for which, ns in spaces.items():
        home = root / f"dagster_home_{which}"  # each namespace its own Dagster instance (as documented)
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        envs[which] = {**base, "PLATFORM_NAMESPACE": ns, "SOURCE_FILES_ROOT": str(files[which]),
                       "DAGSTER_HOME": str(home)}
    try:
        for which, env in envs.items():  # both at once, on the same servers
            procs[which] = subprocess.Popen(
                [DAGSTER, "asset", "materialize", "-m", "platform_assets.definitions", "--select", SELECTION],
                cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        outputs = {which: p.communicate(timeout=600)[0] for which, p in procs.items()}
        results = {which: (p.returncode, outputs[which]) for which, p in procs.items()}
        yield {"root": root, "env": base, "ns": spaces, "results": results, "envs": envs}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        _cleanup(base, spaces.values(), redis)


def _cleanup(env: dict, spaces, redis) -> None:
    from resources.mlflow_tracking import MlflowResource

    client = MlflowResource(tracking_uri=env["MLFLOW_TRACKING_URI"]).client()
    store = redis.Redis(host=env["REDIS_HOST"], port=int(env["REDIS_PORT"]), db=int(env["REDIS_DB"]),
                        password=env.get("REDIS_PASSWORD") or None)
    for ns in spaces:
        for m in client.search_registered_models(filter_string=f"name LIKE '{ns}.%'"):
            client.delete_registered_model(m.name)
        for e in client.search_experiments(filter_string=f"name LIKE 'test-ns/{ns}/%'"):
            client.delete_experiment(e.experiment_id)
        keys = list(store.scan_iter(f"{ns}:*"))
        if keys:
            store.delete(*keys)
    _pg_admin(f'DROP DATABASE IF EXISTS "{env["WAREHOUSE_DB"]}" WITH (FORCE)')


def _succeeded(two, which: str) -> str:
    code, output = two["results"][which]
    assert code == 0, output[-4000:]
    return output


def test_both_runs_succeed_in_one_process_without_run_config(two):
    for which in ("a", "b"):
        output = _succeeded(two, which)
        assert "Executing steps in process" in output, output[-3000:]


def test_each_namespace_has_its_own_schemas_and_rows(two):
    a, b = two["ns"]["a"], two["ns"]["b"]
    for which in ("a", "b"):
        _succeeded(two, which)
    conn = pg_connect(two["env"]["WAREHOUSE_DB"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_schema, table_name FROM information_schema.tables "
                        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")
            tables = set(cur.fetchall())
            counts = {}
            for ns in (a, b):
                cur.execute(f'SELECT count(*) FROM "{ns}_quarantine".flowers')
                counts[ns] = cur.fetchone()[0]
    finally:
        conn.close()
    assert {(f"{a}_quarantine", "flowers"), (f"{b}_quarantine", "flowers")} <= tables
    assert not [t for t in tables if not t[0].startswith((a, b))], tables  # nothing un-namespaced
    assert counts == {a: 0, b: 1}  # b's broken row in b's quarantine only


def test_each_namespace_has_its_own_lake(two):
    lake = Path(two["env"]["LAKE_ROOT"])
    rows = {which: len(pd.read_parquet(lake / "namespaces" / ns / "clean" / "flowers"))
            for which, ns in two["ns"].items()}
    assert rows == {"a": 150, "b": 100}
    assert not (lake / "clean").exists()


def test_each_namespace_has_its_own_online_features(two):
    import redis

    env = two["env"]
    store = redis.Redis(host=env["REDIS_HOST"], port=int(env["REDIS_PORT"]), db=int(env["REDIS_DB"]),
                        password=env.get("REDIS_PASSWORD") or None, decode_responses=True)
    a, b = two["ns"]["a"], two["ns"]["b"]
    for which in ("a", "b"):
        _succeeded(two, which)
    entities = {ns: store.smembers(f"{ns}:features:flowers:entities") for ns in (a, b)}
    assert len(entities[a]) == 150 and len(entities[b]) == 100
    assert '"virginica"' in store.hget(f"{a}:features:flowers:149", "row")
    assert store.hget(f"{b}:features:flowers:149", "row") is None  # b never had flower 149


def test_each_namespace_has_its_own_experiments_and_champion(two):
    from resources.mlflow_tracking import MlflowResource

    a, b = two["ns"]["a"], two["ns"]["b"]
    for which in ("a", "b"):
        _succeeded(two, which)
    mlflow = MlflowResource(tracking_uri=two["env"]["MLFLOW_TRACKING_URI"])
    client = mlflow.client()
    for ns in (a, b):
        assert [e.name for e in client.search_experiments(filter_string=f"name LIKE 'test-ns/{ns}/%'")]
        assert mlflow.champion(f"{ns}.species") is not None, f"no champion {ns}.species"
    virginica = _iris().iloc[100:]
    predicted = {}
    for ns in (a, b):
        model = mlflow.load(f"{ns}.species", mlflow.champion(f"{ns}.species").version)
        predicted[ns] = set(model.predict(virginica[list(model.feature_names_in_)]))
    assert "virginica" in predicted[a]
    assert "virginica" not in predicted[b]  # b's champion was trained on b's rows only


def test_the_dashboard_shows_each_namespace_its_own_quarantine(two, monkeypatch):
    from dashboards import data

    monkeypatch.setenv("WAREHOUSE_DB", two["env"]["WAREHOUSE_DB"])
    seen = {}
    for which, ns in two["ns"].items():
        _succeeded(two, which)
        monkeypatch.setenv("PLATFORM_NAMESPACE", ns)
        tables = data.warehouse_tables(("quarantine",)).frame
        summary = data.quarantine_summary().frame
        seen[which] = (tables[["schema", "table", "rows"]].values.tolist(), summary["rows"].tolist())
    assert seen == {"a": ([["quarantine", "flowers", 0]], [0]), "b": ([["quarantine", "flowers", 1]], [1])}
