"""The source catalogue: the shipped file is valid, and mistakes get messages that point at them."""

import textwrap

import pytest

from platform_assets.sources.config import CatalogueError, load_catalogue


def write(tmp_path, body: str):
    path = tmp_path / "sources.yaml"
    path.write_text(textwrap.dedent(body))
    return path


BASE = """
partitions: {start_date: "2026-11-01"}
sources:
"""


def test_shipped_catalogue_declares_every_kind():
    catalogue = load_catalogue()
    assert {s.kind for s in catalogue.sources.values()} == {"csv", "json", "parquet", "postgres", "mysql", "rest"}


def test_unknown_kind_is_named(tmp_path):
    path = write(tmp_path, BASE + """
      things: {kind: excel, path: a.xlsx, contract: {columns: {a: {type: string}}}}
    """)
    with pytest.raises(CatalogueError) as err:
        load_catalogue(path)
    assert "sources.things" in str(err.value) and str(path) in str(err.value)


def test_primary_key_must_be_declared(tmp_path):
    path = write(tmp_path, BASE + """
      readings:
        kind: csv
        path: r.csv
        contract: {primary_key: [id], columns: {a: {type: string}}}
    """)
    with pytest.raises(CatalogueError, match="primary key column 'id' is not declared"):
        load_catalogue(path)


def test_partition_column_must_be_a_time(tmp_path):
    path = write(tmp_path, BASE + """
      readings:
        kind: csv
        path: r/{date}.csv
        partitioning: {column: a}
        contract: {columns: {a: {type: string}}}
    """)
    with pytest.raises(CatalogueError, match="must be a timestamp or date"):
        load_catalogue(path)


def test_unknown_placeholder_and_field_typos_are_rejected(tmp_path):
    path = write(tmp_path, BASE + """
      readings: {kind: csv, path: "r/{day}.csv", contract: {columns: {a: {type: string}}}}
      other: {kind: csv, path: o.csv, contarct: {}, contract: {columns: {a: {type: string}}}}
    """)
    with pytest.raises(CatalogueError) as err:
        load_catalogue(path)
    assert "unknown placeholder" in str(err.value) and "contarct" in str(err.value)


def test_database_source_needs_table_or_query(tmp_path):
    path = write(tmp_path, BASE + """
      m: {kind: postgres, connection: ops_postgres, contract: {columns: {a: {type: string}}}}
    """)
    with pytest.raises(CatalogueError, match="exactly one of table or query"):
        load_catalogue(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(CatalogueError, match="not valid YAML"):
        load_catalogue(write(tmp_path, "sources: [unclosed"))
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(tmp_path / "nope.yaml")
