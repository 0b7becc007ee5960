"""Subscriptions and the index that routes a change to the ones it matches.

Theory of operation: a subscription's filters are an AND of OR-groups. A group holding a
single ``eq`` (or ``in``) condition is *mandatory*: no row can match the subscription
unless its column holds that value (or one of those values). Such subscriptions are filed
under ``(column, value)``; routing a row looks up the row's own value of each indexed
column, so its cost grows with the number of candidate subscriptions, not with the number
of subscriptions on the entity. Subscriptions without a mandatory equality are checked one
by one. Every candidate is then confirmed with the full matcher, so the index only ever
narrows the search; it never decides a match (docs/protocol.md "Subscriptions and
notifications").
"""

from __future__ import annotations

import operator
from collections.abc import Hashable
from typing import Any

import attrs

from ._entities import Entity
from ._filters import matches
from ._query import Filters, Operator, Row


@attrs.frozen(kw_only=True)
class Subscription:
    id: str
    connection_id: Hashable
    entity: Entity
    #: Fixed at subscribe time, after ``before_subscribe`` hooks ran.
    filters: Filters
    #: Creation order: notifications for one change go out in this order.
    sequence: int


_by_sequence = operator.attrgetter("sequence")


def _index_key(filters: Filters) -> tuple[str, tuple[Any, ...]] | None:
    """The ``(column, values)`` a matching row must hold, if the filters require one."""
    for group in filters.groups:
        if len(group.conditions) != 1:
            continue
        condition = group.conditions[0]
        if condition.operator is Operator.EQ:
            return condition.column, (condition.value,)
        if condition.operator is Operator.IN and len(condition.value) <= 16:
            return condition.column, tuple(condition.value)
    return None


class _EntitySubscriptions:
    __slots__ = ("by_value", "unindexed")

    def __init__(self) -> None:
        self.unindexed: dict[str, Subscription] = {}
        #: column -> value -> subscription id -> subscription
        self.by_value: dict[str, dict[Any, dict[str, Subscription]]] = {}

    def __len__(self) -> int:
        return len(self.unindexed) + sum(
            len(subs) for values in self.by_value.values() for subs in values.values()
        )


class SubscriptionIndex:
    """Every live subscription, by id and by entity."""

    def __init__(self) -> None:
        self._by_id: dict[str, Subscription] = {}
        self._by_entity: dict[str, _EntitySubscriptions] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, subscription_id: str) -> Subscription | None:
        return self._by_id.get(subscription_id)

    def add(self, subscription: Subscription) -> None:
        if subscription.id in self._by_id:
            raise ValueError(f"duplicate subscription id {subscription.id!r}")
        self._by_id[subscription.id] = subscription
        bucket = self._by_entity.setdefault(
            subscription.entity.qualified_name, _EntitySubscriptions()
        )
        key = _index_key(subscription.filters)
        if key is None:
            bucket.unindexed[subscription.id] = subscription
            return
        column, values = key
        by_value = bucket.by_value.setdefault(column, {})
        for value in values:
            by_value.setdefault(value, {})[subscription.id] = subscription

    def remove(self, subscription_id: str) -> Subscription | None:
        subscription = self._by_id.pop(subscription_id, None)
        if subscription is None:
            return None
        name = subscription.entity.qualified_name
        bucket = self._by_entity[name]
        key = _index_key(subscription.filters)
        if key is None:
            del bucket.unindexed[subscription_id]
        else:
            column, values = key
            by_value = bucket.by_value[column]
            for value in values:
                subs = by_value.get(value)
                if subs is not None:
                    subs.pop(subscription_id, None)
                    if not subs:
                        del by_value[value]
            if not by_value:
                del bucket.by_value[column]
        if not bucket.unindexed and not bucket.by_value:
            del self._by_entity[name]
        return subscription

    def route(self, entity: Entity, row: Row) -> list[Subscription]:
        """The subscriptions to ``entity`` whose filters ``row`` matches, oldest first."""
        bucket = self._by_entity.get(entity.qualified_name)
        if bucket is None:
            return []
        candidates: dict[str, Subscription] = bucket.unindexed
        if bucket.by_value:
            candidates = dict(candidates)  # not the index's own: it is added to
            for column, by_value in bucket.by_value.items():
                value = row.get(column)
                if value is None:
                    continue
                try:
                    found = by_value.get(value)
                except TypeError:  # an unhashable value can equal no filter value
                    continue
                if found:
                    candidates.update(found)
        # A subscription without filters matches every row (matches() would say so, in
        # two calls more per subscription: a fan-out to every subscriber of an entity
        # asks this once per subscriber).
        matched = [
            s for s in candidates.values() if not s.filters.groups or matches(s.filters, row)
        ]
        matched.sort(key=_by_sequence)
        return matched
