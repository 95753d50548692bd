"""Small data through the platform vs. the same work in one plain pandas + scikit-learn process.

Two of scikit-learn's bundled datasets (iris as a JSON array with string labels, diabetes as a CSV
with NA markers, slash dates and free text: the files of tests/integration/test_own_data.py) go the
way a user takes them: `python -m platform_assets.onboard`, then `dagster asset materialize` through
the CLI for the sources and for the models (three candidates, challenger and champion each), on the
real PostgreSQL and MLflow. The baseline reads the same files with pandas and fits the same three
algorithms per dataset on a seeded split in one process, with no tracking. Prints each stage, the
ratio, and as its last line one JSON object.

    .venv/bin/python tests/benchmarks/bench_small_data.py [--multiprocess]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.test_own_data import (
    drop_own_environment,
    own_environment,
    write_diabetes,
    write_iris,
)

DATASETS = {"iris": ("iris.json", "species", ("random_forest", "gradient_boosting", "logistic_regression")),
            "diabetes": ("diabetes.csv", "progression", ("random_forest", "gradient_boosting", "linear_regression"))}


def timed(args: list[str], env: dict) -> float:
    import subprocess

    start = time.perf_counter()
    done = subprocess.run(args, cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[:4])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def materialize(selection: list[str], env: dict, multiprocess: bool = False) -> float:
    """The CLI as a user types it: no run config (a user catalogue runs in one process by default)."""
    args = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "platform_assets.definitions",
            "--select", ",".join(selection)]
    return timed(args, {**env, "PLATFORM_EXECUTOR": "multiprocess"} if multiprocess else env)


def baseline(root: Path) -> float:
    """Read, clean and fit the same algorithms in one process (imports included, as the CLI pays them)."""
    start = time.perf_counter()
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    iris = pd.read_json(root / "iris.json")
    diabetes = pd.read_csv(root / "diabetes.csv", na_values=["NA", ""]).drop(columns=["note", "date"])
    tasks = {"iris": (iris, "species", [RandomForestClassifier(random_state=0), HistGradientBoostingClassifier(),
                                         LogisticRegression(max_iter=1000)]),
             "diabetes": (diabetes, "progression", [RandomForestRegressor(random_state=0),
                                                    HistGradientBoostingRegressor(), LinearRegression()])}
    for frame, target, estimators in tasks.values():
        X, y = frame.drop(columns=[target]), frame[target]
        stratify = y if y.dtype == object else None
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.4, random_state=0, stratify=stratify)
        for est in estimators:
            prep = ColumnTransformer([("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                                       list(X.columns))])
            make_pipeline(prep, est).fit(X_train, y_train).score(X_test, y_test)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--multiprocess", action="store_true",
                        help="also time the sources with the multiprocess executor (PLATFORM_EXECUTOR=multiprocess)")
    args = parser.parse_args()
    env = own_environment(Path(tempfile.mkdtemp(prefix="bench-small-")), "b")
    root = Path(env["PLATFORM_CATALOGUE_DIR"]).parent
    write_iris(root / "iris.json")
    write_diabetes(root / "diabetes.csv")
    figures: dict[str, float] = {}
    try:
        figures["onboard"] = sum(
            timed([sys.executable, "-m", "platform_assets.onboard", str(root / file), "--name", name, "--target",
                   target, "--out", env["PLATFORM_CATALOGUE_DIR"]], env)
            for name, (file, target, _) in DATASETS.items())
        sources = [f"{zone}/{name}" for name in DATASETS for zone in ("lake/raw", "lake/clean", "warehouse/quarantine")]
        if args.multiprocess:
            figures["sources_multiprocess"] = materialize(sources, env, multiprocess=True)
        figures["sources"] = materialize(sources, env)
        models = {name: f"{name}_{target}" for name, (_, target, _) in DATASETS.items()}
        selection = [f"lake/features/{n}" for n in DATASETS]
        for name, (_, _, algorithms) in DATASETS.items():
            selection += [f"ml/candidates/{models[name]}/{a}" for a in algorithms]
            selection += [f"ml/{stage}/{models[name]}" for stage in ("challenger", "champion")]
        figures["models"] = materialize(selection, env)
        figures["baseline"] = baseline(root)
    finally:
        drop_own_environment(env)
    platform = figures["sources"] + figures["models"]
    print(f"{'stage':<28}{'seconds':>10}")
    for stage, seconds in figures.items():
        print(f"{stage:<28}{seconds:>10.1f}")
    ratio = platform / figures["baseline"]
    print(f"platform (sources + models, CLI, in-process executor): {platform:.1f} s; plain pandas + scikit-learn "
          f"in one process: {figures['baseline']:.1f} s; ratio {ratio:.1f}x")
    print(json.dumps({"figures_s": {k: round(v, 2) for k, v in figures.items()},
                      "platform_s": round(platform, 2), "ratio_platform_over_baseline": round(ratio, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
