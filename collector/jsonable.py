"""One JSON encoding for the values the collector reports (status, summaries, runs)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from enum import Enum
from typing import Any


def jsonable(value: Any) -> Any:
    """`value` made of JSON types: dates and datetimes as ISO 8601, enums as their value,
    mappings with string keys, tuples and sets as lists, anything else unknown as str()."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)
