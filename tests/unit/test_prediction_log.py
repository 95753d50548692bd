"""What the prediction service logs per prediction, for numbers and for class labels of any type."""

from serving.prediction_log import logged_prediction


def test_binary_numeric_model_logs_the_positive_class_probability():
    row = logged_prediction(0, {"0": 0.8, "1": 0.2})
    assert row == {"prediction": 0.0, "label": "0", "probability": 0.2}


def test_string_labels_are_logged_as_text_with_the_predicted_class_probability():
    row = logged_prediction("virginica", {"setosa": 0.05, "versicolor": 0.15, "virginica": 0.8})
    assert row == {"prediction": None, "label": "virginica", "probability": 0.8}


def test_boolean_labels_are_labels_not_numbers():
    assert logged_prediction(True, {"False": 0.3, "True": 0.7}) == {
        "prediction": None, "label": "True", "probability": 0.7}


def test_regression_values_have_no_probability():
    assert logged_prediction(42.5, None) == {"prediction": 42.5, "label": "42.5", "probability": None}


def test_the_log_queue_keeps_the_newest_rows_and_counts_the_dropped():
    from serving.prediction_log import DROPPED, PredictionLog

    log = PredictionLog(lambda: None, interval_seconds=3600, max_rows=5)
    before = DROPPED._value.get()
    log.add("m", "1", [0, 1, 0], [{"0": 0.9, "1": 0.1}, {"0": 0.2, "1": 0.8}, {"0": 0.7, "1": 0.3}], None)
    log.add("m", "1", [1, 1, 0, 1], [{"0": 0.4, "1": 0.6}] * 4, ["a", "b", "c", "d"])
    assert log.pending == 5 and DROPPED._value.get() - before == 2
    rows = log.rows(log._chunks)
    assert [r["label"] for r in rows] == ["0", "1", "1", "0", "1"]  # the two oldest dropped, order kept
    assert [r["machine_id"] for r in rows] == [None, "a", "b", "c", "d"]
    assert rows[0]["probability"] == 0.3 and str(rows[0]["predicted_at"].tz) == "UTC"
