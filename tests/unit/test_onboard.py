"""Onboarding drafts a contract and a model from the data, and the draft loads as a catalogue folder."""

import json

import pandas as pd
import pytest

from platform_assets.catalogue import load_catalogues
from platform_assets.onboard.__main__ import main
from platform_assets.onboard.draft import OnboardError, draft
from platform_assets.onboard.infer import candidate_keys, infer_column, infer_task, snake_case


def col(*values):
    return infer_column(pd.Series(list(values), dtype=object))


def test_types_required_and_null_markers():
    assert col("1", "2", "NA") == {"type": "int", "min": 0, "max": 3}
    assert col("1.5", "2.25")["type"] == "float" and col("1.5", "2.25")["required"] is True
    assert col("true", "false", "yes")["type"] == "bool"
    assert col(True, False)["type"] == "bool"
    assert col({"a": 1}, [1])["type"] == "json"
    assert col("2024-01-05", "2024-02-01") == {"type": "date", "required": True}
    assert col("2024-01-05T10:00:00Z", "2024-02-01 11:30")["type"] == "timestamp"
    assert col("31/01/2024", "01/02/2024") == {"type": "date", "format": "%d/%m/%Y", "required": True}
    assert col("Zoe", "Ann", "Bob")["type"] == "string" and "allowed" not in col("Zoe", "Ann", "Bob")


def test_allowed_values_for_low_cardinality_strings_and_ranges_with_margin():
    assert col(*["red", "white"] * 5)["allowed"] == ["red", "white"]
    spec = col("10", "20", "30")
    assert (spec["min"], spec["max"]) == (8, 32)  # 10% of the span either side
    assert col("0.5", "0.9")["min"] >= 0  # never below zero for data that is not negative
    assert col("-5.0", "5.0")["min"] == -6.0


def test_candidate_keys_and_task_from_the_target():
    frame = pd.DataFrame({"name": ["a", "b", "c"], "sample_id": ["1", "2", "3"], "x": ["1", "1", "2"]})
    columns = {c: infer_column(frame[c]) for c in frame}
    assert candidate_keys(frame, columns) == ["sample_id", "name"]
    assert infer_task({"type": "string"}, pd.Series(["a"])) == "classification"
    assert infer_task({"type": "int"}, pd.Series([0, 1, 2] * 5)) == "classification"
    assert infer_task({"type": "int"}, pd.Series(range(100))) == "regression"
    assert infer_task({"type": "float"}, pd.Series([0.1, 0.2])) == "regression"
    assert snake_case("Sepal Length (cm)") == "sepal_length_cm" and snake_case("2nd") == "c_2nd"


def test_draft_of_a_json_array_with_string_labels(tmp_path):
    path = tmp_path / "iris.json"
    path.write_text(json.dumps([{"Petal Width": 0.2 + i / 100, "species": ["setosa", "virginica"][i % 2]}
                                for i in range(20)]))
    result = draft(path, "iris", target="species")
    assert result["source"]["kind"] == "json" and result["source"]["path"] == str(path.resolve())
    assert result["source"]["rename"] == {"Petal Width": "petal_width"}
    assert result["source"]["contract"]["columns"]["species"]["allowed"] == ["setosa", "virginica"]
    assert result["model"]["task"] == "classification" and result["model"]["selection_metric"] == "balanced_accuracy"
    assert result["feature_set"] == {"table": "lake/clean/iris"}


def test_command_writes_a_folder_that_loads_and_keeps_other_entries(tmp_path, capsys):
    data = pd.DataFrame({"patient_id": range(30), "bmi": ["NA"] + [str(20 + i) for i in range(29)],
                         "seen": pd.date_range("2024-01-01", periods=30).strftime("%Y/%m/%d"),
                         "progression": [float(i * 7 % 31) + 0.5 for i in range(30)]})
    (tmp_path / "d.csv").write_text(data.to_csv(index=False, sep=";"))
    out = tmp_path / "catalogue"
    assert main([str(tmp_path / "d.csv"), "--name", "diabetes", "--target", "progression", "--out", str(out)]) == 0
    assert "model diabetes_progression: regression of progression" in capsys.readouterr().out
    (tmp_path / "e.csv").write_text("k,v\na,1\nb,2\n")
    assert main([str(tmp_path / "e.csv"), "--name", "other", "--out", str(out)]) == 0
    loaded = load_catalogues({"PLATFORM_CATALOGUE_DIR": str(out)})
    source = loaded.sources.sources["diabetes"]
    assert source.delimiter == ";" and source.contract.primary_key == ("patient_id",)
    assert source.contract.columns["bmi"].type == "int" and not source.contract.columns["bmi"].required
    assert source.contract.columns["seen"].type == "date"
    assert set(loaded.sources.sources) == {"diabetes", "other"}
    assert loaded.models.feature_sets["diabetes"].entity == "patient_id"


def test_unknown_target_and_file_type_are_named(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    with pytest.raises(OnboardError, match=r"--target 'z' is not a column of a.csv \(columns: x, y\)"):
        draft(tmp_path / "a.csv", "a", target="z")
    (tmp_path / "a.xlsx").write_text("")
    with pytest.raises(OnboardError, match="unknown file type '.xlsx'"):
        draft(tmp_path / "a.xlsx", "a")
