"""How the fuzzer checks an answer against what docs/protocol.md prescribes.

Values are compared after normalising them to the column's type with the core's own
coercion (so ``5`` and ``5.0`` on a float column, or two spellings of one datetime, are
equal); filters are compiled by the core, whose matcher is the executable definition of
the filter semantics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import reject

from wsspec_core import Column, Entity, FilterSpec, InvalidRequest, coerce_value, compile_filters

from .report import PropertyFailure
from .wire import dump

__all__ = [
    "check_envelope",
    "check_stored",
    "compare",
    "compile_or_reject",
    "error_code",
    "jsonable",
    "norm_key",
    "norm_value",
    "normalise",
    "spec_json",
]


def error_code(response: Mapping[str, Any]) -> str | None:
    error = response.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        return code if isinstance(code, str) else None
    return None


def check_envelope(response: Mapping[str, Any]) -> None:
    """docs/protocol.md "Messages": every response has id, success and a timestamp."""
    if response.get("type") != "response":
        raise PropertyFailure(f"expected a response, got type {response.get('type')!r}")
    if not isinstance(response.get("success"), bool):
        raise PropertyFailure('a response has no boolean "success"')
    if not isinstance(response.get("timestamp"), str):
        raise PropertyFailure('a response has no "timestamp"')
    if response["success"] is False and error_code(response) is None:
        raise PropertyFailure('a failed response has no "error.code"')


def normalise(entity: Entity, row: Mapping[str, Any]) -> dict[str, Any]:
    """``row``'s column values as Python values of the column types (relations dropped)."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        column = entity.columns_by_name.get(name)
        if column is None:
            continue
        out[name] = norm_value(column, value)
    return out


def norm_value(column: Column, value: Any) -> Any:
    if value is None:
        return None
    try:
        return coerce_value(column, value)
    except (ValueError, TypeError):
        return ("not a valid value", value)


def norm_key(column: Column, value: Any) -> Any:
    return norm_value(column, value)


def compare(entity: Entity, expected: Mapping[str, Any], got: Mapping[str, Any], what: str) -> None:
    normal = normalise(entity, got)
    for name in expected.keys() | normal.keys():
        if name not in normal:
            raise PropertyFailure(f"{what} lacks the column {name!r}")
        if name in expected and expected[name] != normal[name]:
            raise PropertyFailure(
                f"{what} has {name}={dump(got.get(name))}, "
                f"expected {dump(jsonable(expected[name]))}"
            )


def check_stored(
    entity: Entity, sent: Mapping[str, Any], stored: Mapping[str, Any], what: str
) -> None:
    compare(entity, normalise(entity, sent), stored, f"the record returned by {what}")


def jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def spec_json(spec: FilterSpec) -> dict[str, Any]:
    return {
        "column": spec.column,
        "operator": spec.operator,
        "value": spec.value,
        "logic_operator": spec.logic_operator,
    }


def compile_or_reject(entity: Entity, specs: Sequence[FilterSpec]) -> Any:
    """The core's compiled filters; filters the core refuses (a combination the strategies
    do not rule out) reject the example rather than fail it."""
    try:
        return compile_filters(entity, specs)
    except InvalidRequest:
        reject()
