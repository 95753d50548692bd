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
