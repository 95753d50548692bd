"""`make demo`'s reading of a run: a challenger the gate kept out is the gate working, not a failure."""

from __future__ import annotations

import importlib.util

from platform_assets.settings import PROJECT_ROOT

_spec = importlib.util.spec_from_file_location("run_demo", PROJECT_ROOT / "deploy" / "local" / "run_demo.py")
run_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_demo)

CHECK_FAILED = "dagster._core.errors.DagsterAssetCheckFailedError: 1 blocking asset check failed with ERROR severity:\n"


def test_a_refused_challenger_alone_is_the_gate_at_work():
    assert run_demo.only_gate_refused(CHECK_FAILED + "ml/challenger/remaining_useful_life: beats_champion\n")


def test_any_other_failed_check_or_error_is_a_failure():
    both = CHECK_FAILED.replace("1 blocking", "2 blocking") + (
        "ml/challenger/x: beats_champion\nml/challenger/x: clears_floor")
    assert not run_demo.only_gate_refused(both)
    assert not run_demo.only_gate_refused(CHECK_FAILED + "ml/challenger/x: inputs_passed_checks")
    assert not run_demo.only_gate_refused(CHECK_FAILED)  # no check named: not known to be the gate
    assert not run_demo.only_gate_refused("psycopg2.OperationalError: server closed the connection: beats_champion")
