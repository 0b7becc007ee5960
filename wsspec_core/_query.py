"""Validated queries and the storage operations the engine asks an adapter to run.

Everything here has been checked against an :class:`~wsspec_core.Entity`: column names
exist, operators are known, values are coerced to the column's Python type
(``int``, ``float``, ``str``, ``bool``, ``datetime.date``, naive-UTC ``datetime.datetime``).
A storage adapter can therefore turn these into SQL with bound parameters only; no client
string is ever interpolated (docs/protocol.md "Query options").

Rows travel as ``dict[str, Any]`` keyed by column name, values of those same Python types
(``None`` for NULL); preloaded relations appear under the relation name.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from ._entities import Entity
from ._messages import ErrorInfo, Operation, ResumePosition, quick_init

Row = dict[str, Any]


class Operator(enum.Enum):
    # Members are singletons compared by identity, so the C-level identity hash is
    # correct, and much cheaper than Enum's Python-level one on hot dict lookups.
    __hash__ = object.__hash__

    EQ = "eq"
    NEQ = "neq"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    LIKE = "like"
    ILIKE = "ilike"
    IN = "in"
    NOT_IN = "not_in"
    IS_NULL = "is_null"
    IS_NOT_NULL = "is_not_null"
    BETWEEN = "between"


@attrs.frozen(kw_only=True)
class Condition:
    """One validated filter. ``value`` depends on the operator:

    * ``EQ NEQ GT GTE LT LTE``: one coerced non-null value (``eq``/``neq`` with ``null``
      were rewritten to ``IS_NULL``/``IS_NOT_NULL``);
    * ``LIKE ILIKE``: the pattern string (``%``, ``_``, backslash escapes), text columns only;
    * ``IN NOT_IN``: a tuple of coerced non-null values, possibly empty;
    * ``BETWEEN``: a pair ``(low, high)``, inclusive;
    * ``IS_NULL IS_NOT_NULL``: ``None``.

    Semantics (docs/protocol.md "Nulls"): ``NEQ`` and ``NOT_IN`` keep NULL rows; every other
    comparison is false on NULL.
    """

    column: str
    operator: Operator
    value: Any = None


@attrs.frozen
class FilterGroup:
    """Conditions joined by OR: one run of OR-joined wire filters."""

    conditions: tuple[Condition, ...]


@attrs.frozen
class Filters:
    """Groups joined by AND. No groups at all matches every row."""

    groups: tuple[FilterGroup, ...] = ()


NO_FILTERS = Filters()


@attrs.frozen(kw_only=True)
class SortKey:
    column: str
    descending: bool = False


@attrs.frozen(kw_only=True)
class Preload:
    """Load the rows of ``relation`` (a relation name of the parent entity) for every row.

    ``columns`` is ``None`` for every column of the target; the join column is always
    fetched by the storage adapter but only returned when selected. ``children`` are the
    nested preloads of the target entity.  One query per level, never one per row.
    """

    relation: str
    target: Entity
    columns: tuple[str, ...] | None = None
    children: tuple[Preload, ...] = ()


@attrs.frozen(kw_only=True)
class Selection:
    """Which columns and relations a read returns."""

    #: The columns to return: those the client named, in its order, less ``omit_columns``;
    #: every column, in entity order, when it named none.
    columns: tuple[str, ...]
    preload: tuple[Preload, ...] = ()


# --- storage operations --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ReadList:
    """List read. Result: :class:`ListResult`.

    Sort ties are broken by the primary key ascending, so pages are stable.
    ``total`` counts the rows matching ``filters``, ignoring ``limit``/``offset``.

    ``count_cap`` bounds the cost of that count (``Limits.max_count``; docs/protocol.md
    "Paging"): when it is not ``None`` and more than ``count_cap`` rows match, a backend
    may count only ``count_cap + 1`` of them and answer ``total = count_cap + 1`` with
    ``total_exact=False`` (SQL: ``SELECT COUNT(*) FROM (SELECT 1 ... LIMIT count_cap + 1)``).
    It is at least ``offset + limit``, so such a ``total`` still exceeds the rows up to the
    end of the page. A backend that always counts exactly may ignore it.
    """

    entity: Entity
    filters: Filters
    sort: tuple[SortKey, ...]
    limit: int
    offset: int
    selection: Selection
    count_cap: int | None = None


@quick_init
@attrs.frozen(kw_only=True)
class ReadOne:
    """Read the row whose key is ``key`` and which also matches ``filters``.

    Result: the row (restricted to ``selection``), or ``None`` if there is none.
    """

    entity: Entity
    key: Any
    filters: Filters
    selection: Selection


@attrs.frozen(kw_only=True)
class Create:
    """Insert ``rows`` in one transaction. Result: ``list[Row]``, each full row as stored
    (database defaults and generated keys included), in the order given."""

    entity: Entity
    rows: tuple[Row, ...]


@attrs.frozen(kw_only=True)
class Update:
    """Change only the ``changes`` columns of the row with key ``key`` that also matches
    ``filters``, in one transaction.  Result: the full row after the write, or ``None`` if
    no row matched (nothing is written then)."""

    entity: Entity
    key: Any
    changes: Row
    filters: Filters


@attrs.frozen(kw_only=True)
class Delete:
    """Delete the row with key ``key`` that also matches ``filters``, in one transaction.
    Result: the full row as it was before the delete, or ``None`` if no row matched."""

    entity: Entity
    key: Any
    filters: Filters


@attrs.frozen(kw_only=True)
class LogEntry:
    """One change read from the database's change log (docs/changefeed.md): the write's
    ``seq``, the entity it touched, and the row before (``old``, ``None`` for a create)
    and after (``new``, ``None`` for a delete) the write, as the log stored them."""

    seq: int
    schema: str | None
    entity: str
    #: ``create``, ``update`` or ``delete``: the database operation.
    operation: Operation
    old: dict[str, Any] | None
    new: dict[str, Any] | None


@attrs.frozen(kw_only=True)
class SubscribeRead:
    """What a subscribe with ``snapshot`` or ``resume`` needs from the database, read in
    **one consistent snapshot** of it (PROTOCOL.md "Change feed"; docs/storage.md
    "Snapshot and resume"). Result: :class:`SubscribeReadResult`.

    In that one snapshot a backend reads the change log's ``epoch``, ``trimmed_through``
    and last ``seq``; then, when ``resume`` is given and :func:`resumable` says the
    position can be replayed, the log entries of ``entity`` after ``resume.seq`` (at most
    ``replay_limit + 1``: one more than the limit says "too many"); then, when
    ``snapshot`` is given and the resume did not succeed (no ``resume``, not resumable,
    or more than ``replay_limit`` entries), the rows of ``snapshot``, a list read. Rows
    and entries are what the log's ``seq`` says: a change is in them if and only if its
    ``seq`` is at most the ``seq`` returned.
    """

    entity: Entity
    snapshot: ReadList | None
    resume: ResumePosition | None
    replay_limit: int


@attrs.frozen(kw_only=True)
class SubscribeReadResult:
    epoch: str
    #: The log's last ``seq`` in the snapshot read (0 when it is empty).
    seq: int
    #: The largest ``seq`` retention removed (0: none).
    trimmed_through: int
    #: The entity's entries after ``resume.seq``, in ``seq`` order, when they were read.
    entries: tuple[LogEntry, ...] | None = None
    #: The snapshot's rows, when they were read.
    rows: ListResult | None = None


def resumable(resume: ResumePosition, epoch: str, trimmed_through: int, last_seq: int) -> bool:
    """Whether the log can prove a reader at ``resume`` missed nothing it still holds:
    the same epoch, a position retention has not passed, and one not beyond the log's
    end (PROTOCOL.md "Change feed", Resume). The replay limit is the caller's to check."""
    return resume.epoch == epoch and trimmed_through <= resume.seq <= last_seq


