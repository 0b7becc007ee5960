"""The fuzzer itself: discovery, the properties, running them with Hypothesis and
reporting.  See :mod:`wsspec.fuzz` for the theory of operation and the command line."""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import attrs
from hypothesis import HealthCheck, Phase, Verbosity, given, reject, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from hypothesis.internal.conjecture import engine as _hypothesis_engine

from wsspec_core import (
    Column,
    ColumnType,
    Entity,
    FilterSpec,
    InvalidRequest,
    Operation,
    Ping,
    Relation,
    RelationKind,
    Request,
    Subscribe,
    Unsubscribe,
    coerce_value,
    compile_filters,
    matches,
)

from . import strategies as wst
from ._fuzz_wire import Connection, PropertyFailure, Transcript, WireError, dump
from .fuzz import PROPERTIES, FuzzConfig

__all__ = ["Fuzzer"]

_PER_ENTITY = ("roundtrip", "filtered-read", "subscription")

_TYPE_NAMES: dict[str, ColumnType] = {
    **{t.value: t for t in ColumnType},
    "int": ColumnType.INTEGER,
    "bigint": ColumnType.INTEGER,
    "smallint": ColumnType.INTEGER,
    "serial": ColumnType.INTEGER,
    "bigserial": ColumnType.INTEGER,
    "real": ColumnType.FLOAT,
    "double": ColumnType.FLOAT,
    "double precision": ColumnType.FLOAT,
    "number": ColumnType.FLOAT,
    "string": ColumnType.TEXT,
    "varchar": ColumnType.TEXT,
    "char": ColumnType.TEXT,
    "bool": ColumnType.BOOLEAN,
    "timestamp": ColumnType.DATETIME,
    "timestamptz": ColumnType.DATETIME,
}


@attrs.define
class _Target:
    """A discovered entity the fuzzer may write to."""

    entity: Entity
    #: Columns the fuzzer sends and filters on (known type).
    usable: tuple[Column, ...]
    #: Foreign key column -> keys of parent records the fuzzer created.
    parents: dict[str, list[Any]] = attrs.field(factory=dict)

    @property
    def name(self) -> str:
        return self.entity.qualified_name

    def rows(self, *, optional: bool = True) -> st.SearchStrategy[dict[str, Any]]:
        overrides: dict[str, st.SearchStrategy[Any]] = {}
        for column, keys in self.parents.items():
            nullable = self.entity.columns_by_name[column].nullable
            keys_strategy: st.SearchStrategy[Any] = st.sampled_from(keys)
            overrides[column] = st.one_of(st.none(), keys_strategy) if nullable else keys_strategy
        return wst.rows(self.entity, overrides=overrides, optional=optional)

    def filterable(self) -> list[str]:
        return [c.name for c in self.usable]


@attrs.define
class _Outcome:
    name: str
    entity: str | None
    examples: int = 0
    rejected: int = 0
    failure: PropertyFailure | None = None
    error: str | None = None


class _Inconclusive(Exception):
    pass


# --- discovery -----------------------------------------------------------------------


def _entity_from_meta(meta: Mapping[str, Any]) -> tuple[Entity, tuple[Column, ...]]:
    """An Entity from a ``meta`` response's data, and the columns of a known type."""
    columns: list[Column] = []
    usable: list[Column] = []
    key_name = meta.get("primary_key")
    for raw in meta["columns"]:
        type_name = str(raw.get("type", "")).lower()
        column_type = _TYPE_NAMES.get(type_name)
        primary = bool(raw.get("primary_key")) or raw.get("name") == key_name
        column = Column(
            name=raw["name"],
            type=column_type or ColumnType.TEXT,
            nullable=bool(raw.get("nullable", True)),
            primary_key=primary,
            has_default=bool(raw.get("has_default", primary and column_type is ColumnType.INTEGER)),
        )
        columns.append(column)
        if column_type is not None:
            usable.append(column)
        elif not (column.nullable or column.has_default):
            raise ValueError(f"required column {column.name!r} has unknown type {type_name!r}")
    relations = []
    for raw in meta.get("relations") or []:
        try:
            relations.append(
                Relation(
                    name=raw["name"],
                    kind=RelationKind(raw["kind"]),
                    target=raw["target"],
                    local_column=raw["local_column"],
                    remote_column=raw["remote_column"],
                )
            )
        except (KeyError, ValueError, TypeError):
            continue  # a relation we cannot use is simply not preloaded
    # (Passed as keywords of Any type: mypy's attrs plugin mistypes converter=tuple.)
    fields: dict[str, Any] = {"columns": columns, "relations": relations}
    entity = Entity(
        name=meta["entity"],
        schema=meta.get("schema") or "",
        table_name=meta.get("table_name") or meta["entity"],
        **fields,
    )
    # Only the columns a create may leave out can be left unusable.
    return entity, tuple(c for c in usable if c.name in entity.columns_by_name)


