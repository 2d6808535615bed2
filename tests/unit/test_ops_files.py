"""The files in ops/ ask only for what the service exports (names taken from its registry)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from gateway.metrics import exported_families, sample_names

OPS = Path(__file__).resolve().parents[2] / "ops"
METRIC = re.compile(r"\bywtb_[a-z0-9_]+\b")

#: The families the ops issue asks for, by name.
ISSUE_FAMILIES = {
    "ywtb_http_requests",
    "ywtb_http_request_duration_seconds",
    "ywtb_platform_calls",
    "ywtb_platform_call_duration_seconds",
    "ywtb_circuit_state",
    "ywtb_outbox_pending",
    "ywtb_outbox_oldest_age_seconds",
    "ywtb_relay_published",
    "ywtb_consumer_lag_messages",
    "ywtb_consumer_lag_seconds",
    "ywtb_dead_letters",
    "ywtb_callback_refusals",
    "ywtb_evidence_fetches",
    "ywtb_applications",
}


def expressions(node: Any) -> Iterator[str]:
    """Every ``expr`` in a Grafana dashboard, however deeply its panels nest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def families_named(exprs: list[str]) -> set[str]:
    """The exported families whose series the expressions name."""
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    return {
        family
        for family, kind in exported_families().items()
        if sample_names({family: kind}) & used
    }


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_service_exports_every_family_the_issue_names() -> None:
    assert set(exported_families()) >= ISSUE_FAMILIES


def test_every_dashboard_query_names_only_metrics_the_service_exports() -> None:
    dashboard = json.loads((OPS / "grafana" / "ywtb.json").read_text())
    exprs = list(expressions(dashboard))
    series = sample_names(exported_families())

    assert len(exprs) >= 15
    for expr in exprs:
        named = METRIC.findall(expr)
        assert named, f"{expr!r} names no ywtb_ metric"
        assert set(named) <= series, f"{expr!r} names {set(named) - series}, not exported"
    assert families_named(exprs) >= ISSUE_FAMILIES, "every family of the issue is on the dashboard"


def test_every_alert_names_exported_metrics_and_has_its_runbook_and_tests() -> None:
    series = sample_names(exported_families())
    tests = yaml.safe_load((OPS / "prometheus" / "alerts.test.yml").read_text())
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    rules = alert_rules()

    assert len(rules) >= 8
    for rule in rules:
        alert = rule["alert"]
        named = set(METRIC.findall(rule["expr"]))
        assert named and named <= series, (alert, named - series)
        runbook = OPS / "runbooks" / f"{alert}.md"
        assert rule["annotations"]["runbook_url"] == f"ops/runbooks/{alert}.md"
        text = runbook.read_text()
        for heading in ("## What it means", "## Confirm it", "## What to do"):
            assert heading in text, (runbook.name, heading)
        assert "/ops" in text and "ywtb ops status" in text, runbook.name
        outcomes = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == alert]
        assert True in outcomes and False in outcomes, f"{alert}: tested firing and not firing"
    assert {p.stem for p in (OPS / "runbooks").glob("*.md")} == {r["alert"] for r in rules}
