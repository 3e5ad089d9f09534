"""Kubernetes label selectors, matched purely (the ``metav1.LabelSelector`` semantics).

An empty selector matches nothing here, unlike in Kubernetes where it matches everything: an
Executor with an empty selector would otherwise claim every pod of its namespace (the CRD refuses
it too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy ``selector`` (``matchLabels`` and ``matchExpressions``).
    Raises ValueError, and nothing else, for a selector of the wrong shape (the CRD refuses
    one; an object stored before it may not have been)."""
    if not isinstance(selector, Mapping):
        raise ValueError("selector must be an object")
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, Sequence):
        raise ValueError("selector: matchLabels must be an object, matchExpressions a list")
    if not match_labels and not expressions:
        return False
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    return all(_expression_matches(expr, labels) for expr in expressions)


def _expression_matches(expr: Any, labels: Mapping[str, str]) -> bool:
    shaped = isinstance(expr, Mapping) and isinstance(expr.get("key"), str)
    if not shaped or not isinstance(expr.get("values") or [], list):
        raise ValueError("selector.matchExpressions: each must be {key, operator, values: [...]}")
    key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(f"selector.matchExpressions: unknown operator {operator!r}")
