"""The fuzzer: discovery, bookkeeping, and running each property with Hypothesis.

Theory of operation (the whole fuzzer is described in :mod:`wsspec.testing.fuzz`).  Each
property is a Hypothesis test over ``st.data()`` whose body is the property module's
``check``.  :meth:`Fuzzer.run_property` runs it in *rounds*: each round is one ordinary
``@given`` run of :data:`ROUND_EXAMPLES` examples with its own seed (derived from the
run's seed, so ``--seed`` repeats a run), and the time budget is checked between rounds
only.  An example therefore never depends on the clock, which Hypothesis requires: the
previous runner skipped the examples past the deadline by returning early from inside
the test, so a replayed prefix stopped drawing earlier than the first time and Hypothesis
raised ``FlakyStrategyDefinition`` ("Inconsistent data generation"), which ended a short
run INCONCLUSIVE.

Shrinking has no public time limit in Hypothesis (it gives up after a few minutes on its
own).  To keep a short budget short, an example that starts after the shrinking deadline
raises :class:`_ShrinkingTimeUp`, a ``KeyboardInterrupt``: Hypothesis lets a
KeyboardInterrupt through at once without recording the interrupted example.  The
fuzzer then reports the last failing example it ran, which is Hypothesis' current shrink
target (the shrinker only runs candidates smaller than its target), and says that
shrinking was cut short.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from typing import Any, TextIO

from hypothesis import HealthCheck, Phase, Verbosity, given, reject, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky, HypothesisException

from wsspec_core import Entity, Relation, RelationKind

from .compare import check_envelope, error_code
from .config import PROPERTIES, FuzzConfig
from .entities import Target, entity_from_meta, entity_ref
from .properties import BY_NAME
from .report import (
    Inconclusive,
    Outcome,
    PropertyFailure,
    Refused,
    Transcript,
    plural,
    print_outcome,
)
from .wire import Connection, WireError, dump

__all__ = ["ROUND_EXAMPLES", "Fuzzer"]

#: Examples per Hypothesis run.  The time budget is checked between runs, so a run may
#: outlast it by at most this many examples.
ROUND_EXAMPLES = 10


class _ShrinkingTimeUp(KeyboardInterrupt):
    """Ends a Hypothesis run from inside an example: shrinking is out of time.

    A KeyboardInterrupt because that is what Hypothesis lets through immediately, without
    treating it as a failure or recording the example (any other exception would be a
    failure to shrink)."""


class Fuzzer:
    """Runs the properties against one server. See the module docstring."""

    def __init__(self, config: FuzzConfig, out: TextIO = sys.stdout) -> None:
        self.config = config
        self.out = out
        self.seed = config.seed if config.seed is not None else random.randrange(2**32)
        #: The frames of the current example (a failure report prints them).
        self.transcript = Transcript()
        #: What the current example drew, one line each (see :meth:`describe`).
        self.example: list[str] = []
        self._main: Connection | None = None
        self._sub: Connection | None = None
        self.targets: list[Target] = []
        self.all_entities: dict[str, Entity] = {}
        #: Records this fuzzer created and has not deleted: (entity, key), in creation order.
        self._created: list[tuple[Entity, Any]] = []
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

    def reset_connection(self, which: str) -> None:
        conn = self._main if which == "main" else self._sub
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to do
                conn.close()
        if which == "main":
            self._main = None
        else:
            self._sub = None

    def is_open(self, which: str) -> bool:
        return (self._main if which == "main" else self._sub) is not None

    def close(self) -> None:
        self.reset_connection("main")
        self.reset_connection("sub")

    # --- what a property uses ------------------------------------------------------------

    def pick(self, data: st.DataObject, target: Target | None) -> Target:
        """The entity of a per-entity run, or one drawn for a property run once."""
        if target is not None:
            return target
        return data.draw(st.sampled_from(self.targets), label="entity")

    def describe(self, label: str, value: Any) -> None:
        """Record what an example drew, for the failure report."""
        self.example.append(f"{label}: {value if isinstance(value, str) else dump(value)}")

    def create(
        self, entity: Entity, data: dict[str, Any], *, conn: Connection | None = None
    ) -> dict[str, Any]:
        """Create one record; returns its stored form. A refused create is a rejected
        example (the server's own constraints, unknown to the fuzzer)."""
        response = (conn or self.main).request(
            {"type": "request", "operation": "create", **entity_ref(entity), "data": data}
        )
        check_envelope(response)
        if not response.get("success"):
            code = error_code(response)
            if code in ("validation_error", "unauthorized"):
                raise Refused(code)
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
            {"type": "request", "operation": "delete", **entity_ref(entity), "record_id": key}
        )
        check_envelope(response)
        if response.get("success"):
            self.forget(entity, key)
        return response

    def track_created(self, entity: Entity, key: Any) -> None:
        """Note a record created by a property's own request, for the clean-up."""
        self._created.append((entity, key))

    def forget(self, entity: Entity, key: Any) -> None:
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
                        **entity_ref(entity),
                        "record_id": key,
                    }
                )
            except (PropertyFailure, WireError):
                self.reset_connection("main")

    # --- discovery --------------------------------------------------------------------

    def discover(self) -> None:
        listing = self.main.request({"type": "request", "operation": "meta"})
        if not listing.get("success") or not isinstance(listing.get("data"), list):
            raise Inconclusive(
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
                self._print(f"  skipped {name}: meta failed with {error_code(meta)!r}")
                continue
            try:
                entity, usable = entity_from_meta(meta["data"])
            except (KeyError, ValueError, TypeError) as exc:
                self._print(f"  skipped {name}: {exc}")
                continue
            self.all_entities[entity.qualified_name] = entity
            if self.config.entities and entity.qualified_name not in self.config.entities:
                continue
            self.targets.append(Target(entity=entity, usable=usable))
        missing = set(self.config.entities) - {t.name for t in self.targets}
        if missing:
            raise Inconclusive(f"the server has no entity {', '.join(sorted(missing))}")
        if not self.targets:
            raise Inconclusive("the server exposes no entity the fuzzer can use")

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
            except Inconclusive as exc:
                self._print(f"  skipped {target.name}: {exc}")
                self.targets.remove(target)

    def _entity(self, name: str) -> Entity:
        entity = self.all_entities.get(name)
        if entity is None:
            raise Inconclusive(f"relation target {name!r} is not listed by meta")
        return entity

    def _parent_keys(
        self, relation: Relation, ready: dict[str, list[Any]], depth: int
    ) -> list[Any]:
        if relation.target in ready:
            return ready[relation.target]
        if depth > 3:
            raise Inconclusive("foreign keys nest too deep")
        parent = self._entity(relation.target)
        parent_target = Target(entity=parent, usable=())
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
            except (PropertyFailure, Refused) as exc:
                if attempt == 19:
                    raise Inconclusive(
                        f"could not create parent records in {parent.qualified_name}"
                    ) from exc
                continue
            keys.append(stored[parent.primary_key.name])
        if not keys:
            raise Inconclusive(f"could not create parent records in {parent.qualified_name}")
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
        except (Inconclusive, WireError, PropertyFailure) as exc:
            self._print(f"ERROR: {exc}")
            self.cleanup()
            self.close()
            return 2
        if not self.targets:
            self._print("ERROR: no entity left to fuzz")
            return 2
        self._print("entities: " + ", ".join(t.name for t in self.targets))
        runs: list[tuple[str, Target | None]] = []
        for name in cfg.properties:
            if BY_NAME[name].PER_ENTITY:
                runs.extend((name, target) for target in self.targets)
            else:
                runs.append((name, None))
        outcomes: list[Outcome] = []
        try:
            for index, (name, target) in enumerate(runs):
                # Share the remaining time among the remaining runs.
                remaining = self._deadline - time.monotonic()
                budget = remaining / (len(runs) - index)
                outcome = self.run_property(name, target, time.monotonic() + budget)
                outcomes.append(outcome)
                print_outcome(outcome, self._print)
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
            f"\nPASSED: {plural(len(properties), 'property', 'properties')} on "
            f"{plural(len(self.targets), 'entity', 'entities')}, "
            f"{total} examples in {elapsed:.1f} s (seed {self.seed})."
        )
        return 0

    def run_property(self, name: str, target: Target | None, deadline: float) -> Outcome:
        """Check one property, in rounds of :data:`ROUND_EXAMPLES` examples, until
        ``max_examples`` examples passed, one failed, or ``deadline`` is past (checked
        between rounds; the first round always runs)."""
        outcome = Outcome(name=name, entity=target.name if target else None)
        body = BY_NAME[name].check
        failures: list[PropertyFailure] = []
        shrink_deadline = [0.0]
        passed = [0]

        def example(data: st.DataObject) -> None:
            # The clock only ends a run (below); it never changes what an example does.
            if failures and time.monotonic() > shrink_deadline[0]:
                raise _ShrinkingTimeUp
            self.transcript = Transcript()
            self.example = []
            keep = len(self._created)
            try:
                outcome.examples += 1
                body(self, data, target)
            except Refused:
                outcome.rejected += 1
                reject()
            except PropertyFailure as failure:
                self._failed(failure, failures, shrink_deadline)
                self.reset_connection("main")
                self.reset_connection("sub")
                raise
            except WireError as exc:
                broken = PropertyFailure(str(exc))
                self._failed(broken, failures, shrink_deadline)
                raise broken from exc
            else:
                passed[0] += 1
            finally:
                if len(self._created) > keep:
                    self.transcript.note("cleanup")
                self.cleanup(keep)

        scope = f"{self.seed}:{name}:{outcome.entity}"
        for round_number in range(self.config.max_examples):
            wanted = min(ROUND_EXAMPLES, self.config.max_examples - passed[0])
            if wanted <= 0:
                break
            if round_number > 0 and time.monotonic() >= deadline:
                break  # the first round always runs: a property is never passed unchecked
            before = passed[0]
            check = settings(
                max_examples=wanted,
                deadline=None,  # a server's latency is not the property's business
                database=None,
                report_multiple_bugs=False,
                verbosity=Verbosity.quiet,
                phases=(Phase.generate, Phase.shrink),
                suppress_health_check=list(HealthCheck),
            )(
                seed(random.Random(f"{scope}:{round_number}").randrange(2**32))(
                    given(st.data())(example)
                )
            )
            try:
                check()
            except _ShrinkingTimeUp:
                outcome.failure = failures[-1]
                outcome.shrink_stopped = True
            except PropertyFailure as failure:
                outcome.failure = failure
            except Exception as exc:  # Hypothesis' own errors: flaky, unsatisfiable
                found = _find_failure(exc) or (failures[-1] if failures else None)
                if found is not None:
                    outcome.failure = found
                    if isinstance(exc, Flaky):
                        found.message += " (the failure did not reproduce every time: a race?)"
                elif isinstance(exc, HypothesisException):
                    outcome.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                else:
                    raise
            if outcome.failure is not None or outcome.error is not None:
                break
            if passed[0] - before < wanted:
                # Hypothesis ended the round early: the examples ran out (more rounds would
                # repeat them) or too many were rejected.
                break
        return outcome

    def _failed(
        self,
        failure: PropertyFailure,
        failures: list[PropertyFailure],
        shrink_deadline: list[float],
    ) -> None:
        """Keep a failing example's report; the first one starts the shrinking clock."""
        failure.transcript = self.transcript
        failure.example = list(self.example)
        if not failures:
            shrink_deadline[0] = max(
                self._deadline, time.monotonic() + self.config.min_shrink_seconds
            )
        failures.append(failure)


# --- helpers -----------------------------------------------------------------------


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


def _flags(cfg: FuzzConfig) -> str:
    parts = [f"--max-examples {cfg.max_examples}", f"--max-seconds {cfg.max_seconds:g}"]
    parts += [f"--entity {e}" for e in cfg.entities]
    if tuple(cfg.properties) != tuple(PROPERTIES):
        parts += [f"--property {p}" for p in cfg.properties]
    return " ".join(parts)
