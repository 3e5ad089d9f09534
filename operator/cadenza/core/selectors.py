"""Kubernetes label selectors, matched purely (the ``metav1.LabelSelector`` semantics).

An empty selector matches nothing here, unlike in Kubernetes where it matches everything: an
Executor with an empty selector would otherwise claim every pod of its namespace (the CRD refuses
it too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy ``selector`` (``matchLabels`` and ``matchExpressions``)."""
    match_labels: Mapping[str, str] = selector.get("matchLabels") or {}
    expressions: Sequence[Mapping[str, Any]] = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    return all(_expression_matches(expr, labels) for expr in expressions)


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = expr["key"], expr["operator"], expr.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(f"selector.matchExpressions: unknown operator {operator!r}")
