"""Draft a catalogue folder from a CSV, JSON or Parquet file, check that it loads, print what to run next.

    python -m platform_assets.onboard data/wine.csv --name wine --target quality [--out catalogues/wine]

The folder is loaded as ``PLATFORM_CATALOGUE_DIR`` would load it before the command says it is
done, so a draft that would not load is reported, not left behind silently.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from platform_assets.onboard.draft import OnboardError, draft, write_catalogue


def model_selection(loaded, model: str) -> str:
    """The assets that train ``model`` and move its champion alias, as a --select list."""
    cfg = loaded.models.models[model]
    return ",".join([f"lake/features/{cfg.feature_set}", *(f"ml/candidates/{model}/{a}" for a in cfg.algorithms),
                     f"ml/challenger/{model}", f"ml/champion/{model}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m platform_assets.onboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="a CSV, JSON (array or lines) or Parquet file")
    parser.add_argument("--name", required=True, help="the source's name (a lower-case identifier)")
    parser.add_argument("--target", help="the column to predict: adds a feature set and a model")
    parser.add_argument("--out", type=Path, help="the catalogue folder (default: catalogues/<name>)")
    parser.add_argument("--records", help="JSON only: dotted path to the array of records, e.g. data.items")
    args = parser.parse_args(argv)
    out = (args.out or Path("catalogues") / args.name).resolve()
    try:
        result = draft(args.file, args.name, args.target, args.records)
    except (OnboardError, OSError, ValueError) as exc:
        print(f"onboard: {exc}", file=sys.stderr)
        return 2
    written = write_catalogue(result, args.name, out)
    from platform_assets.catalogue import load_catalogues

    loaded = load_catalogues({"PLATFORM_CATALOGUE_DIR": str(out)})
    for note in result["notes"]:
        print(f"  {note}")
    for path in written:
        print(f"wrote {path}")
    model = result.get("model_name")
    if model:
        cfg = loaded.models.models[model]
        print(f"model {model}: {cfg.task} of {cfg.target}, {', '.join(cfg.algorithms)}; "
              f"selection {cfg.selection_metric} (floor {cfg.floor})")
    select = f"lake/raw/{args.name},lake/clean/{args.name},warehouse/quarantine/{args.name}"
    print("next (a catalogue of your own runs its steps in one process, no --config-json needed; to keep it")
    print("apart from other catalogues on the same servers, also export PLATFORM_NAMESPACE=<name>):")
    print(f"  export PLATFORM_CATALOGUE_DIR={out}")
    print(f"  .venv/bin/dagster asset materialize -m platform_assets.definitions --select '{select}'")
    if model:
        print(f"  .venv/bin/dagster asset materialize -m platform_assets.definitions --select '{model_selection(loaded, model)}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
