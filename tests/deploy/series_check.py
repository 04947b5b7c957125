"""Checks the PromQL of the Grafana panels and the Prometheus rules against a real scrape.

Every series an expression selects must be exported with at least one sample matching its label
matchers and carrying the labels it is grouped by, and must be used as its type allows: ``rate()``
and friends on counters and histogram parts, ``histogram_quantile()`` on ``_bucket`` series, no
bare counters, no histogram base names. Series that only exist outside this codebase (Prometheus's
own ``up``, the pinned vLLM's metrics) are checked against :data:`EXTERNAL` instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "monitoring" / "grafana" / "dashboards"
RULES = ROOT / "monitoring" / "prometheus" / "alerts.yml"

#: Series not produced by this codebase, with their types: ``up`` is written by Prometheus for each
#: scrape; the ``vllm:`` series are the metrics of the vLLM image that docker-compose.yml and
#: deploy/k8s pin (the list is in docs/deploy.md, "Metrics that come from elsewhere").
EXTERNAL: dict[str, str] = {
    "up": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
}
#: Labels Prometheus attaches at scrape time (absent from the exposition itself).
TARGET_LABELS = frozenset({"job", "instance"})
_RATE_FUNCS = frozenset({"rate", "irate", "increase", "resets"})
_GAUGE_FUNCS = frozenset({"deriv", "delta", "idelta", "predict_linear", "holt_winters"})
_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


@dataclass
class Series:
    """Every sample of one exposed series name (``x_total``, ``x_bucket``, a gauge's name)."""

    kind: str  # the family's type: counter, gauge, histogram, summary, unknown
    family: str
    labels: list[dict[str, str]] = field(default_factory=list)


def parse_exposition(text: str) -> dict[str, Series]:
    """Index a Prometheus text exposition by sample name."""
    index: dict[str, Series] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series = index.setdefault(sample.name, Series(family.type, family.name))
            series.labels.append(dict(sample.labels))
    return index


@dataclass(frozen=True)
class Query:
    where: str  # dashboard/panel or rule name
    expr: str


def dashboard_queries(directory: Path = DASHBOARDS) -> list[Query]:
    queries = []
    for board in sorted(directory.glob("*.json")):
        data = json.loads(board.read_text())
        for panel in data["panels"]:
            for target in panel["targets"]:
                queries.append(Query(f"{board.name}: {panel['title']} ({target['refId']})", target["expr"]))
    return queries


def rule_queries(path: Path = RULES) -> list[Query]:
    data = yaml.safe_load(path.read_text())
    return [
        Query(f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in data["groups"]
        for rule in group["rules"]
    ]


@dataclass(frozen=True)
class _Context:
    func: str | None = None  # the function whose argument this is
    quantile: bool = False  # inside histogram_quantile()
    grouped_by: frozenset[str] = frozenset()


def _selectors(node: Any, ctx: _Context) -> Iterator[tuple[Any, _Context]]:
    """(VectorSelector, context) for every selector in the expression tree."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node, ctx
    elif isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector, ctx
    elif isinstance(node, promql_parser.Call):
        name = node.func.name
        for arg in node.args:
            if name == "histogram_quantile":
                yield from _selectors(arg, _Context(None, True, ctx.grouped_by))
            else:
                yield from _selectors(arg, _Context(name, ctx.quantile, ctx.grouped_by))
    elif isinstance(node, promql_parser.AggregateExpr):
        grouped = ctx.grouped_by
        modifier = node.modifier
        if modifier is not None and modifier.type == promql_parser.AggModifierType.By:
            grouped = grouped | frozenset(modifier.labels)
        yield from _selectors(node.expr, _Context(None, ctx.quantile, grouped))
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from _selectors(node.lhs, _Context(None, False, frozenset()))
        yield from _selectors(node.rhs, _Context(None, False, frozenset()))
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        yield from _selectors(node.expr, ctx)


def _metric_name(selector: Any) -> str:
    if selector.name:
        return str(selector.name)
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return str(matcher.value)
    raise ValueError(f"selector {selector} has no metric name")


def _matches(labels: dict[str, str], matchers: Iterable[Any]) -> bool:
    for m in matchers:
        if m.name == "__name__" or m.name in TARGET_LABELS:
            continue
        value = labels.get(m.name, "")
        if m.op == promql_parser.MatchOp.Equal and value != m.value:
            return False
        if m.op == promql_parser.MatchOp.NotEqual and value == m.value:
            return False
        if m.op == promql_parser.MatchOp.Re and not re.fullmatch(m.value, value):
            return False
        if m.op == promql_parser.MatchOp.NotRe and re.fullmatch(m.value, value):
            return False
    return True


def _type_problem(name: str, kind: str, ctx: _Context) -> str | None:
    part = next((p for p in _HISTOGRAM_PARTS if name.endswith(p)), None)
    is_counter = kind == "counter" and name.endswith("_total")
    is_histogram_part = kind in {"histogram", "summary"} and part is not None
    if ctx.quantile:
        if not (kind == "histogram" and part == "_bucket"):
            return f"histogram_quantile() needs a histogram's _bucket series, but {name} is a {kind}"
        if ctx.func not in _RATE_FUNCS:
            return f"histogram_quantile() over {name} needs rate()/increase() of the buckets"
    if ctx.func in _RATE_FUNCS and not (is_counter or is_histogram_part):
        return f"{ctx.func}() is applied to {name}, a {kind}: only counters and histogram parts grow"
    if ctx.func in _GAUGE_FUNCS and kind != "gauge":
        return f"{ctx.func}() is meant for gauges, but {name} is a {kind}"
    if (is_counter or is_histogram_part) and ctx.func not in _RATE_FUNCS:
        return f"{name} is cumulative ({kind}): query it through rate() or increase()"
    return None


def check(query: Query, scraped: dict[str, Series]) -> list[str]:
    """The problems of one expression ([] when every series it uses is there and used right)."""
    try:
        tree = promql_parser.parse(query.expr)
    except Exception as exc:  # the parser raises its own error types
        return [f"{query.where}: does not parse: {exc}"]
    problems = []
    for selector, ctx in _selectors(tree, _Context()):
        name = _metric_name(selector)
        external = EXTERNAL.get(name)
        if external is not None:
            problem = _type_problem(name, external, ctx)
            if problem:
                problems.append(f"{query.where}: {problem}")
            continue
        series = scraped.get(name)
        if series is None:
            hint = ""
            parts = [name + p for p in _HISTOGRAM_PARTS if name + p in scraped]
            if parts:
                hint = f" ({name} is a {scraped[parts[0]].kind}: use {', '.join(parts)})"
            elif name + "_total" in scraped:
                hint = f" (a counter: use {name}_total)"
            problems.append(f"{query.where}: series {name} is not exported{hint}")
            continue
        problem = _type_problem(name, series.kind, ctx)
        if problem:
            problems.append(f"{query.where}: {problem}")
        matching = [labels for labels in series.labels if _matches(labels, selector.matchers.matchers)]
        if not matching:
            problems.append(f"{query.where}: no sample of {name} matches {selector.matchers}")
            continue
        for label in sorted(ctx.grouped_by - TARGET_LABELS):
            if not any(label in labels for labels in matching):
                problems.append(f"{query.where}: {name} has no label {label!r} to group by")
    return problems