# --- the fuzzer ----------------------------------------------------------------------


class Fuzzer:
    """Runs the properties against one server. See the module docstring."""

    def __init__(self, config: FuzzConfig, out: TextIO = sys.stdout) -> None:
        self.config = config
        self.out = out
        self.seed = config.seed if config.seed is not None else random.randrange(2**32)
        self.transcript = Transcript()
        self._main: Connection | None = None
        self._sub: Connection | None = None
        self.targets: list[_Target] = []
        self.all_entities: dict[str, Entity] = {}
        #: Records this fuzzer created and has not deleted: (entity, key), in creation order.
        self._created: list[tuple[Entity, Any]] = []
        self._example: list[str] = []
        self._deadline = 0.0

    # --- connections ----------------------------------------------------------------

    def _connection(self, which: str) -> Connection:
        current = self._main if which == "main" else self._sub
        if current is None:
            current = Connection(
                self.config.url, which, timeout=self.config.timeout, transcript=self._current
            )
            if which == "main":
                self._main = current
            else:
                self._sub = current
        return current

    def _current(self) -> Transcript:
        return self.transcript

    @property
    def main(self) -> Connection:
        return self._connection("main")

    @property
    def sub(self) -> Connection:
        return self._connection("sub")

    def _reset_connection(self, which: str) -> None:
        conn = self._main if which == "main" else self._sub
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to do
                conn.close()
        if which == "main":
            self._main = None
        else:
            self._sub = None

    def close(self) -> None:
        self._reset_connection("main")
        self._reset_connection("sub")

    # --- bookkeeping requests -------------------------------------------------------

    def describe(self, label: str, value: Any) -> None:
        """Record what an example drew, for the failure report."""
        self._example.append(f"{label}: {value if isinstance(value, str) else dump(value)}")

    def _ref(self, entity: Entity) -> dict[str, Any]:
        ref: dict[str, Any] = {"entity": entity.name}
        if entity.schema:
            ref["schema"] = entity.schema
        return ref

    def create(
        self, entity: Entity, data: dict[str, Any], *, conn: Connection | None = None
    ) -> dict[str, Any]:
        """Create one record; returns its stored form. A refused create is a rejected
        example (the server's own constraints, unknown to the fuzzer)."""
        response = (conn or self.main).request(
            {"type": "request", "operation": "create", **self._ref(entity), "data": data}
        )
        _check_envelope(response)
        if not response.get("success"):
            code = _error_code(response)
            if code in ("validation_error", "unauthorized"):
                raise _Refused(code)
            raise PropertyFailure(f"a valid create was refused with {code!r}")
        stored = response.get("data")
        if not isinstance(stored, dict):
            raise PropertyFailure("a create response's data is not the stored record (an object)")
        key_name = entity.primary_key.name
        if stored.get(key_name) is None:
            raise PropertyFailure(f"a create response's record has no primary key {key_name!r}")
        self._created.append((entity, stored[key_name]))
        return stored

    def delete(self, entity: Entity, key: Any) -> dict[str, Any]:
        response = self.main.request(
            {"type": "request", "operation": "delete", **self._ref(entity), "record_id": key}
        )
        _check_envelope(response)
        if response.get("success"):
            self._forget(entity, key)
        return response

    def _forget(self, entity: Entity, key: Any) -> None:
        self._created = [(e, k) for e, k in self._created if not (e is entity and k == key)]

    def cleanup(self, keep: int = 0) -> None:
        """Delete the records created since ``len(created) == keep``, newest first."""
        while len(self._created) > keep:
            entity, key = self._created.pop()
            try:
                self.main.request(
                    {
                        "type": "request",
                        "operation": "delete",
                        **self._ref(entity),
                        "record_id": key,
                    }
                )
            except (PropertyFailure, WireError):
                self._reset_connection("main")

    # --- discovery --------------------------------------------------------------------

    def discover(self) -> None:
        listing = self.main.request({"type": "request", "operation": "meta"})
        if not listing.get("success") or not isinstance(listing.get("data"), list):
            raise _Inconclusive(
                "the server did not list its entities (meta without entity): "
                + dump(listing.get("error"))
            )
        for item in listing["data"]:
            name = f"{item['schema']}.{item['entity']}" if item.get("schema") else item["entity"]
            meta = self.main.request(
                {"type": "request", "operation": "meta", "entity": item["entity"]}
                | ({"schema": item["schema"]} if item.get("schema") else {})
            )
            if not meta.get("success"):
                self._print(f"  skipped {name}: meta failed with {_error_code(meta)!r}")
                continue
            try:
                entity, usable = _entity_from_meta(meta["data"])
            except (KeyError, ValueError, TypeError) as exc:
                self._print(f"  skipped {name}: {exc}")
                continue
            self.all_entities[entity.qualified_name] = entity
            if self.config.entities and entity.qualified_name not in self.config.entities:
                continue
            self.targets.append(_Target(entity=entity, usable=usable))
        missing = set(self.config.entities) - {t.name for t in self.targets}
        if missing:
            raise _Inconclusive(f"the server has no entity {', '.join(sorted(missing))}")
        if not self.targets:
            raise _Inconclusive("the server exposes no entity the fuzzer can use")

    def prepare_parents(self) -> None:
        """Create a few parent records for every foreign key (belongs-to relation)."""
        ready: dict[str, list[Any]] = {}
        for target in list(self.targets):
            try:
                for relation in target.entity.relations:
                    if relation.kind is not RelationKind.BELONGS_TO:
                        continue
                    keys = self._parent_keys(relation, ready, depth=0)
                    if relation.remote_column == self._entity(relation.target).primary_key.name:
                        target.parents[relation.local_column] = keys
            except _Inconclusive as exc:
                self._print(f"  skipped {target.name}: {exc}")
                self.targets.remove(target)

    def _entity(self, name: str) -> Entity:
        entity = self.all_entities.get(name)
        if entity is None:
            raise _Inconclusive(f"relation target {name!r} is not listed by meta")
        return entity

    def _parent_keys(
        self, relation: Relation, ready: dict[str, list[Any]], depth: int
    ) -> list[Any]:
        if relation.target in ready:
            return ready[relation.target]
        if depth > 3:
            raise _Inconclusive("foreign keys nest too deep")
        parent = self._entity(relation.target)
        parent_target = _Target(entity=parent, usable=())
        for grand in parent.relations:
            if grand.kind is RelationKind.BELONGS_TO and grand.target != parent.qualified_name:
                parent_target.parents[grand.local_column] = self._parent_keys(
                    grand, ready, depth + 1
                )
        strategy = parent_target.rows(optional=False)
        rng = random.Random(self.seed)
        keys: list[Any] = []
        for attempt in range(20):
            if len(keys) >= 3:
                break
            data = _example_of(strategy, rng)
            try:
                stored = self.create(parent, data)
            except (PropertyFailure, _Refused) as exc:
                if attempt == 19:
                    raise _Inconclusive(
                        f"could not create parent records in {parent.qualified_name}"
                    ) from exc
                continue
            keys.append(stored[parent.primary_key.name])
        if not keys:
            raise _Inconclusive(f"could not create parent records in {parent.qualified_name}")
        ready[relation.target] = keys
        return keys

    # --- running -----------------------------------------------------------------------

    def _print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> int:
        cfg = self.config
        started = time.monotonic()
        self._deadline = started + cfg.max_seconds
        self._print(
            f"wsspec fuzz {cfg.url} (seed {self.seed}, "
            f"max {cfg.max_examples} examples per property)"
        )
        try:
            self.transcript = Transcript()
            self.discover()
            self.prepare_parents()
        except (_Inconclusive, WireError, PropertyFailure) as exc:
            self._print(f"ERROR: {exc}")
            self.cleanup()
            self.close()
            return 2
        if not self.targets:
            self._print("ERROR: no entity left to fuzz")
            return 2
        self._print("entities: " + ", ".join(t.name for t in self.targets))
        runs: list[tuple[str, _Target | None]] = []
        for name in cfg.properties:
            if name in _PER_ENTITY:
                runs.extend((name, target) for target in self.targets)
            else:
                runs.append((name, None))
        outcomes: list[_Outcome] = []
        try:
            for index, (name, target) in enumerate(runs):
                # Share the remaining time among the remaining runs.
                remaining = self._deadline - time.monotonic()
                budget = remaining / (len(runs) - index)
                outcome = self._run_property(name, target, time.monotonic() + budget)
                outcomes.append(outcome)
                self._report(outcome)
                if outcome.failure is not None:
                    break
        finally:
            self.transcript = Transcript()
            self.cleanup()
            self.close()
        elapsed = time.monotonic() - started
        failed = [o for o in outcomes if o.failure is not None]
        errors = [o for o in outcomes if o.error is not None]
        total = sum(o.examples for o in outcomes)
        if failed:
            self._print(f"\nFAILED after {total} examples in {elapsed:.1f} s.")
            self._print(f"Reproduce with: wsspec fuzz {cfg.url} --seed {self.seed} " + _flags(cfg))
            return 1
        if errors:
            self._print(f"\nINCONCLUSIVE: {len(errors)} properties could not be run.")
            return 2
        properties = sorted({o.name for o in outcomes})
        self._print(
            f"\nPASSED: {len(properties)} properties on {len(self.targets)} entities, "
            f"{total} examples in {elapsed:.1f} s (seed {self.seed})."
        )
        return 0

    def _report(self, outcome: _Outcome) -> None:
        where = f" [{outcome.entity}]" if outcome.entity else ""
        if outcome.failure is None and outcome.error is None:
            extra = f", {outcome.rejected} rejected" if outcome.rejected else ""
            self._print(
                f"  ok      {outcome.name}{where}: {outcome.examples} examples{extra}"
                f"  ({PROPERTIES[outcome.name]})"
            )
            return
        if outcome.error is not None:
            self._print(f"  ERROR   {outcome.name}{where}: {outcome.error}")
            return
        failure = outcome.failure
        assert failure is not None
        self._print(f"  FAILED  {outcome.name}{where}: {PROPERTIES[outcome.name]}")
        self._print(f"\nProperty violated: {failure.message}")
        if failure.example:
            self._print("\nMinimal counterexample (after shrinking):")
            for line in failure.example:
                self._print(f"  {line}")
        if failure.transcript is not None:
            self._print('\nFrames exchanged, in order (">>" sent by the fuzzer, "<<" received):')
            self._print(failure.transcript.render())

    def _run_property(self, name: str, target: _Target | None, deadline: float) -> _Outcome:
        outcome = _Outcome(name=name, entity=target.name if target else None)
        body = self._bodies()[name]
        failures: list[PropertyFailure] = []
        last: list[PropertyFailure] = []

        @settings(
            max_examples=self.config.max_examples,
            deadline=None,
            database=None,
            derandomize=False,
            report_multiple_bugs=False,
            verbosity=Verbosity.quiet,
            phases=(Phase.explicit, Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
        )
        @seed(self.seed)
        @given(st.data())
        def check(data: st.DataObject) -> None:
            if not failures and time.monotonic() > deadline:
                return  # out of time: the remaining examples pass without running
            self.transcript = Transcript()
            self._example = []
            keep = len(self._created)
            try:
                outcome.examples += 1
                body(data, target)
            except _Refused:
                outcome.rejected += 1
                reject()
            except PropertyFailure as failure:
                failure.transcript = self.transcript
                failure.example = list(self._example)
                failures.append(failure)
                last[:] = [failure]
                self._reset_connection("main")
                self._reset_connection("sub")
                raise
            except WireError as exc:
                broken = PropertyFailure(str(exc))
                broken.transcript = self.transcript
                broken.example = list(self._example)
                failures.append(broken)
                raise broken from exc
            finally:
                if len(self._created) > keep:
                    self.transcript.note("cleanup")
                self.cleanup(keep)

        old_limit = _hypothesis_engine.MAX_SHRINKING_SECONDS
        # Shrinking gets what is left of this property's time, and at least 10 s.
        _hypothesis_engine.MAX_SHRINKING_SECONDS = int(max(10.0, self._deadline - time.monotonic()))
        try:
            check()
        except PropertyFailure as failure:
            outcome.failure = failure
        except BaseException as exc:  # Hypothesis' own errors: flaky, unsatisfiable
            found = _find_failure(exc) or (last[0] if last else None)
            if found is not None:
                outcome.failure = found
                found.message += (
                    " (the failure did not reproduce every time: a race?)" if _is_flaky(exc) else ""
                )
            elif isinstance(exc, HypothesisException):
                outcome.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            else:
                raise
        finally:
            _hypothesis_engine.MAX_SHRINKING_SECONDS = old_limit
        return outcome

    def _bodies(self) -> dict[str, Callable[[st.DataObject, _Target | None], None]]:
        return {
            "responses": self._prop_responses,
            "malformed": self._prop_malformed,
            "roundtrip": self._prop_roundtrip,
            "filtered-read": self._prop_filtered_read,
            "subscription": self._prop_subscription,
        }

    # --- properties ---------------------------------------------------------------------

    def _pick(self, data: st.DataObject, target: _Target | None) -> _Target:
        if target is not None:
            return target
        return data.draw(st.sampled_from(self.targets), label="entity")

    def _prop_responses(self, data: st.DataObject, target: _Target | None) -> None:
        chosen = self._pick(data, target)
        entity = chosen.entity
        ids = wst.message_ids().filter(lambda i: not (isinstance(i, str) and i.startswith("fz-")))
        kinds = st.one_of(
            wst.requests(entity, operations=(Operation.READ, Operation.META)),
            wst.requests(entity, operations=(Operation.CREATE,), data=chosen.rows()),
            wst.subscribes(entity),
            st.builds(Unsubscribe, id=ids, subscription_id=st.text(min_size=1, max_size=8)),
            st.builds(Ping, id=ids),
        )
        batch = data.draw(st.lists(kinds, min_size=1, max_size=8), label="requests")
        drawn_ids = data.draw(st.lists(ids, min_size=len(batch), max_size=len(batch), unique=True))
        messages = [attrs.evolve(m, id=i) for m, i in zip(batch, drawn_ids, strict=True)]
        frames = [wst.to_wire(m) for m in messages]
        self.describe("pipelined frames", "")
        for frame in frames:
            self._example.append(f"  {dump(frame)}")
        main = self.main
        main.inbox.clear()
        for frame in frames:
            main.send(frame)
        subscriptions: list[str] = []
        try:
            for message, frame in zip(messages, frames, strict=True):
                reply = main.take_reply(message.id)
                expected_type = "pong" if isinstance(message, Ping) else "response"
                if reply.get("type") != expected_type:
                    raise PropertyFailure(
                        f"the reply to {frame['type']} {dump(message.id)} has type "
                        f"{reply.get('type')!r}, not {expected_type!r}"
                    )
                if expected_type == "response":
                    _check_envelope(reply)
                if isinstance(message, Request) and message.operation is Operation.CREATE:
                    stored = reply.get("data")
                    if reply.get("success") and isinstance(stored, dict):
                        key = stored.get(entity.primary_key.name)
                        if key is not None:
                            self._created.append((entity, key))
                if isinstance(message, Subscribe) and reply.get("success"):
                    subscription_id = (reply.get("data") or {}).get("subscription_id")
                    if isinstance(subscription_id, str):
                        subscriptions.append(subscription_id)
            main.barrier(self.config.grace)
            stray = [m for m in main.inbox if m.get("type") in ("response", "pong")]
            if stray:
                raise PropertyFailure(
                    f"a reply nobody asked for (duplicate or unknown id): {dump(stray[0])}"
                )
        finally:
            for subscription_id in subscriptions:
                main.request(
                    {
                        "type": "subscription",
                        "operation": "unsubscribe",
                        "subscription_id": subscription_id,
                    }
                )
            main.inbox.clear()

    def _prop_malformed(self, data: st.DataObject, target: _Target | None) -> None:
        entity = self._pick(data, target).entity
        bad = data.draw(
            st.one_of(wst.malformed_frames(entity), wst.invalid_requests(entity)), label="frame"
        )
        self.describe("invalid frame", bad.reason)
        self.describe("expected error", bad.code)
        main = self.main
        main.inbox.clear()
        main.send(bad.frame)
        reply = main.take_reply(bad.id)
        if reply.get("type") != "response" or reply.get("success") is not False:
            raise PropertyFailure(
                f"a malformed frame ({bad.reason}) was not answered with an error"
            )
        _check_envelope(reply)
        code = _error_code(reply)
        if code != bad.code:
            raise PropertyFailure(
                f"an invalid frame ({bad.reason}) was answered with {code!r}, not {bad.code!r}"
            )
        main.barrier(0)
        stray = [m for m in main.inbox if m.get("type") in ("response", "pong")]
        if stray:
            raise PropertyFailure(f"more than one reply to an invalid frame: {dump(stray[0])}")

    def _prop_roundtrip(self, data: st.DataObject, target: _Target | None) -> None:
        chosen = self._pick(data, target)
        entity = chosen.entity
        key_column = entity.primary_key
        sent = data.draw(chosen.rows(), label="data")
        self.describe("create", sent)
        stored = self.create(entity, sent)
        _check_stored(entity, sent, stored, "create")
        key = stored[key_column.name]
        spelled = data.draw(_key_spellings(key_column, key), label="record_id")
        self._read_one_equals(entity, spelled, stored, "after create")
        changes: dict[str, Any] = {}
        if data.draw(st.booleans(), label="update?"):
            changes = data.draw(chosen.rows(optional=True), label="update")
            changes = {k: v for k, v in changes.items() if k != key_column.name}
        if changes:
            self.describe("update", changes)
            response = self.main.request(
                {
                    "type": "request",
                    "operation": "update",
                    **self._ref(entity),
                    "record_id": spelled,
                    "data": changes,
                }
            )
            _check_envelope(response)
            if not response.get("success"):
                if _error_code(response) == "validation_error":
                    raise _Refused("validation_error")
                raise PropertyFailure(f"a valid update was refused with {_error_code(response)!r}")
            updated = response.get("data")
            if not isinstance(updated, dict):
                raise PropertyFailure("an update response's data is not the stored record")
            expected = {**_normalise(entity, stored), **_normalise(entity, changes)}
            _compare(entity, expected, updated, "the record after a partial update")
            stored = updated
            self._read_one_equals(entity, spelled, stored, "after update")
        response = self.delete(entity, spelled)
        if not response.get("success"):
            raise PropertyFailure(
                f"deleting a record just created failed with {_error_code(response)!r}"
            )
        deleted = response.get("data")
        if not isinstance(deleted, dict) or deleted.get("deleted") is not True:
            raise PropertyFailure('a delete response\'s data lacks "deleted": true')
        if "id" in deleted and _norm_key(key_column, deleted["id"]) != _norm_key(key_column, key):
            raise PropertyFailure("a delete response's id is not the deleted record's key")
        self._forget(entity, key)
        for operation in ("read", "delete", "update"):
            message: dict[str, Any] = {
                "type": "request",
                "operation": operation,
                **self._ref(entity),
                "record_id": spelled,
            }
            if operation == "update":
                message["data"] = changes or {}
                if not changes:
                    continue
            response = self.main.request(message)
            if response.get("success") or _error_code(response) != "not_found":
                raise PropertyFailure(
                    f"{operation} of a deleted record was answered "
                    + ("with success" if response.get("success") else repr(_error_code(response)))
                    + ", not not_found"
                )

    def _read_one_equals(self, entity: Entity, key: Any, stored: dict[str, Any], when: str) -> None:
        response = self.main.request(
            {"type": "request", "operation": "read", **self._ref(entity), "record_id": key}
        )
        _check_envelope(response)
        if not response.get("success"):
            raise PropertyFailure(f"reading a record {when} failed with {_error_code(response)!r}")
        if not isinstance(response.get("data"), dict):
            raise PropertyFailure(f"reading one record {when} did not return an object")
        _compare(entity, _normalise(entity, stored), response["data"], f"a record read {when}")

    def _prop_filtered_read(self, data: st.DataObject, target: _Target | None) -> None:
        chosen = self._pick(data, target)
        entity = chosen.entity
        key_name = entity.primary_key.name
        planned = data.draw(st.lists(chosen.rows(), min_size=1, max_size=6), label="rows")
        specs = data.draw(
            wst.filter_specs(entity, samples=planned, columns=chosen.filterable(), min_size=1),
            label="filters",
        )
        self.describe("created rows", planned)
        self.describe("filters", [_spec_json(s) for s in specs])
        compiled = _compile(entity, specs)
        stored = [self.create(entity, row) for row in planned]
        keys = [row[key_name] for row in stored]
        restrict = FilterSpec(column=key_name, operator="in", value=keys)
        expected = {
            _norm_key(entity.primary_key, row[key_name])
            for row in stored
            if matches(compiled, _normalise(entity, row))
        }
        options = {"filters": [_spec_json(s) for s in (restrict, *specs)], "limit": len(keys)}
        response = self.main.request(
            {"type": "request", "operation": "read", **self._ref(entity), "options": options}
        )
        _check_envelope(response)
        if not response.get("success"):
            raise PropertyFailure(f"a valid filtered read failed with {_error_code(response)!r}")
        records = response.get("data")
        if not isinstance(records, list):
            raise PropertyFailure("a list read's data is not an array")
        got: dict[Any, dict[str, Any]] = {}
        for record in records:
            if not isinstance(record, dict) or key_name not in record:
                raise PropertyFailure("a list read returned something that is not a record")
            got[_norm_key(entity.primary_key, record[key_name])] = record
        by_key = {_norm_key(entity.primary_key, row[key_name]): row for row in stored}
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
            _compare(entity, _normalise(entity, by_key[key]), record, "a record in a list read")
        total = (response.get("metadata") or {}).get("total")
        if total is not None and total != len(expected):
            raise PropertyFailure(
                f"a filtered read's metadata.total is {total}, but {len(expected)} records match"
            )

    def _prop_subscription(self, data: st.DataObject, target: _Target | None) -> None:
        chosen = self._pick(data, target)
        entity = chosen.entity
        key_column = entity.primary_key
        planned = data.draw(st.lists(chosen.rows(), min_size=1, max_size=4), label="creates")
        specs = data.draw(
            wst.filter_specs(entity, samples=planned, columns=chosen.filterable()), label="filters"
        )
        update_rows = chosen.rows(optional=True).map(
            lambda r: {k: v for k, v in r.items() if k != key_column.name}
        )
        later: list[tuple[str, int, dict[str, Any]]] = data.draw(
            st.lists(
                st.one_of(
                    st.tuples(st.just("update"), st.integers(0, len(planned) - 1), update_rows),
                    st.tuples(st.just("delete"), st.integers(0, len(planned) - 1), st.just({})),
                ),
                max_size=4,
            ),
            label="writes",
        )
        compiled = _compile(entity, specs)
        self.describe("subscription filters", [_spec_json(s) for s in specs])
        self.describe("creates", planned)
        self.describe(
            "then", [[op, f"record #{i}", d] if d else [op, f"record #{i}"] for op, i, d in later]
        )

        sub = self.sub
        sub.inbox.clear()
        reply = sub.request(
            {
                "type": "subscription",
                "operation": "subscribe",
                **self._ref(entity),
                "options": {"filters": [_spec_json(s) for s in specs]},
            }
        )
        _check_envelope(reply)
        if not reply.get("success"):
            raise PropertyFailure(f"a valid subscribe failed with {_error_code(reply)!r}")
        subscription_id = (reply.get("data") or {}).get("subscription_id")
        if not isinstance(subscription_id, str) or not subscription_id:
            raise PropertyFailure("a subscribe response has no subscription_id")
        expected: list[tuple[str, Any, dict[str, Any]]] = []
        states: list[dict[str, Any] | None] = []
        ours: set[Any] = set()
        try:
            for row in planned:
                stored = self.create(entity, row)
                states.append(stored)
                ours.add(_norm_key(key_column, stored[key_column.name]))
                self._expect(expected, compiled, entity, "create", stored)
            for operation, index, changes in later:
                current = states[index]
                if current is None:
                    continue  # already deleted
                key = current[key_column.name]
                if operation == "delete":
                    response = self.delete(entity, key)
                    if not response.get("success"):
                        raise PropertyFailure(
                            f"deleting an own record failed with {_error_code(response)!r}"
                        )
                    states[index] = None
                    self._expect(expected, compiled, entity, "delete", current)
                    continue
                if not changes:
                    continue
                response = self.main.request(
                    {
                        "type": "request",
                        "operation": "update",
                        **self._ref(entity),
                        "record_id": key,
                        "data": changes,
                    }
                )
                _check_envelope(response)
                if not response.get("success"):
                    if _error_code(response) == "validation_error":
                        raise _Refused("validation_error")
                    raise PropertyFailure(f"a valid update failed with {_error_code(response)!r}")
                states[index] = response["data"]
                self._expect(expected, compiled, entity, "update", response["data"])
            sub.barrier(self.config.grace)
            received = self._notifications(sub, subscription_id, entity, ours)
            self._compare_notifications(entity, expected, received)

            # After unsubscribing: nothing more.
            reply = sub.request(
                {
                    "type": "subscription",
                    "operation": "unsubscribe",
                    "subscription_id": subscription_id,
                }
            )
            _check_envelope(reply)
            if not reply.get("success"):
                raise PropertyFailure(f"unsubscribing failed with {_error_code(reply)!r}")
            subscription_id_after = subscription_id
            subscription_id = ""
            stored = self.create(entity, planned[0])
            ours.add(_norm_key(key_column, stored[key_column.name]))
            self.delete(entity, stored[key_column.name])
            sub.barrier(self.config.grace)
            late = self._notifications(sub, subscription_id_after, entity, ours)
            if late:
                raise PropertyFailure(f"a notification arrived after unsubscribe: {dump(late[0])}")
        finally:
            if subscription_id:
                self.transcript.note("cleanup")
                try:
                    sub.request(
                        {
                            "type": "subscription",
                            "operation": "unsubscribe",
                            "subscription_id": subscription_id,
                        }
                    )
                except PropertyFailure:
                    self._reset_connection("sub")
            if self._sub is not None:
                self._sub.inbox.clear()

    def _expect(
        self,
        expected: list[tuple[str, Any, dict[str, Any]]],
        compiled: Any,
        entity: Entity,
        operation: str,
        row: dict[str, Any],
    ) -> None:
        normalised = _normalise(entity, row)
        if matches(compiled, normalised):
            expected.append((operation, normalised[entity.primary_key.name], normalised))

    def _notifications(
        self, conn: Connection, subscription_id: str, entity: Entity, ours: set[Any]
    ) -> list[dict[str, Any]]:
        key = entity.primary_key
        found = []
        rest = []
        for message in conn.inbox:
            if message.get("type") != "notification":
                rest.append(message)
                continue
            record = message.get("data")
            mine = isinstance(record, dict) and _norm_key(key, record.get(key.name)) in ours
            if message.get("subscription_id") == subscription_id and mine:
                found.append(message)
        conn.inbox[:] = rest
        return found

    def _compare_notifications(
        self,
        entity: Entity,
        expected: list[tuple[str, Any, dict[str, Any]]],
        received: list[dict[str, Any]],
    ) -> None:
        key = entity.primary_key
        got = [
            (str(m.get("operation")), _norm_key(key, m["data"].get(key.name)), m) for m in received
        ]
        for position in range(max(len(expected), len(got))):
            want = expected[position] if position < len(expected) else None
            have = got[position] if position < len(got) else None
            if want is not None and have is not None and want[:2] == have[:2]:
                _compare(
                    entity, want[2], have[2]["data"], f"the record in a {want[0]} notification"
                )
                for field in ("schema", "entity", "timestamp"):
                    if field not in have[2]:
                        raise PropertyFailure(f"a notification has no {field!r}")
                continue
            if have is not None and all(e[:2] != have[:2] for e in expected):
                raise PropertyFailure(
                    f"the subscriber was notified of a {have[0]} of {key.name}={dump(have[1])}, "
                    "which does not match its filters"
                )
            if want is not None and all(g[:2] != want[:2] for g in got):
                raise PropertyFailure(
                    f"the subscriber was not notified of the {want[0]} of "
                    f"{key.name}={dump(want[1])}, "
                    "which matches its filters"
                )
            raise PropertyFailure(
                "the subscriber's notifications are not in commit order: expected "
                + dump([[e[0], e[1]] for e in expected])
                + ", got "
                + dump([[g[0], g[1]] for g in got])
            )


# --- helpers -----------------------------------------------------------------------


class _Refused(Exception):
    """The server refused valid data for a reason the fuzzer cannot know about (its own
    constraints: a unique column, a hook): the example is rejected, not failed."""


def _is_flaky(exc: BaseException) -> bool:
    return "Flaky" in type(exc).__name__


def _find_failure(exc: BaseException) -> PropertyFailure | None:
    if isinstance(exc, PropertyFailure):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_failure(inner)
            if found is not None:
                return found
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        return _find_failure(cause)
    return None


def _example_of(strategy: st.SearchStrategy[dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    """One value of ``strategy`` outside a test, deterministically from ``rng``."""
    found: list[dict[str, Any]] = []

    @settings(
        max_examples=1,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @seed(rng.randrange(2**32))
    @given(strategy)
    def take(value: dict[str, Any]) -> None:
        found.append(value)

    take()
    return found[-1]


def _error_code(response: Mapping[str, Any]) -> str | None:
    error = response.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        return code if isinstance(code, str) else None
    return None


def _check_envelope(response: Mapping[str, Any]) -> None:
    """docs/protocol.md "Messages": every response has id, success and a timestamp."""
    if response.get("type") != "response":
        raise PropertyFailure(f"expected a response, got type {response.get('type')!r}")
    if not isinstance(response.get("success"), bool):
        raise PropertyFailure('a response has no boolean "success"')
    if not isinstance(response.get("timestamp"), str):
        raise PropertyFailure('a response has no "timestamp"')
    if response["success"] is False and _error_code(response) is None:
        raise PropertyFailure('a failed response has no "error.code"')


def _normalise(entity: Entity, row: Mapping[str, Any]) -> dict[str, Any]:
    """``row``'s column values as Python values of the column types (relations dropped)."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        column = entity.columns_by_name.get(name)
        if column is None:
            continue
        out[name] = _norm_value(column, value)
    return out


def _norm_value(column: Column, value: Any) -> Any:
    if value is None:
        return None
    try:
        return coerce_value(column, value)
    except (ValueError, TypeError):
        return ("not a valid value", value)


def _norm_key(column: Column, value: Any) -> Any:
    return _norm_value(column, value)


def _compare(
    entity: Entity, expected: Mapping[str, Any], got: Mapping[str, Any], what: str
) -> None:
    normal = _normalise(entity, got)
    for name in expected.keys() | normal.keys():
        if name not in normal:
            raise PropertyFailure(f"{what} lacks the column {name!r}")
        if name in expected and expected[name] != normal[name]:
            raise PropertyFailure(
                f"{what} has {name}={dump(got.get(name))}, "
                f"expected {dump(_jsonable(expected[name]))}"
            )


def _check_stored(
    entity: Entity, sent: Mapping[str, Any], stored: Mapping[str, Any], what: str
) -> None:
    _compare(entity, _normalise(entity, sent), stored, f"the record returned by {what}")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _spec_json(spec: FilterSpec) -> dict[str, Any]:
    return {
        "column": spec.column,
        "operator": spec.operator,
        "value": spec.value,
        "logic_operator": spec.logic_operator,
    }


def _compile(entity: Entity, specs: Sequence[FilterSpec]) -> Any:
    try:
        return compile_filters(entity, specs)
    except InvalidRequest:
        reject()


def _key_spellings(column: Column, key: Any) -> st.SearchStrategy[Any]:
    """The key as the server returned it, or as a string (``record_id`` may be either)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return st.sampled_from([key, str(key)])
    return st.just(key)


def _flags(cfg: FuzzConfig) -> str:
    parts = [f"--max-examples {cfg.max_examples}", f"--max-seconds {cfg.max_seconds:g}"]
    parts += [f"--entity {e}" for e in cfg.entities]
    if tuple(cfg.properties) != tuple(PROPERTIES):
        parts += [f"--property {p}" for p in cfg.properties]
    return " ".join(parts)
