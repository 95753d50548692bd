"""The catalogue entries drafted from one file, and the catalogue folder they are written to.

The file is read by the platform's own parser (so the draft describes what ingestion will see),
the contract and the model are inferred (``infer``), and the folder gets ``sources.yaml`` and,
with a target, ``models.yaml`` (entries already in the folder's files are kept; those of this name
are replaced). The source points at the file by absolute path.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import yaml

from platform_assets.onboard.infer import (
    candidate_keys,
    draft_contract,
    draft_model,
    looks_like_id,
    snake_case,
)
from platform_assets.sources.parse import ReadOptions, parse_objects
from resources.sources import RawObject

KINDS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json",
         ".parquet": "parquet", ".pq": "parquet"}


class OnboardError(ValueError):
    """The file cannot be drafted; the message says what to change."""


def _encoding(data: bytes) -> str:
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "cp1252"  # the usual encoding of spreadsheet exports that are not UTF-8


def _delimiter(data: bytes, encoding: str) -> str:
    sample = data[:65536].decode(encoding, errors="replace")
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_options(path: Path, kind: str, data: bytes, records: str | None) -> dict:
    """The source options this file needs beyond the defaults (what sources.yaml will say)."""
    options: dict = {}
    if kind in ("csv", "json"):
        encoding = _encoding(data)
        if encoding != "utf-8":
            options["encoding"] = encoding
    if kind == "csv":
        delimiter = _delimiter(data, options.get("encoding", "utf-8"))
        if delimiter != ",":
            options["delimiter"] = delimiter
    if kind == "json" and records:
        options["records"] = records
    return options


def draft(path: Path, name: str, target: str | None = None, records: str | None = None) -> dict:
    """The catalogue entries for ``path``: {"source": ..., "feature_set": ..., "model": ..., "notes": [...]}."""
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise OnboardError(f"{path}: unknown file type {path.suffix!r}; known: {', '.join(sorted(KINDS))}")
    if not name.isidentifier() or name != name.lower():
        raise OnboardError(f"--name {name!r} must be a lower-case identifier (e.g. {snake_case(name)})")
    data = path.read_bytes()
    options = read_options(path, kind, data, records)
    parse_opts = ReadOptions(records=options.get("records"), delimiter=options.get("delimiter", ","),
                             encoding=options.get("encoding", "utf-8"))
    parsed = parse_objects(kind, [RawObject(path.name, data)], options=parse_opts)
    frame = parsed.frame
    if frame.empty:
        raise OnboardError(f"{path}: no records found")
    columns, rename = draft_contract(frame)
    clean = frame.rename(columns=rename)
    keys = candidate_keys(clean, columns)
    entity = keys[0] if keys and keys[0] != target and looks_like_id(keys[0]) else None
    contract: dict = {}
    if entity:
        contract["primary_key"] = [entity]
    contract["columns"] = columns
    source = {"kind": kind, "description": f"{path.name}, onboarded {dt.date.today().isoformat()}.",
              "path": str(path.resolve()), **options}
    if rename:
        source["rename"] = rename
    source["contract"] = contract
    notes = [f"{len(frame)} records, {len(columns)} columns",
             f"candidate primary keys: {', '.join(keys) or 'none'}"]
    if parsed.unparseable:
        notes.append(f"{len(parsed.unparseable)} records could not be parsed (they will be quarantined); first: "
                     f"row {parsed.unparseable[0].source_row}: {parsed.unparseable[0].reason}")
    out = {"source": source, "notes": notes}
    if target:
        target_col = rename.get(target, target)
        if target_col not in columns:
            raise OnboardError(f"--target {target!r} is not a column of {path.name} "
                               f"(columns: {', '.join(map(str, frame.columns[:-2]))})")
        out["feature_set"] = {"table": f"lake/clean/{name}", **({"entity": entity} if entity else {})}
        out["model"] = draft_model(name, target_col, columns, clean[target_col])
        out["model_name"] = snake_case(f"{name}_{target_col}") if target_col != name else name
        times = [c for c, s in columns.items() if s["type"] in ("date", "timestamp")]
        if times:
            notes.append(f"date/timestamp column(s) {', '.join(times)}: the split is a seeded shuffle; set the feature "
                         f"set's time: to one of them for a time-ordered split")
    return out


def _merge(path: Path, section: str, name: str, entry: dict, base: dict) -> dict:
    doc = (yaml.safe_load(path.read_text()) if path.exists() else None) or dict(base)
    doc.setdefault(section, {})
    doc[section] = {**(doc[section] or {}), name: entry}
    return doc


def write_catalogue(result: dict, name: str, out: Path) -> list[Path]:
    """Write (or update) sources.yaml and models.yaml in ``out``; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# Drafted by `python -m platform_assets.onboard` on {dt.date.today().isoformat()}: review, then\n"
              f"#   PLATFORM_CATALOGUE_DIR={out} dagster asset materialize -m platform_assets.definitions ...\n"
              + "".join(f"# {n}\n" for n in result["notes"]))
    written = []
    sources = out / "sources.yaml"
    doc = _merge(sources, "sources", name, result["source"], {})
    sources.write_text(header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120))
    written.append(sources)
    if "model" in result:
        models = out / "models.yaml"
        doc = _merge(models, "feature_sets", name, result["feature_set"], {"feature_sets": {}, "models": {}})
        doc = {**doc, "models": {**(doc.get("models") or {}), result["model_name"]: result["model"]}}
        models.write_text(header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120))
        written.append(models)
    return written


