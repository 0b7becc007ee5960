"""Lifecycle hooks: their types, the context they see, the error they raise, and how a
driver runs them.

The engine never calls a hook itself: hooks may be ``async`` and may do IO, so calling them
is an action (:class:`~wsspec_core.RunHooks`) like any storage operation, and the adapter
reports back with ``HooksCompleted`` or ``HooksFailed``.  The hooks of one type run in
registration order and the first failure stops the chain (docs/protocol.md "Hooks").
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any
from urllib.parse import parse_qs

import attrs

from ._entities import Entity
from ._messages import ErrorInfo, FilterSpec, MessageId, Operation, QueryOptions


class HookType(enum.Enum):
    # Members are singletons compared by identity, so the C-level identity hash is
    # correct, and much cheaper than Enum's Python-level one on hot dict lookups.
    __hash__ = object.__hash__

    BEFORE_HANDLE = "before_handle"
    BEFORE_READ = "before_read"
    AFTER_READ = "after_read"
    BEFORE_CREATE = "before_create"
    AFTER_CREATE = "after_create"
    BEFORE_UPDATE = "before_update"
    AFTER_UPDATE = "after_update"
    BEFORE_DELETE = "before_delete"
    AFTER_DELETE = "after_delete"
    BEFORE_SUBSCRIBE = "before_subscribe"
    AFTER_SUBSCRIBE = "after_subscribe"
    BEFORE_UNSUBSCRIBE = "before_unsubscribe"
    AFTER_UNSUBSCRIBE = "after_unsubscribe"
    BEFORE_CONNECT = "before_connect"
    AFTER_CONNECT = "after_connect"
    BEFORE_DISCONNECT = "before_disconnect"
    AFTER_DISCONNECT = "after_disconnect"


#: (before, after) hook types of each operation that has them. ``meta`` has none
#: beyond ``before_handle``.
OPERATION_HOOKS: dict[Operation, tuple[HookType, HookType]] = {
    Operation.READ: (HookType.BEFORE_READ, HookType.AFTER_READ),
    Operation.CREATE: (HookType.BEFORE_CREATE, HookType.AFTER_CREATE),
    Operation.UPDATE: (HookType.BEFORE_UPDATE, HookType.AFTER_UPDATE),
    Operation.DELETE: (HookType.BEFORE_DELETE, HookType.AFTER_DELETE),
    Operation.SUBSCRIBE: (HookType.BEFORE_SUBSCRIBE, HookType.AFTER_SUBSCRIBE),
    Operation.UNSUBSCRIBE: (HookType.BEFORE_UNSUBSCRIBE, HookType.AFTER_UNSUBSCRIBE),
}


class HookError(Exception):
    """Raise this from a hook to answer the request with this error.

    ``HookError("unauthorized", "log in first")`` makes the response's error
    ``{"code": "unauthorized", "message": "log in first"}``.  In ``before_connect`` it
    refuses the WebSocket handshake (HTTP ``status``, 403 by default).
    """

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        status: int = 403,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status = status


@attrs.frozen(kw_only=True)
class RequestInfo:
    """What the client's WebSocket handshake request said, for ``before_connect`` hooks."""

    path: str = "/"
    #: The raw query string, without the ``?``.
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    #: ``"host:port"`` of the peer, when the transport knows it.
    remote_address: str | None = None

    def query_param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or ``None``."""
        values = parse_qs(self.query, keep_blank_values=True).get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


@attrs.define(kw_only=True)
class HookContext:
    """What a hook sees, and what it may change.

    Before-hooks may replace ``options`` (or call :meth:`add_filter`), ``data`` and
    ``record_id``; after-hooks may replace ``result`` (the response's ``data``).
    ``metadata`` is the connection's own dictionary: ``before_connect`` typically stores
    the authenticated user there, and every later hook of the connection sees it.
    """

    hook_type: HookType
    connection_id: Hashable
    metadata: dict[str, Any]
    request_info: RequestInfo
    message_id: MessageId | None = None
    operation: Operation | None = None
    entity: Entity | None = None
    options: QueryOptions = QueryOptions()
    data: Any = None
    record_id: Any = None
    result: Any = None
    subscription_id: str | None = None

    @property
    def schema(self) -> str | None:
        return self.entity.schema if self.entity is not None else None

    @property
    def entity_name(self) -> str | None:
        return self.entity.name if self.entity is not None else None

    def add_filter(self, column: str, operator: str, value: Any = None) -> None:
        """AND one more filter onto ``options`` (e.g. ``user_id eq <me>``)."""
        spec = FilterSpec(column=column, operator=operator, value=value, logic_operator="AND")
        self.options = attrs.evolve(self.options, filters=(*self.options.filters, spec))


Hook = Callable[[HookContext], Awaitable[None] | None]


class HookRegistry:
    """The hooks of a server, by type. Register them before serving."""

    def __init__(self) -> None:
        self._hooks: dict[HookType, list[Hook]] = {}

    @property
    def registered(self) -> Mapping[HookType, list[Hook]]:
        """The hook types that have hooks (read-only view; a type with none is absent)."""
        return self._hooks

    def register(self, hook_type: HookType | str, hook: Hook) -> Hook:
        """Add ``hook`` for ``hook_type``; returns it, so this works as a decorator body."""
        self._hooks.setdefault(HookType(hook_type), []).append(hook)
        return hook

    def on(self, hook_type: HookType | str) -> Callable[[Hook], Hook]:
        """Decorator form: ``@hooks.on("before_read")``."""
        return lambda hook: self.register(hook_type, hook)

    def get(self, hook_type: HookType) -> tuple[Hook, ...]:
        if not self._hooks:  # the common case, kept cheap: enum hashing is not free
            return ()
        return tuple(self._hooks.get(hook_type, ()))

    def clear(self, hook_type: HookType | None = None) -> None:
        if hook_type is None:
            self._hooks.clear()
        else:
            self._hooks.pop(hook_type, None)


def hook_failure(exc: BaseException) -> ErrorInfo:
    """The client-facing error for an exception that escaped a hook.

    A :class:`HookError` speaks for itself; anything else is a bug in the hook and is
    reported as ``hook_error`` without its text, which could leak internals.
    """
    if isinstance(exc, HookError):
        return ErrorInfo(code=exc.code, message=exc.message, details=exc.details)
    return ErrorInfo(code="hook_error", message="a server hook failed")


def run_hooks_sync(hooks: tuple[Hook, ...], context: HookContext) -> BaseException | None:
    """Run plain (non-async) hooks in order; returns the first exception, or ``None``.

    For drivers without an event loop. An ``async`` hook here is a configuration error
    and is reported as a failure.
    """
    for hook in hooks:
        try:
            outcome = hook(context)
            if inspect.isawaitable(outcome):
                close = getattr(outcome, "close", None)
                if close is not None:
                    close()
                return TypeError("async hook given to a synchronous driver")
        except Exception as exc:
            return exc
    return None
