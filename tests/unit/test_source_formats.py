"""Sources read what people have: JSON arrays, JSON Lines and records inside a document; CSV dialects."""

import textwrap

import dagster as dg
import pytest

from platform_assets.sources.config import CatalogueError, Contract, load_catalogue
from platform_assets.sources.contract import apply_contract
from platform_assets.sources.factory import build_source_assets
from platform_assets.sources.parse import RawFormatError, ReadOptions, count_records, parse_objects
from resources.lake import LakeResource
from resources.sources import FileStoreResource, RawObject

ARRAY = b'[{"id": 1, "species": "setosa"}, {"id": 2, "species": "virginica"}, 7]'
LINES = b'{"id": 1, "species": "setosa"}\n{"id": 2, "species": "virginica"}\n'
DOCUMENT = b'{"meta": {"count": 2}, "data": {"items": [{"id": 1, "species": "setosa"}, {"id": 2}]}}'


def parse(data: bytes, **options):
    return parse_objects("json", [RawObject("f.json", data)], options=ReadOptions(**options))


@pytest.mark.parametrize("data, options", [(ARRAY, {}), (ARRAY, {"json_format": "array"}), (LINES, {}),
                                           (DOCUMENT, {"records": "data.items"})])
def test_json_shapes_detected_or_declared(data, options):
    parsed = parse(data, **options)
    assert parsed.frame["id"].tolist() == [1, 2]
    assert parsed.frame["_source_row"].tolist() == [1, 2]
    assert count_records("json", [RawObject("f.json", data)], options=ReadOptions(**options)) == \
        len(parsed.frame) + len(parsed.unparseable)


def test_array_item_that_is_not_a_record_is_quarantined_by_its_number():
    parsed = parse(ARRAY)
    assert [(u.source_row, u.reason) for u in parsed.unparseable] == [(3, "array item 3 is a JSON int, not a record")]


def test_array_read_as_json_lines_names_the_format_expected():
    with pytest.raises(RawFormatError, match=r"JSON Lines expected .* one JSON list document; set format: array"):
        parse(b'[\n{"id": 1},\n{"id": 2}\n]\n', json_format="lines")


def test_lines_read_as_an_array_names_the_format_expected():
    with pytest.raises(RawFormatError, match=r"not a JSON array of records \(format: array\)"):
        parse(LINES, json_format="array")


def test_a_document_without_records_path_says_how_to_read_it():
    with pytest.raises(RawFormatError, match=r"JSON dict document; set records: <path"):
        parse(b'{\n  "data": {"items": [{"id": 1}]}\n}\n')


def test_records_path_that_is_not_there_lists_the_keys_found():
    with pytest.raises(RawFormatError, match=r"'data.rows' not found: 'rows' is not a key of data \(found: items\)"):
        parse(DOCUMENT, records="data.rows")


def test_csv_delimiter_quote_encoding_and_header_options():
    data = "nom;ville\n'Zoë';'Orléans; Loiret'\n".encode("latin-1")
    parsed = parse_objects("csv", [RawObject("f.csv", data)],
                           options=ReadOptions(delimiter=";", quote="'", encoding="latin-1"))
    assert parsed.frame[["nom", "ville"]].values.tolist() == [["Zoë", "Orléans; Loiret"]]
    headless = parse_objects("csv", [RawObject("f.csv", b"1,a\n2,b,extra\n3,c\n")],
                             options=ReadOptions(header=False, column_names=("id", "name")))
    assert headless.frame["name"].tolist() == ["a", "c"] and headless.frame["_source_row"].tolist() == [1, 3]
    assert headless.unparseable[0].source_row == 2 and "the contract declares 2" in headless.unparseable[0].reason
    assert count_records("csv", [RawObject("f.csv", b"1,a\n2,b\n")], options=ReadOptions(header=False)) == 2


def test_wrong_encoding_is_named():
    with pytest.raises(RawFormatError, match="not utf-8 text"):
        parse("[{\"a\": \"é\"}]".encode("latin-1"))


def _catalogue(tmp_path, body: str):
    path = tmp_path / "sources.yaml"
    path.write_text(textwrap.dedent(body))
    return load_catalogue(path)


def test_options_of_another_kind_and_unknown_encodings_are_rejected(tmp_path):
    with pytest.raises(CatalogueError, match="delimiter: not an option of json sources"):
        _catalogue(tmp_path, """
        sources:
          a: {kind: json, path: a.json, delimiter: ";", contract: {columns: {x: {type: string}}}}
        """)
    with pytest.raises(CatalogueError, match="unknown encoding 'klingon'"):
        _catalogue(tmp_path, """
        sources:
          a: {kind: csv, path: a.csv, encoding: klingon, contract: {columns: {x: {type: string}}}}
        """)


def test_a_catalogue_of_snapshots_needs_no_calendar_but_partitioned_sources_do(tmp_path):
    assert _catalogue(tmp_path, """
        sources:
          a: {kind: json, path: a.json, format: array, contract: {columns: {x: {type: string}}}}
        """).partitions is None
    with pytest.raises(CatalogueError, match=r"source\(s\) a are partitioned: declare partitions"):
        _catalogue(tmp_path, """
        sources:
          a: {kind: csv, path: "a/{date}.csv", partitioning: {column: t}, contract: {columns: {t: {type: date}}}}
        """)


def test_clean_asset_warns_of_a_declared_column_missing_from_the_file(tmp_path):
    """Through the real asset: the warning is in the materialisation metadata and a WARN check."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "iris.json").write_bytes(ARRAY)
    catalogue = _catalogue(tmp_path, """
        sources:
          iris:
            kind: json
            path: iris.json
            contract:
              columns:
                id: {type: int, required: true}
                species: {type: string}
                petal_width: {type: float}
        """)
    result = dg.materialize(
        build_source_assets(catalogue),
        resources={"lake": LakeResource(root=str(tmp_path / "lake")),
                   "source_files": FileStoreResource(root=str(tmp_path / "files")),
                   "lake_io_manager": dg.mem_io_manager, "warehouse_io_manager": dg.mem_io_manager},
    )
    assert result.success
    clean = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(["lake", "clean", "iris"])]
    assert clean[0].materialization.metadata["missing_columns"].value == "petal_width"
    checks = {e.event_specific_data.check_name: e.event_specific_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert not checks["declared_columns_present"].passed
    assert checks["declared_columns_present"].severity == dg.AssetCheckSeverity.WARN
    assert checks["raw_records_reconciled"].passed  # 2 records + the non-record item, quarantined


def test_required_declared_column_missing_still_fails_wholesale():
    contract = Contract.model_validate({"columns": {"id": {"type": "int"}, "petal_width": {"type": "float", "required": True}}})
    with pytest.raises(ValueError, match=r"required column\(s\) petal_width missing from f.json"):
        apply_contract("iris", parse(LINES).frame, contract)


def test_records_are_counted_in_any_encoding_and_with_a_byte_order_mark():
    utf16 = "id,name\n1,Zoë\n2,Émile\n".encode("utf-16")
    opts = ReadOptions(encoding="utf-16")
    parsed = parse_objects("csv", [RawObject("f.csv", utf16)], options=opts)
    assert parsed.frame["name"].tolist() == ["Zoë", "Émile"]
    assert count_records("csv", [RawObject("f.csv", utf16)], options=opts) == 2
    bom = b"\xef\xbb\xbf" + ARRAY
    assert len(parse(bom).frame) == 2 and count_records("json", [RawObject("f.json", bom)]) == 3
