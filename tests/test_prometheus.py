"""Prometheus config, rules and rule tests pass promtool; the pipeline dashboard's PromQL
parses; every metric the rules and the dashboards name is one the workers export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from flows import metrics

INFRA = Path(__file__).resolve().parent.parent / "infra"
PROMETHEUS = INFRA / "prometheus"
DASHBOARDS = INFRA / "grafana" / "dashboards"
GRAFANA_RANGES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
"""What Grafana substitutes for its range variables; any duration parses the same."""
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


@pytest.fixture(scope="module")
def promtool() -> str:
    """`bash infra/dev.sh test` installs it (Debian's prometheus package): missing is a failure."""
    path = shutil.which("promtool")
    assert path is not None, "promtool is not installed (Debian: apt-get install prometheus)"
    return path


def check(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, cwd=PROMETHEUS, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_config_is_valid(promtool: str) -> None:
    check(promtool, "check", "config", "prometheus.yml")


def test_rules_are_valid(promtool: str) -> None:
    check(promtool, "check", "rules", "rules.yml")


def test_rule_unit_tests_pass(promtool: str) -> None:
    check(promtool, "test", "rules", "rules_test.yml")


def dashboard_expressions() -> list[str]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            found += [t["expr"] for t in panel["targets"] if "expr" in t]
    return found


def concrete(expr: str) -> str:
    for variable, duration in GRAFANA_RANGES.items():
        expr = expr.replace(variable, duration)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_dashboard_expressions_parse(promtool: str, tmp_path: Path) -> None:
    expressions = dashboard_expressions()
    assert expressions
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": concrete(e)} for i, e in enumerate(expressions)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    check(promtool, "check", "rules", str(path))


def exported_series() -> set[str]:
    names = set()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase | metrics.BatchHistogram):
            for family in metric.describe():
                names |= {family.name + suffix for suffix in SERIES_SUFFIXES[family.type]}
    return names


def rule_expressions() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


@pytest.mark.parametrize("source", ["rules", "dashboards"])
def test_every_metric_used_is_exported_by_the_workers(source: str) -> None:
    expressions = rule_expressions() if source == "rules" else dashboard_expressions()
    used = {name for e in expressions for name in re.findall(r"\bmeterflow_\w+", e)}
    assert used
    assert used <= exported_series(), used - exported_series()
