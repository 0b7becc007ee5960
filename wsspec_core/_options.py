"""Validation of query options, record ids and record data. (Interface stub.)"""

from __future__ import annotations

from typing import Any

from ._config import Limits
from ._entities import Entity, EntityRegistry
from ._messages import QueryOptions
from ._query import ReadList, Row, Selection


def compile_selection(
    entity: Entity, options: QueryOptions, registry: EntityRegistry
) -> Selection:
    raise NotImplementedError


def compile_read(
    entity: Entity, options: QueryOptions, registry: EntityRegistry, limits: Limits
) -> ReadList:
    raise NotImplementedError


def coerce_key(entity: Entity, record_id: Any) -> Any:
    raise NotImplementedError


def coerce_record(entity: Entity, data: Any, *, partial: bool) -> Row:
    raise NotImplementedError
