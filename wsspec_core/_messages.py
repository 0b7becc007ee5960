"""The messages of the WebSocketSpec wire protocol, as frozen value classes.

Inbound messages (client to server) are what :func:`wsspec_core.decode` returns after the
envelope has been checked; they still carry the client's raw option values, which the engine
validates against the resolved entity (docs/protocol.md "Validation order").  Outbound
messages are what the engine asks an adapter to send; :func:`wsspec_core.encode` turns them
into one JSON text frame each.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

_C = TypeVar("_C", bound=type)
_T = TypeVar("_T")


def quick_init(cls: _C) -> _C:
    """Give a frozen, slotted, keyword-only attrs class a faster ``__init__`` with the
    same signature and defaults (put the decorator above ``@attrs.frozen``).

    attrs' own ``__init__`` stores each field with ``object.__setattr__(self, name,
    value)``, a call that looks the slot up by name (a frozen class's ``__setattr__``
    refuses). This one calls each slot's own descriptor: about 15% less per object, and
    one is built per event and action on the hot path (issue 11; a read by id builds
    three events and three objects of the engine's, which uses :func:`quick_new` for
    its own). Only for slotted classes whose fields have no validator, converter or
    factory, and no ``__attrs_pre_init__``/``__attrs_post_init__``: checked here, at
    import.
    """
    if "__slots__" not in vars(cls):
        raise TypeError(f"quick_init cannot build {cls.__name__}: it has no slots")
    namespace: dict[str, Any] = {}
    params: list[str] = []
    body: list[str] = []
    for field in attrs.fields(cls):
        if (
            field.validator is not None
            or field.converter is not None
            or isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
            or not field.init
            or not field.kw_only
            or field.alias != field.name
        ):
            raise TypeError(f"quick_init cannot build {cls.__name__}.{field.name}")
        setter = f"_set_{field.name}"
        namespace[setter] = getattr(cls, field.name).__set__
        if field.default is attrs.NOTHING:
            params.append(field.name)
        else:
            namespace[f"_default_{field.name}"] = field.default
            params.append(f"{field.name}=_default_{field.name}")
        body.append(f"    {setter}(self, {field.name})")
    if hasattr(cls, "__attrs_pre_init__") or hasattr(cls, "__attrs_post_init__"):
        raise TypeError(f"quick_init cannot build {cls.__name__}: it has an init hook")
    source = f"def __init__(self, *, {', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    exec(source, namespace)  # as attrs builds its own: a function of this class's fields
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = dict(vars(cls)["__init__"].__annotations__)
    cls.__init__ = init  # type: ignore[misc]
    _QUICK.add(cls)
    return cls


#: The classes :func:`quick_init` built: those :func:`quick_new` may build too.
_QUICK: set[type] = set()


def quick_new(cls: type[_T]) -> Callable[..., _T]:
    """A function that builds a ``cls`` (a class :func:`quick_init` built) from the values
    of all its fields, passed positionally in field order, defaults included.

    For the engine's own hot path (issue 11): calling the class costs the interpreter's
    type call (a keyword dictionary, ``__new__``, then ``__init__``) on top of storing the
    fields, about as much again as the stores; a plain function taking positional
    arguments skips that. The object is the one ``cls(...)`` builds: the same class, the
    same slots set (tests/core/test_fast_paths.py compares them).
    """
    if cls not in _QUICK:
        raise TypeError(f"quick_new builds only classes quick_init built, not {cls!r}")
    names = [field.name for field in attrs.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_cls": cls, "_alloc": object.__new__}
    for name in names:
        namespace[f"_set_{name}"] = getattr(cls, name).__set__
    body = [f"    _set_{name}(self, {name})" for name in names]
    source = (
        f"def new({', '.join(names)}):\n    self = _alloc(_cls)\n"
        + "\n".join(body)
        + "\n    return self"
    )
    exec(source, namespace)  # as quick_init: a function of this class's fields
    new: Callable[..., _T] = namespace["new"]
    new.__qualname__ = new.__name__ = f"new_{cls.__name__}"
    return new


#: A message id as the client sent it. Strings are the norm; numbers are echoed back as is.
MessageId = str | int
#: A ``record_id`` as the client sent it, before coercion to the key column's type.
RecordId = str | int


class MessageType(enum.Enum):
    # Members are singletons compared by identity, so the C-level identity hash is
    # correct, and much cheaper than Enum's Python-level one on hot dict lookups.
    __hash__ = object.__hash__

    REQUEST = "request"
    SUBSCRIPTION = "subscription"
    PING = "ping"
    RESPONSE = "response"
    NOTIFICATION = "notification"
    PONG = "pong"


class Operation(enum.Enum):
    # Members are singletons compared by identity, so the C-level identity hash is
    # correct, and much cheaper than Enum's Python-level one on hot dict lookups.
    __hash__ = object.__hash__

    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    META = "meta"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


#: The operations a ``type: "request"`` message may carry.
REQUEST_OPERATIONS = frozenset(
    {Operation.READ, Operation.CREATE, Operation.UPDATE, Operation.DELETE, Operation.META}
)
#: The operations a ``type: "subscription"`` message may carry.
SUBSCRIPTION_OPERATIONS = frozenset({Operation.SUBSCRIBE, Operation.UNSUBSCRIBE})
#: The write operations: the ones that notify subscribers.
WRITE_OPERATIONS = frozenset({Operation.CREATE, Operation.UPDATE, Operation.DELETE})


# --- query options, as the client wrote them ------------------------------------------


@attrs.frozen(kw_only=True)
class FilterSpec:
    """One filter as written on the wire; validated and coerced by the engine."""

    column: str
    operator: str
    value: Any = None
    #: ``"AND"`` or ``"OR"`` (any case): ``"OR"`` joins this filter to the one before it.
    logic_operator: str = "AND"


@attrs.frozen(kw_only=True)
class SortSpec:
    column: str
    #: ``"asc"`` or ``"desc"``, any case.
    direction: str = "asc"


@attrs.frozen(kw_only=True)
class PreloadSpec:
    #: A relation name, or a dotted path of relation names (``"posts.user"``).
    relation: str
    #: Columns of the related records to return; ``None`` means all.
    columns: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class QueryOptions:
    filters: tuple[FilterSpec, ...] = ()
    #: ``None``: every column. Otherwise exactly these columns.
    columns: tuple[str, ...] | None = None
    omit_columns: tuple[str, ...] = ()
    preload: tuple[PreloadSpec, ...] = ()
    sort: tuple[SortSpec, ...] = ()
    limit: int | None = None
    offset: int | None = None


# --- client to server --------------------------------------------------------------


@quick_init
@attrs.frozen(kw_only=True)
class Request:
    """``type: "request"``: read, create, update, delete or meta."""

    id: MessageId
    operation: Operation
    #: Empty only for ``meta`` without an entity (list the registered entities).
    entity: str
    schema: str | None = None
    record_id: RecordId | None = None
    #: create: a dict or a list of dicts; update: a dict; otherwise ``None``.
    data: Any = None
    options: QueryOptions = QueryOptions()


@attrs.frozen(kw_only=True)
class ResumePosition:
    """A subscribe's ``resume``: the last position the client saw (PROTOCOL.md "Change
    feed")."""

    epoch: str
    seq: int


