"""The request checks' fast path for numbers refuses exactly what the slow path refused, with its words."""

import json

import pytest

from serving import contract

SPEC = contract.FeatureSpec(("temperature", "count", "model"), ("double", "long", "string"))
GOOD = {"temperature": 61.5, "count": 3, "model": "A"}


def _parse(records):
    body = json.dumps({"model": "m", "records": records}).encode()
    return contract.parse_predict(body, "application/json", {"m": SPEC})


@pytest.mark.parametrize("record", [GOOD, {"temperature": None, "count": None, "model": None},
                                    {**GOOD, "temperature": -1e9, "count": 10**9}, {**GOOD, "extra": "ignored"}])
def test_valid_records_pass(record):
    assert _parse([record]).records == [record]


@pytest.mark.parametrize(("value", "message"), [
    (True, "field 'temperature' must be a number; got True"),
    ("hot", "field 'temperature' must be a number; got 'hot'"),
    (1e12, "field 'temperature' must be a finite number within ±1e+09; got 1000000000000.0"),
    (-(10**10), "must be a finite number within ±1e+09"),
    ([1], "must be a number; got [1]"),
])
def test_bad_numbers_are_refused_with_the_field_and_the_reason(value, message):
    with pytest.raises(contract.RequestError) as err:
        _parse([GOOD, {**GOOD, "temperature": value}])
    assert err.value.status == 400 and err.value.code == "invalid_request"
    assert err.value.message.startswith("records[1]: field 'temperature' ") and message in err.value.message


def test_nan_never_passes():
    body = b'{"model": "m", "records": [{"temperature": NaN, "count": 1, "model": "A"}]}'
    with pytest.raises(contract.RequestError, match="finite number"):
        contract.parse_predict(body, "application/json", {"m": SPEC})


def test_text_and_missing_fields_keep_their_messages():
    with pytest.raises(contract.RequestError, match=r"records\[0\]: field 'model' must be a string; got 3"):
        _parse([{**GOOD, "model": 3}])
    with pytest.raises(contract.RequestError, match=r"records\[0\]: missing field\(s\) count for model m"):
        _parse([{"temperature": 1.0, "model": "A"}])


def test_numeric_features_come_back_as_the_float_matrix_the_runner_takes():
    spec = contract.FeatureSpec(("temperature", "count"), ("double", "long"))
    body = json.dumps({"model": "m", "records": [{"temperature": 61.5, "count": 3, "x": "ignored"},
                                                {"temperature": None, "count": -2}]}).encode()
    parsed = contract.parse_predict(body, "application/json", {"m": spec})
    assert parsed.rows.dtype == "float64" and parsed.rows.shape == (2, 2)
    assert parsed.rows[0].tolist() == [61.5, 3.0] and parsed.rows[1, 1] == -2.0 and parsed.rows[1, 0] != parsed.rows[1, 0]
    assert _parse([GOOD]).rows.tolist() == [[61.5, 3.0]]  # the numeric features only; text is checked per record


@pytest.mark.parametrize("body", [b'{"model": "m", "records": [', b"\xff\xfe", b"[1, 2,]"])
def test_bodies_that_are_not_json_are_refused_with_json_s_own_words(body):
    with pytest.raises(contract.RequestError) as err:
        contract.parse_predict(body, "application/json", {"m": SPEC})
    assert err.value.status == 400 and err.value.message.startswith("body is not valid JSON: ")


def test_the_fast_response_renders_the_same_json():
    content = {"model": "m", "predictions": [1, "a", True], "probabilities": [{"0": 0.1, "1": 0.9}], "version": None}
    assert json.loads(contract.FastJSONResponse(content).body) == content
