"""Property ``roundtrip``: what is read back is what was stored.

A created record holds what was sent; reading it back (by ``record_id`` as a number or a
string) equals the create response's record; a partial update changes only the given
fields, and a read after it equals the update response; the delete response is
``{"deleted": true, "id": key}``; afterwards read, delete and update of that record are
all ``not_found``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from wsspec_core import Column, Entity

from ..compare import check_envelope, check_stored, compare, error_code, norm_key, normalise
from ..entities import Target, entity_ref
from ..report import PropertyFailure, Refused

if TYPE_CHECKING:
    from ..runner import Fuzzer

__all__ = ["PER_ENTITY", "check"]

#: Run once per entity (else once, drawing the entity).
PER_ENTITY = True


def check(fuzzer: Fuzzer, data: st.DataObject, target: Target | None) -> None:
    chosen = fuzzer.pick(data, target)
    entity = chosen.entity
    key_column = entity.primary_key
    sent = data.draw(chosen.rows(), label="data")
    fuzzer.describe("create", sent)
    stored = fuzzer.create(entity, sent)
    check_stored(entity, sent, stored, "create")
    key = stored[key_column.name]
    spelled = data.draw(_key_spellings(key_column, key), label="record_id")
    _read_one_equals(fuzzer, entity, spelled, stored, "after create")
    changes: dict[str, Any] = {}
    if data.draw(st.booleans(), label="update?"):
        changes = data.draw(chosen.rows(optional=True), label="update")
        changes = {k: v for k, v in changes.items() if k != key_column.name}
    if changes:
        fuzzer.describe("update", changes)
        response = fuzzer.main.request(
            {
                "type": "request",
                "operation": "update",
                **entity_ref(entity),
                "record_id": spelled,
                "data": changes,
            }
        )
        check_envelope(response)
        if not response.get("success"):
            if error_code(response) == "validation_error":
                raise Refused("validation_error")
            raise PropertyFailure(f"a valid update was refused with {error_code(response)!r}")
        updated = response.get("data")
        if not isinstance(updated, dict):
            raise PropertyFailure("an update response's data is not the stored record")
        expected = {**normalise(entity, stored), **normalise(entity, changes)}
        compare(entity, expected, updated, "the record after a partial update")
        stored = updated
        _read_one_equals(fuzzer, entity, spelled, stored, "after update")
    response = fuzzer.delete(entity, spelled)
    if not response.get("success"):
        raise PropertyFailure(
            f"deleting a record just created failed with {error_code(response)!r}"
        )
    deleted = response.get("data")
    if not isinstance(deleted, dict) or deleted.get("deleted") is not True:
        raise PropertyFailure('a delete response\'s data lacks "deleted": true')
    if "id" in deleted and norm_key(key_column, deleted["id"]) != norm_key(key_column, key):
        raise PropertyFailure("a delete response's id is not the deleted record's key")
    fuzzer.forget(entity, key)
    for operation in ("read", "delete", "update"):
        message: dict[str, Any] = {
            "type": "request",
            "operation": operation,
            **entity_ref(entity),
            "record_id": spelled,
        }
        if operation == "update":
            message["data"] = changes or {}
            if not changes:
                continue
        response = fuzzer.main.request(message)
        if response.get("success") or error_code(response) != "not_found":
            raise PropertyFailure(
                f"{operation} of a deleted record was answered "
                + ("with success" if response.get("success") else repr(error_code(response)))
                + ", not not_found"
            )


def _read_one_equals(
    fuzzer: Fuzzer, entity: Entity, key: Any, stored: dict[str, Any], when: str
) -> None:
    response = fuzzer.main.request(
        {"type": "request", "operation": "read", **entity_ref(entity), "record_id": key}
    )
    check_envelope(response)
    if not response.get("success"):
        raise PropertyFailure(f"reading a record {when} failed with {error_code(response)!r}")
    if not isinstance(response.get("data"), dict):
        raise PropertyFailure(f"reading one record {when} did not return an object")
    compare(entity, normalise(entity, stored), response["data"], f"a record read {when}")


def _key_spellings(column: Column, key: Any) -> st.SearchStrategy[Any]:
    """The key as the server returned it, or as a string (``record_id`` may be either)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return st.sampled_from([key, str(key)])
    return st.just(key)
