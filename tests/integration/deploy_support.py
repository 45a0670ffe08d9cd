"""Metric names and expressions in the deploy files (shared by the unit and scrape tests)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "callstream.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

_NAME = re.compile(r"\bcallstream_[a-z0-9_]+\b")
_GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard (panel targets and template queries)."""
    board = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for panel in panels(board["panels"]):
        exprs += [t["expr"] for t in panel.get("targets", [])]
    for var in board.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if isinstance(text, str):
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", text)
            exprs.append(match.group(1) if match else text)
    return exprs


def alert_exprs() -> list[str]:
    """Every rule expression of the alert rules."""
    rules = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def plain_promql(expr: str) -> str:
    """``expr`` with Grafana's variables replaced, so Prometheus's parser accepts it."""
    for var, value in _GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr.replace('"$tenant"', '".*"')


def metric_names(exprs: list[str]) -> set[str]:
    """The callstream metric names the expressions use (``_bucket`` and such included)."""
    return {name for e in exprs for name in _NAME.findall(e)}
