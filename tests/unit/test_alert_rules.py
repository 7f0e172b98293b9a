"""wva's alert rules (deploy/prometheus/wva-alerts.yaml) checked and unit-tested with the real promtool.

promtool comes with the Prometheus server package; without it these tests skip, except under CI.
Besides running the promtool unit tests (tests/unit/alerts/wva-alerts.test.yaml), each alert is
mutated to one that never fires and one that always fires: the unit tests must fail for both,
which proves every alert has a case where it fires and one where it must not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from binaries import assert_rules_check_passes, require_promtool, run_promtool

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "wva-alerts.yaml"
CHART_RULES = REPO / "charts" / "workload-variant-autoscaler" / "files" / "wva-alerts.yaml"
UNIT_TESTS = Path(__file__).resolve().parent / "alerts" / "wva-alerts.test.yaml"
TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"
RUNBOOK_PREFIX = "https://github.com/llm-d-incubation/wva/blob/main/docs/troubleshooting.md#"


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


ALERTS = [rule["alert"] for rule in _rules()]


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_promtool()


def test_the_chart_copy_is_the_plain_file() -> None:
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), "run make sync-monitoring"


def test_promtool_check_rules_accepts_both_copies(promtool: str) -> None:
    assert_rules_check_passes(promtool, (RULES, CHART_RULES), len(ALERTS))


def test_promtool_check_rules_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(RULES.read_text(encoding="utf-8").replace("absent(wva_leader)", "absent(wva_leader"))
    result = run_promtool(promtool, "check", "rules", broken)
    assert result.returncode != 0


def test_promtool_unit_tests_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == set(ALERTS)
    assert quiet == set(ALERTS)


def _mutated(tmp_path: Path, alert: str, expr: str) -> Path:
    """A copy of the unit tests whose rule file has ``alert``'s expression replaced."""
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in data["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["expr"] = expr
                rule.pop("for", None)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(data), encoding="utf-8")
    tests = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))
    tests["rule_files"] = [str(rules)]
    # only the cases about this alert: each promtool run stays well under a second
    tests["tests"] = [c for c in tests["tests"] if any(t["alertname"] == alert for t in c["alert_rule_test"])]
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests), encoding="utf-8")
    return path


@pytest.mark.parametrize("alert", ALERTS)
@pytest.mark.parametrize(("mutation", "expr"), [("never-fires", "vector(1) > 1"), ("always-fires", "vector(1)")])
def test_the_unit_tests_catch_a_rule_that_never_or_always_fires(
    promtool: str, tmp_path: Path, alert: str, mutation: str, expr: str
) -> None:
    result = run_promtool(promtool, "test", "rules", _mutated(tmp_path, alert, expr))
    assert result.returncode != 0, f"the unit tests of {alert} pass with a rule that {mutation}"
    assert f"alertname: {alert}" in result.stdout + result.stderr


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_has_a_runbook_in_the_troubleshooting_guide() -> None:
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    assert "\n## Alerts and runbooks\n" in text
    section = text.split("\n## Alerts and runbooks\n", 1)[1]
    anchors = {_slug(h) for h in re.findall(r"^### (.+)$", section, flags=re.MULTILINE)}
    for rule in _rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_PREFIX), url
        assert url.removeprefix(RUNBOOK_PREFIX) == rule["alert"].lower()
        assert rule["alert"].lower() in anchors, f"no '### {rule['alert']}' runbook in docs/troubleshooting.md"
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
