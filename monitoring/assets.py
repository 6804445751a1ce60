"""Vigil's Prometheus and Grafana assets as data.

The alert rules and the dashboard are the single source of every PromQL expression we ship;
tests evaluate them against a real Prometheus and the Kubernetes generator packs them into
ConfigMaps, so both read them through these helpers rather than parsing the files themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, cast

import yaml

ALERTS = "prometheus/alerts.yml"
PROMETHEUS_CONFIG = "prometheus/prometheus.yml"
DASHBOARD = "grafana/dashboards/vigil.json"
DATASOURCE_PROVISIONING = "grafana/provisioning/datasources/vigil.yml"
DASHBOARD_PROVISIONING = "grafana/provisioning/dashboards/vigil.yml"

Source = Literal["alert", "panel", "variable"]


@dataclass(frozen=True)
class AlertRule:
    group: str
    name: str
    expr: str
    for_: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it lives (alert name, or panel title and refId)."""

    source: Source
    name: str
    expr: str
    instant: bool = False


def asset(relative: str) -> Traversable:
    """The packaged file (works from a checkout and from an installed wheel)."""
    return resources.files("monitoring").joinpath(relative)


def asset_path(relative: str) -> Path:
    """The packaged file on disk, for tools that want a path (promtool, kubectl)."""
    path = Path(str(asset(relative)))
    if not path.is_file():
        raise FileNotFoundError(f"monitoring asset {relative} not found at {path}")
    return path


def read_text(relative: str) -> str:
    return asset(relative).read_text(encoding="utf-8")


def load_rule_file(relative: str = ALERTS) -> dict[str, Any]:
    data = yaml.safe_load(read_text(relative))
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise ValueError(f"{relative}: not a Prometheus rule file (no `groups` list)")
    return cast(dict[str, Any], data)


def alert_rules(relative: str = ALERTS) -> list[AlertRule]:
    rules: list[AlertRule] = []
    for group in load_rule_file(relative)["groups"]:
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue  # recording rules carry no alert semantics
            rules.append(
                AlertRule(
                    group=str(group["name"]),
                    name=str(rule["alert"]),
                    expr=str(rule["expr"]).strip(),
                    for_=str(rule.get("for", "0s")),
                    labels=dict(rule.get("labels", {})),
                    annotations=dict(rule.get("annotations", {})),
                )
            )
    return rules


def load_dashboard(relative: str = DASHBOARD) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(read_text(relative)))


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: Mapping[str, Any] | None = None) -> list[Query]:
    dashboard = dashboard if dashboard is not None else load_dashboard()
    queries: list[Query] = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = str(target.get("expr", "")).strip()
            if expr:
                name = f"{panel.get('title', '?')} / {target.get('refId', '?')}"
                instant = bool(target.get("instant")) and not target.get("range")
                queries.append(Query("panel", name, expr, instant))
    return queries


_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<metric>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$"
)


def variable_queries(dashboard: Mapping[str, Any] | None = None) -> list[Query]:
    """Template variables as PromQL: ``label_values(m, l)`` is ``group by (l) (m)``."""
    dashboard = dashboard if dashboard is not None else load_dashboard()
    queries: list[Query] = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = str(query.get("query", "") if isinstance(query, dict) else query or "")
        match = _LABEL_VALUES.match(text)
        if match is None:
            raise ValueError(f"variable {var.get('name')}: unsupported query {text!r}")
        selector = match["metric"] or '{__name__=~".+"}'
        expr = f"group by ({match['label']}) ({selector})"
        queries.append(Query("variable", str(var.get("name")), expr, instant=True))
    return queries


def all_queries() -> list[Query]:
    """Every PromQL expression Vigil ships: alert rules, dashboard panels and variables."""
    alerts = [Query("alert", rule.name, rule.expr, instant=True) for rule in alert_rules()]
    return alerts + dashboard_queries() + variable_queries()


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana variables (``$model``, ``${model:regex}``, ``$__rate_interval``)."""

    def repl(match: re.Match[str]) -> str:
        name = match[1] or match[2] or match[3]
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(repl, expr)


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w.$:])([a-zA-Z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan", "atan2"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (a lexical scan, enough for our own rules)."""
    text = _STRINGS.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}
