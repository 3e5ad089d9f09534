"""Output: aligned tables for people (as kubectl prints them), the API's answer unchanged as
JSON or YAML for scripts. Pure: functions return text; the commands print it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

FORMATS = ("table", "json", "yaml")
GAP = "   "
NONE = "<none>"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell, three spaces apart, headers in capitals; the last
    column is not padded (no trailing spaces)."""
    cells = [[str(h).upper() for h in headers]]
    cells += [[cell(value) for value in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = []
    for line in cells:
        padded = [text.ljust(width) for text, width in zip(line[:-1], widths, strict=False)]
        lines.append(GAP.join([*padded, line[-1]]).rstrip())
    return "\n".join(lines)


def cell(value: object) -> str:
    """A value as a table shows it: ``<none>`` for nothing, booleans in lower case."""
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return str(value).lower()
    return " ".join(str(value).split())  # one line per row, whatever the value holds


def dump(value: Any, fmt: str) -> str:
    """``value`` as ``json`` (indented) or ``yaml`` (keys in the API's order)."""
    if fmt == "yaml":
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip("\n")
    return json.dumps(value, indent=2, ensure_ascii=False)


def fields(pairs: Iterable[tuple[str, object]]) -> str:
    """``Key:  value`` lines, the values aligned (kubectl describe)."""
    pairs = list(pairs)
    width = max((len(key) for key, _ in pairs), default=0) + 2
    return "\n".join(f"{key + ':':<{width}}{cell(value)}" for key, value in pairs)


def block(title: str, value: Any) -> str:
    """``title:`` and ``value`` as YAML indented below it (``<none>`` when empty)."""
    if not value:
        return f"{title}:  {NONE}"
    body = yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip("\n")
    return f"{title}:\n" + "\n".join(f"  {line}" for line in body.splitlines())