@attrs.frozen(kw_only=True)
class Subscribe:
    """``type: "subscription", operation: "subscribe"``.

    ``snapshot`` and ``resume`` (top-level fields of the message) need the change feed
    (PROTOCOL.md "Change feed"; docs/protocol.md "Snapshot and resume")."""

    id: MessageId
    entity: str
    schema: str | None = None
    options: QueryOptions = QueryOptions()
    #: Send the matching rows, consistent with the reply's ``seq``.
    snapshot: bool = False
    #: Replay the changes missed since this position, if the server can prove it can.
    resume: ResumePosition | None = None


@attrs.frozen(kw_only=True)
class Unsubscribe:
    """``type: "subscription", operation: "unsubscribe"``."""

    id: MessageId
    subscription_id: str


@attrs.frozen(kw_only=True)
class Ping:
    id: MessageId | None = None


InboundMessage = Request | Subscribe | Unsubscribe | Ping


# --- server to client --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ErrorInfo:
    code: str
    message: str
    details: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Response:
    """``type: "response"``. ``id`` is ``""`` when the request's id could not be read."""

    id: MessageId
    success: bool
    #: RFC 3339, UTC, ending in ``Z``.
    timestamp: str
    data: Any = None
    error: ErrorInfo | None = None
    metadata: dict[str, Any] | None = None


#: A change's effect on one subscription's result set (docs/protocol.md "Change feed").
CHANGE_ADDED = "added"
CHANGE_MODIFIED = "modified"
CHANGE_REMOVED = "removed"


@attrs.frozen(kw_only=True)
class Notification:
    operation: Operation
    subscription_id: str
    schema: str
    entity: str
    data: Any
    timestamp: str
    #: With a change feed only (``Engine(change_feed=True)``): the change's ``seq`` in
    #: the log, and its effect on this subscription (``"added"``, ``"modified"``,
    #: ``"removed"``). ``None`` without a feed: the codec then leaves them out, so a
    #: frame is byte for byte what it was before the feed existed.
    seq: int | None = None
    change: str | None = None


@attrs.frozen(kw_only=True)
class Pong:
    id: MessageId | None
    timestamp: str
    #: With a change feed only: ``{"epoch", "seq"}``, the position this connection has
    #: been notified up to. Left out of the frame when ``None``.
    data: dict[str, Any] | None = None


OutboundMessage = Response | Notification | Pong


@attrs.frozen(kw_only=True)
class DecodeError:
    """A frame that :func:`wsspec_core.decode` could not turn into a message.

    ``id`` is whatever id could be read (``""`` if none).  ``entity_ref`` is set when the
    error was found after the entity had been read (record id, data or options): the
    engine resolves that entity first, so that an unknown entity is reported as
    ``model_not_found`` before anything about options (docs/protocol.md "Validation order").
    """

    id: MessageId
    error: ErrorInfo
    entity_ref: tuple[str | None, str] | None = None
