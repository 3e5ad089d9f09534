"""What the chart's Grafana dashboard and alert rules read from the operator: their PromQL
expressions, the metric names in them, and the names a replica's registry serves."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "charts" / "cadenza" / "dashboards" / "cadenza.json"
)

_NAME = re.compile(r"\bcadenza_[a-z0-9_]*[a-z0-9]\b")
# The sample names each metric type serves beside the family's own name.
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def dashboard_exprs(dashboard: Mapping[str, Any] | None = None) -> list[str]:
    """Every query of every panel (rows' nested panels too) and of every templating variable."""
    dash = dashboard if dashboard is not None else json.loads(DASHBOARD.read_text())
    exprs: list[str] = []
    panels = list(dash.get("panels", []))
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
    for variable in dash.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def rule_exprs(prometheus_rule: Mapping[str, Any]) -> dict[str, str]:
    """Alert (or recording rule) name -> expression, from a rendered PrometheusRule."""
    return {
        rule.get("alert") or rule["record"]: rule["expr"]
        for group in prometheus_rule["spec"]["groups"]
        for rule in group["rules"]
    }


def metric_names(exprs: Iterable[str]) -> set[str]:
    """The ``cadenza_*`` series names the expressions select."""
    return {name for expr in exprs for name in _NAME.findall(expr)}


def served_names(registry: CollectorRegistry) -> dict[str, str]:
    """Series name -> its family's name, for every metric ``registry`` serves."""
    served = {}
    for family in registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            served[family.name + suffix] = family.name
    return served