StorageOperation = ReadList | ReadOne | Create | Update | Delete | SubscribeRead


@attrs.frozen(kw_only=True)
class ListResult:
    rows: list[Row]
    #: Rows matching the filters; a lower bound when ``total_exact`` is false.
    total: int
    #: False when ``total`` stopped at the read's ``count_cap + 1`` (more rows may match).
    total_exact: bool = True


class StorageErrorKind(enum.Enum):
    #: A unique, not-null, check or foreign-key constraint refused the write: the client's
    #: data is at fault. Reported as ``validation_error``; ``column`` names the column when
    #: the database said which.
    CONSTRAINT = "constraint"
    #: The database could not be reached. Reported with the operation's error code.
    UNAVAILABLE = "unavailable"
    #: Anything else. Reported with the operation's error code (``read_error``, ...).
    OTHER = "other"


@attrs.frozen(kw_only=True)
class StorageError:
    """A failed storage operation, as the adapter reports it.

    ``message`` goes to the client: it must be safe (no SQL text, no traceback).
    """

    kind: StorageErrorKind
    message: str
    column: str | None = None


class StorageFailure(Exception):
    """Raised by synchronous storage backends (the in-memory one, the Peewee adapter) to
    report a :class:`StorageError`; the driver turns it into a ``StorageFailed`` event."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(error.message)
        self.error = error


class InvalidRequest(Exception):
    """A client mistake found while validating a request against an entity: the engine
    answers it with ``error`` (``invalid_column``, ``invalid_filter``, ``invalid_options``,
    ``invalid_message``, ``validation_error``)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = ErrorInfo(code=code, message=message, details=details)
