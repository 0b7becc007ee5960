"""Property ``filtered-read``: a filtered read returns exactly the matching records.

A read with random filters, ANDed with an ``in`` filter on the keys of records the fuzzer
just created (so that other clients' records do not matter), returns exactly the records
that the core's matcher (:func:`wsspec_core.matches`) accepts, each equal to the stored
record, and ``metadata.total`` counts them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from wsspec_core import FilterSpec, matches

from ... import strategies as wst
from ..compare import (
    check_envelope,
    compare,
    compile_or_reject,
    error_code,
    norm_key,
    normalise,
    spec_json,
)
from ..entities import Target, entity_ref
from ..report import PropertyFailure
from ..wire import dump

if TYPE_CHECKING:
    from ..runner import Fuzzer

__all__ = ["PER_ENTITY", "check"]

#: Run once per entity (else once, drawing the entity).
PER_ENTITY = True


def check(fuzzer: Fuzzer, data: st.DataObject, target: Target | None) -> None:
    chosen = fuzzer.pick(data, target)
    entity = chosen.entity
    key_name = entity.primary_key.name
    planned = data.draw(chosen.row_lists(max_size=6), label="rows")
    specs = data.draw(
        wst.filter_specs(entity, samples=planned, columns=chosen.filterable(), min_size=1),
        label="filters",
    )
    fuzzer.describe("created rows", planned)
    fuzzer.describe("filters", [spec_json(s) for s in specs])
    compiled = compile_or_reject(entity, specs)
    stored = [fuzzer.create(entity, row) for row in planned]
    keys = [row[key_name] for row in stored]
    restrict = FilterSpec(column=key_name, operator="in", value=keys)
    expected = {
        norm_key(entity.primary_key, row[key_name])
        for row in stored
        if matches(compiled, normalise(entity, row))
    }
    options = {"filters": [spec_json(s) for s in (restrict, *specs)], "limit": len(keys)}
    response = fuzzer.main.request(
        {"type": "request", "operation": "read", **entity_ref(entity), "options": options}
    )
    check_envelope(response)
    if not response.get("success"):
        raise PropertyFailure(f"a valid filtered read failed with {error_code(response)!r}")
    records = response.get("data")
    if not isinstance(records, list):
        raise PropertyFailure("a list read's data is not an array")
    got: dict[Any, dict[str, Any]] = {}
    for record in records:
        if not isinstance(record, dict) or key_name not in record:
            raise PropertyFailure("a list read returned something that is not a record")
        got[norm_key(entity.primary_key, record[key_name])] = record
    by_key = {norm_key(entity.primary_key, row[key_name]): row for row in stored}
    extra = set(got) - expected
    if extra:
        key = sorted(extra, key=repr)[0]
        raise PropertyFailure(
            f"a filtered read returned the record {key_name}={dump(key)}, which the filters "
            f"do not match: {dump(by_key.get(key))}"
        )
    missing = expected - set(got)
    if missing:
        key = sorted(missing, key=repr)[0]
        raise PropertyFailure(
            f"a filtered read left out the record {key_name}={dump(key)}, which the filters "
            f"match: {dump(by_key.get(key))}"
        )
    for key, record in got.items():
        compare(entity, normalise(entity, by_key[key]), record, "a record in a list read")
    total = (response.get("metadata") or {}).get("total")
    if total is not None and total != len(expected):
        raise PropertyFailure(
            f"a filtered read's metadata.total is {total}, but {len(expected)} records match"
        )
