"""Filter validation, value coercion and the in-memory matcher.

(Interface stub: being implemented.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._entities import Column, Entity
from ._messages import FilterSpec
from ._query import Filters, Row


def coerce_value(column: Column, value: Any) -> Any:
    """``value`` as ``column``'s Python type; raises ``ValueError`` with a clear message."""
    raise NotImplementedError


def compile_filters(entity: Entity, specs: Sequence[FilterSpec]) -> Filters:
    """Validate and group wire filters; raises ``InvalidRequest``."""
    raise NotImplementedError


def matches(filters: Filters, row: Row) -> bool:
    """Whether ``row`` satisfies ``filters``, exactly as SQL ``WHERE`` would."""
    raise NotImplementedError


def like_pattern(pattern: str, *, case_insensitive: bool) -> object:
    raise NotImplementedError
