"""The wire codec: JSON text frames to message objects and back (docs/protocol.md "Messages").

Theory of operation.  ``decode`` is the only function here that sees what a client sent,
so it checks everything the envelope can say without knowing the entities, in the order of
docs/protocol.md "Validation order": ``type``, ``id``, ``operation``, ``entity``/``schema``,
then ``record_id``, ``data``, ``subscription_id`` and the structure of ``options``.  The
first problem found becomes a :class:`DecodeError` carrying the error code, the id that
could be read, and (once the entity has been read) the entity, so that the engine can report
``model_not_found`` before anything about options.  What needs an entity (column names,
operators, value coercion) is left to the engine.  ``decode`` never raises: a peer's
mistake is never our exception (STYLE.md principle 6).

The checks are written by hand rather than as cattrs structure hooks: each rule has its own
error code and message, the first failure wins, and a hand-written walk over the parsed dict
is both clearer and faster than translating cattrs' exception groups back into codes.  The
cattrs converter from :func:`make_converter` does the other direction of each message
family, where the shapes are ours and fixed: outbound messages to JSON (:func:`encode`),
and the client-side helpers :func:`encode_inbound` / :func:`decode_outbound`.

JSON is orjson: ``benchmarks/bench_json.py`` measured it about 3x faster than the stdlib
on decoding typical requests and about 20x faster on encoding typical responses (a 100-row
list read: 18 us against 330 us), and it writes dates
and naive-UTC datetimes as the protocol wants (``OPT_NAIVE_UTC | OPT_UTC_Z``).
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._messages import (
    DecodeError,
    ErrorInfo,
    FilterSpec,
    InboundMessage,
    MessageId,
    MessageType,
    Notification,
    Operation,
    OutboundMessage,
    Ping,
    Pong,
    PreloadSpec,
    QueryOptions,
    RecordId,
    Request,
    Response,
    ResumePosition,
    SortSpec,
    Subscribe,
    Unsubscribe,
)

_T = TypeVar("_T")

#: orjson options for every frame we write: naive datetimes are UTC and written with a "Z"
#: (docs/protocol.md "Messages"; DESIGN-NOTES decision 3).
_DUMPS_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z

#: Integers we accept for ``limit``/``offset``: anything larger cannot be bound as a 64-bit
#: SQL integer, so it would turn a client mistake into a storage error.
_MAX_INT = 2**63 - 1
#: Largest float that converts to an int exactly (integral floats are accepted as ints).
_MAX_EXACT_FLOAT = 2.0**53

#: Client strings echoed in error messages are cut to this many characters.
_ECHO_LIMIT = 100

# Enum values as plain strings: reading ``.value`` costs a descriptor call per use.
_PING = MessageType.PING.value
_REQUEST = MessageType.REQUEST.value
_SUBSCRIPTION = MessageType.SUBSCRIPTION.value
_SUBSCRIBE = Operation.SUBSCRIBE.value
_UNSUBSCRIBE = Operation.UNSUBSCRIBE.value
_RESPONSE = MessageType.RESPONSE.value
_NOTIFICATION = MessageType.NOTIFICATION.value
_PONG = MessageType.PONG.value
_READ = Operation.READ.value

_REQUEST_OPERATIONS = {
    "read": Operation.READ,
    "create": Operation.CREATE,
    "update": Operation.UPDATE,
    "delete": Operation.DELETE,
    "meta": Operation.META,
}


# --- timestamps -------------------------------------------------------------------------

_EPOCH = datetime.datetime(1970, 1, 1)


def format_timestamp(now: float) -> str:
    """RFC 3339, UTC, with milliseconds and a ``Z``: ``2025-12-12T10:30:00.123Z``.

    ``now`` is seconds since the epoch, supplied by the caller: the core never reads a
    clock.  It is rounded to the nearest millisecond.
    """
    seconds, millis = divmod(round(now * 1000), 1000)
    # Formatting the date and time costs about 3.5 us, and a server answering one request
    # at a time sees a new millisecond in nearly every response: the seconds are
    # formatted once per second (the last few remembered), the milliseconds looked up.
    return _second(seconds) + _MILLIS[millis]


#: ``.000Z`` to ``.999Z``.
_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


@functools.lru_cache(maxsize=8)
def _second(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of ``seconds`` since the epoch."""
    moment = _EPOCH + datetime.timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}"


# --- decode: client frames --------------------------------------------------------------


class _Invalid(Exception):
    """Internal: the first problem found in a frame. Never escapes :func:`decode`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _echo(value: str) -> str:
    return value if len(value) <= _ECHO_LIMIT else value[:_ECHO_LIMIT] + "..."


def _integral(value: object) -> int | None:
    """``value`` as an int if it is a JSON integer (or an integral float), else ``None``.

    Booleans are not integers on the wire, even though Python says they are.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_EXACT_FLOAT:
        return int(value)
    return None


def _read_id(value: object) -> MessageId | None:
    """A message id as sent: a string or a number (integral), never a bool."""
    if isinstance(value, str):
        return value
    return _integral(value)


#: ``options`` objects already checked, by their JSON text (see :func:`decode`).
OptionsCache = dict[bytes, QueryOptions]

#: Options whose JSON text is longer than this are not kept in an ``OptionsCache``: the
#: common shapes are a few filters, and the cache must not hold large client strings.
_CACHED_OPTIONS_BYTES = 512
#: An ``OptionsCache`` is cleared when it holds this many shapes.
_OPTIONS_CACHE_SIZE = 1024


def decode(
    frame: str | bytes, *, options_cache: OptionsCache | None = None
) -> InboundMessage | DecodeError:
    """Parse and check one client frame (text, or binary holding UTF-8 JSON).

    Returns the message, or a :class:`DecodeError` describing the first problem found
    (docs/protocol.md "Validation order" and "Errors").  Never raises, whatever the input.

    ``options_cache`` (the engine passes one of its own) remembers the ``QueryOptions``
    of valid ``options`` objects by their JSON text: a client repeating a query shape gets
    the same (frozen) ``QueryOptions`` object back without the walk that checks it, and
    the engine's compiled-query cache then finds it by identity.
    """
    try:
        parsed = orjson.loads(frame)
    except Exception:  # orjson.JSONDecodeError; also its depth limit, bad UTF-8, bad types
        return _error("", "invalid_message", "Failed to parse message: not a UTF-8 JSON text")
    return decode_parsed(parsed, options_cache=options_cache)


def decode_parsed(
    parsed: Any, *, options_cache: OptionsCache | None = None
) -> InboundMessage | DecodeError:
    """:func:`decode` of a frame already parsed by ``orjson.loads`` (the engine parses
    it itself to try its direct read path first)."""
    if type(parsed) is not dict:  # orjson builds plain dicts: no subclass to allow for
        return _error("", "invalid_message", "Message must be a JSON object")
    try:
        # The plain read first, as _decode_object would try it, one call sooner.
        if parsed.get("type") == _REQUEST and parsed.get("operation") == _READ:
            read = _decode_plain_read(parsed, options_cache)
            if read is not None:
                return read
        return _decode_object(parsed, options_cache)
    except Exception:  # pragma: no cover - a bug in this module; the tests fuzz for it
        # Belt and braces: a frame must never crash a connection (STYLE.md principle 6).
        message_id = _read_id(parsed.get("id"))
        return _error(
            "" if message_id is None else message_id, "invalid_message", "Invalid message"
        )


def _error(
    message_id: MessageId,
    code: str,
    message: str,
    entity_ref: tuple[str | None, str] | None = None,
) -> DecodeError:
    return DecodeError(
        id=message_id, error=ErrorInfo(code=code, message=message), entity_ref=entity_ref
    )


def _decode_object(
    obj: dict[str, Any], options_cache: OptionsCache | None = None
) -> InboundMessage | DecodeError:
    """Check a parsed JSON object. Raises nothing for any JSON-shaped input."""
    if obj.get("type") == _REQUEST and obj.get("operation") == _READ:
        read = _decode_plain_read(obj, options_cache)
        if read is not None:
            return read
    raw_id = obj.get("id")
    message_id = _read_id(raw_id)
    error_id: MessageId = "" if message_id is None else message_id

    # 1. type
    raw_type = obj.get("type")
    if raw_type is None:
        return _error(error_id, "invalid_message", "Message has no type")
    if not isinstance(raw_type, str):
        return _error(error_id, "invalid_message", "Message type must be a string")
    kind = raw_type.lower()
    if kind == _PING:
        if raw_id is not None and message_id is None:
            return _error("", "invalid_message", "Message id must be a string or a number")
        return Ping(id=message_id)
    if kind not in (_REQUEST, _SUBSCRIPTION):
        return _error(error_id, "invalid_message_type", f"Unknown message type: {_echo(raw_type)}")

    # 2. id
    if message_id is None or message_id == "":
        return _error(
            error_id, "invalid_message", "Message id is required: a non-empty string or a number"
        )

    # 3. operation
    raw_operation = obj.get("operation")
    if raw_operation is None:
        return _error(message_id, "invalid_message", "Message has no operation")
    if not isinstance(raw_operation, str):
        return _error(message_id, "invalid_message", "operation must be a string")
    operation_name = raw_operation.lower()
    if kind == _REQUEST:
        operation = _REQUEST_OPERATIONS.get(operation_name)
        if operation is None:
            return _error(
                message_id, "invalid_operation", f"Unknown operation: {_echo(raw_operation)}"
            )
        return _decode_request(obj, message_id, operation, options_cache)
    if operation_name == _SUBSCRIBE:
        return _decode_subscribe(obj, message_id, options_cache)
    if operation_name == _UNSUBSCRIBE:
        return _decode_unsubscribe(obj, message_id)
    return _error(
        message_id,
        "invalid_subscription_operation",
        f"Unknown subscription operation: {_echo(raw_operation)}",
    )


def _decode_plain_read(obj: dict[str, Any], options_cache: OptionsCache | None) -> Request | None:
    """The fast path of the most common message: a read, written as clients write it
    (``type`` and ``operation`` in lower case, a non-empty string or integer ``id``, a
    string ``entity``, no schema or a string one, a string or integer ``record_id`` if
    any, valid options). It makes the same checks as the general path for exactly those
    shapes, and skips only the ones that cannot fail for them (case folding, float ids
    and record ids, the data of writes). Anything else, and any problem, returns ``None``
    and the general path decodes the object from the start and reports the first problem
    in the documented order: nothing here has changed state, so trying costs nothing
    but time. tests/core/test_fast_paths.py compares the two on arbitrary objects.
    """
    parts = plain_read(obj, options_cache)
    if parts is None:
        return None
    message_id, entity, schema, record_id, options = parts
    return Request(
        id=message_id,
        operation=Operation.READ,
        entity=entity,
        schema=schema,
        record_id=record_id,
        options=options,
    )


def plain_read(
    obj: dict[str, Any], options_cache: OptionsCache | None
) -> tuple[MessageId, str, str | None, RecordId | None, QueryOptions] | None:
    """What :func:`_decode_plain_read` checks, as the fields of the ``Request`` it would
    return: ``(id, entity, schema, record_id, options)``, or ``None``. ``obj`` is a read
    (``type`` and ``operation`` checked by the caller). The engine's direct read path
    (``Engine._read_parsed``) takes these and builds a ``Request`` only if it needs one.
    """
    message_id: Any = obj.get("id")
    kind = type(message_id)
    if not (kind is int or (kind is str and message_id)):
        return None
    entity = obj.get("entity")
    if type(entity) is not str or not entity:
        return None
    schema = obj.get("schema")
    if schema is not None:
        if type(schema) is not str:
            return None
        if not schema:
            schema = None
    record_id = obj.get("record_id")
    if record_id is not None:
        kind = type(record_id)
        if kind is str:
            if not record_id:
                record_id = None
        elif kind is not int:
            return None
    raw_options = obj.get("options")
    if raw_options is None:  # a read by id usually has none: skip the call
        options = _NO_OPTIONS
    else:
        try:
            options = _read_options(raw_options, options_cache)
        except _Invalid:
            return None
    return message_id, entity, schema, record_id, options


def _read_schema(obj: dict[str, Any]) -> str | None:
    schema = obj.get("schema")
    if schema is None or schema == "":
        return None
    if not isinstance(schema, str):
        raise _Invalid("invalid_message", "schema must be a string")
    return schema


def _read_entity(obj: dict[str, Any], *, required: bool) -> str:
    entity = obj.get("entity")
    if entity is None or entity == "":
        if required:
            raise _Invalid("invalid_message", "Message has no entity")
        return ""
    if not isinstance(entity, str):
        raise _Invalid("invalid_message", "entity must be a string")
    return entity


def _decode_request(
    obj: dict[str, Any],
    message_id: MessageId,
    operation: Operation,
    options_cache: OptionsCache | None = None,
) -> Request | DecodeError:
    # 4. entity and schema
    try:
        entity = _read_entity(obj, required=operation is not Operation.META)
        schema = _read_schema(obj)
    except _Invalid as problem:
        return _error(message_id, problem.code, problem.message)
    # From here on the engine resolves the entity before reporting our error.
    entity_ref = (schema, entity) if entity else None
    try:
        # 5. record_id
        raw_record_id = obj.get("record_id")
        record_id: RecordId | None
        if raw_record_id is None or raw_record_id == "":
            record_id = None
        elif isinstance(raw_record_id, str):
            record_id = raw_record_id
        else:
            record_id = _integral(raw_record_id)
            if record_id is None:
                raise _Invalid("invalid_message", "record_id must be a string or an integer")
        if record_id is None and operation in (Operation.UPDATE, Operation.DELETE):
            raise _Invalid("invalid_message", f"record_id is required for {operation.value}")
        # 6. data
        data: Any = None
        if operation is Operation.CREATE:
            data = obj.get("data")
            if not (
                isinstance(data, dict)
                or (
                    isinstance(data, list) and data and all(isinstance(item, dict) for item in data)
                )
            ):
                raise _Invalid(
                    "invalid_message",
                    "data must be an object or a non-empty array of objects for create",
                )
        elif operation is Operation.UPDATE:
            data = obj.get("data")
            if not isinstance(data, dict):
                raise _Invalid("invalid_message", "data must be an object for update")
        # 7. options
        options = _read_options(obj.get("options"), options_cache)
    except _Invalid as problem:
        return _error(message_id, problem.code, problem.message, entity_ref)
    return Request(
        id=message_id,
        operation=operation,
        entity=entity,
        schema=schema,
        record_id=record_id,
        data=data,
        options=options,
    )


def _decode_subscribe(
    obj: dict[str, Any], message_id: MessageId, options_cache: OptionsCache | None = None
) -> Subscribe | DecodeError:
    try:
        entity = _read_entity(obj, required=True)
        schema = _read_schema(obj)
    except _Invalid as problem:
        return _error(message_id, problem.code, problem.message)
    try:
        options = _read_options(obj.get("options"), options_cache)
    except _Invalid as problem:
        return _error(message_id, problem.code, problem.message, (schema, entity))
    snapshot = obj.get("snapshot")
    if snapshot is not None and not isinstance(snapshot, bool):
        return _error(message_id, "invalid_message", "snapshot must be true or false")
    raw_resume = obj.get("resume")
    resume = None
    if raw_resume is not None:
        resume = _read_resume(raw_resume)
        if resume is None:
            return _error(
                message_id,
                "invalid_message",
                "resume must be an object {epoch: string, seq: non-negative integer}",
            )
    return Subscribe(
        id=message_id,
        entity=entity,
        schema=schema,
        options=options,
        snapshot=snapshot is True,
        resume=resume,
    )


def _read_resume(value: object) -> ResumePosition | None:
    """``{"epoch": str, "seq": int >= 0}``, or ``None`` when it is not that."""
    if not isinstance(value, dict):
        return None
    epoch = value.get("epoch")
    seq = _integral(value.get("seq"))
    if not isinstance(epoch, str) or seq is None or seq < 0 or seq > _MAX_INT:
        return None
    return ResumePosition(epoch=epoch, seq=seq)


def _decode_unsubscribe(obj: dict[str, Any], message_id: MessageId) -> Unsubscribe | DecodeError:
    subscription_id = obj.get("subscription_id")
    if subscription_id is None or subscription_id == "":
        return _error(message_id, "missing_subscription_id", "subscription_id is required")
    if not isinstance(subscription_id, str):
        return _error(message_id, "invalid_message", "subscription_id must be a string")
    return Unsubscribe(id=message_id, subscription_id=subscription_id)


# --- options ------------------------------------------------------------------------------


def _where(prefix: str, index: int | None = None, field: str | None = None) -> str:
    """``options.filters[2].column``: built only when there is an error to report."""
    where = prefix if index is None else f"{prefix}[{index}]"
    return where if field is None else f"{where}.{field}"


def _options_error(message: str) -> _Invalid:
    return _Invalid("invalid_options", message)


def _array(
    value: object, prefix: str, index: int | None = None, field: str | None = None
) -> list[Any]:
    if not isinstance(value, list):
        raise _options_error(f"{_where(prefix, index, field)} must be an array")
    return value


def _object(value: object, prefix: str, index: int | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _options_error(f"{_where(prefix, index)} must be an object")
    return value


def _string(value: object, prefix: str, index: int, field: str) -> str:
    if not isinstance(value, str):
        raise _options_error(f"{_where(prefix, index, field)} must be a string")
    return value


def _strings(
    value: object, prefix: str, index: int | None = None, field: str | None = None
) -> tuple[str, ...]:
    items = _array(value, prefix, index, field)
    for position, item in enumerate(items):
        if not isinstance(item, str):
            where = _where(prefix, index, field)
            raise _options_error(f"{where}[{position}] must be a string")
    return tuple(items)


def _count(value: object, where: str) -> int | None:
    if value is None:
        return None
    number = _integral(value)
    if number is None or number < 0:
        raise _options_error(f"{where} must be a non-negative integer")
    if number > _MAX_INT:
        raise _options_error(f"{where} is too large")
    return number


#: Options are frozen values, so the empty one is shared.
_NO_OPTIONS = QueryOptions()


#: Filter values an ``OptionsCache`` may share between requests: immutable ones. A list
#: (``in``) could be changed in place by a hook, so options holding one are never shared.
_SHAREABLE_VALUES = frozenset({str, int, float, bool, type(None)})


def _read_options(value: object, cache: OptionsCache | None = None) -> QueryOptions:
    """Check the structure of ``options`` (docs/protocol.md "Query options").

    Unknown keys are ignored: Go clients send ``customOperators``, ``fetch_row_number``
    and others that this project does not implement.  Error messages name the offending
    field (``options.filters[2].column must be a string``).

    With a ``cache``, valid options are remembered by their JSON text. That is safe
    because the result depends on nothing but the parsed value, and orjson writes two
    parsed values as the same text only when they are equal *and* of the same types
    (``1``, ``1.0`` and ``true`` are written differently; so are ``0.0`` and ``-0.0``).
    Only options with immutable filter values are kept (``_SHAREABLE_VALUES``), so a
    shared ``QueryOptions`` is a value no one can change. Invalid options are never kept:
    they take the walk below, which reports the first problem.
    """
    if value is None:
        return _NO_OPTIONS
    if not isinstance(value, dict):
        raise _options_error("options must be an object")
    if cache is None:
        return _walk_options(value)
    try:
        text = orjson.dumps(value)
    except TypeError:  # orjson's own limits (integers beyond 64 bits...): just walk
        return _walk_options(value)
    found = cache.get(text)
    if found is not None:
        return found
    options = _walk_options(value)
    if len(text) <= _CACHED_OPTIONS_BYTES and all(
        type(spec.value) in _SHAREABLE_VALUES for spec in options.filters
    ):
        if len(cache) >= _OPTIONS_CACHE_SIZE:
            cache.clear()
        cache[text] = options
    return options


def _walk_options(options: dict[str, Any]) -> QueryOptions:
    """Check the structure of an ``options`` object (see :func:`_read_options`)."""
    filters: list[FilterSpec] = []
    raw_filters = options.get("filters")
    if raw_filters is not None:
        prefix = "options.filters"
        for index, item in enumerate(_array(raw_filters, prefix)):
            spec = _object(item, prefix, index)
            logic = spec.get("logic_operator")
            filters.append(
                FilterSpec(
                    column=_string(spec.get("column"), prefix, index, "column"),
                    operator=_string(spec.get("operator"), prefix, index, "operator"),
                    value=spec.get("value"),
                    logic_operator=(
                        "AND" if logic is None else _string(logic, prefix, index, "logic_operator")
                    ),
                )
            )

    raw_columns = options.get("columns")
    columns = None if raw_columns is None else _strings(raw_columns, "options.columns")
    raw_omit = options.get("omit_columns")
    omit_columns = () if raw_omit is None else _strings(raw_omit, "options.omit_columns")

    preload: list[PreloadSpec] = []
    raw_preload = options.get("preload")
    if raw_preload is not None:
        prefix = "options.preload"
        for index, item in enumerate(_array(raw_preload, prefix)):
            if isinstance(item, str):  # a bare relation name
                preload.append(PreloadSpec(relation=item))
                continue
            spec = _object(item, prefix, index)
            raw_preload_columns = spec.get("columns")
            preload.append(
                PreloadSpec(
                    relation=_string(spec.get("relation"), prefix, index, "relation"),
                    columns=(
                        None
                        if raw_preload_columns is None
                        else _strings(raw_preload_columns, prefix, index, "columns")
                    ),
                )
            )

    sort: list[SortSpec] = []
    raw_sort = options.get("sort")
    if raw_sort is not None:
        prefix = "options.sort"
        for index, item in enumerate(_array(raw_sort, prefix)):
            spec = _object(item, prefix, index)
            direction = spec.get("direction")
            sort.append(
                SortSpec(
                    column=_string(spec.get("column"), prefix, index, "column"),
                    direction=(
                        "asc"
                        if direction is None
                        else _string(direction, prefix, index, "direction")
                    ),
                )
            )

    return QueryOptions(
        filters=tuple(filters),
        columns=columns,
        omit_columns=omit_columns,
        preload=tuple(preload),
        sort=tuple(sort),
        limit=_count(options.get("limit"), "options.limit"),
        offset=_count(options.get("offset"), "options.offset"),
    )


# --- the converter ------------------------------------------------------------------------


def _success_payload(
    message_id: MessageId, data: Any, metadata: dict[str, Any] | None, timestamp: str
) -> dict[str, Any]:
    """A successful ``Response`` as its JSON object, keys in wire order. The one place that
    says so: the converter's hook for ``Response`` and :func:`encode_success` both use it,
    so the two give the same bytes."""
    if metadata is None:
        return {
            "id": message_id,
            "type": _RESPONSE,
            "success": True,
            "data": data,
            "timestamp": timestamp,
        }
    return {
        "id": message_id,
        "type": _RESPONSE,
        "success": True,
        "data": data,
        "metadata": metadata,
        "timestamp": timestamp,
    }


def _identity(value: _T) -> _T:
    return value


def _structure_any(value: _T, _: object) -> _T:
    return value


def _strict(kind: type[_T]) -> Callable[[object, type[_T]], _T]:
    """A structure hook that accepts only values of ``kind`` (cattrs' default would call
    ``kind(value)``, turning ``1`` into ``"1"`` or ``True``)."""

    def structure(value: object, _: type[_T]) -> _T:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


def _structure_message_id(value: object, _: object) -> MessageId:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError(f"a message id must be a string or an integer, got {value!r}")


def _structure_optional_message_id(value: object, _: object) -> MessageId | None:
    return None if value is None else _structure_message_id(value, None)


def _structure_json_object(value: object, _: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _structure_optional_json_object(value: object, _: object) -> dict[str, Any] | None:
    return None if value is None else _structure_json_object(value, None)


def make_converter() -> cattrs.Converter:
    """The cattrs converter for the wire format (STYLE.md principle 5).

    Unstructuring gives the JSON-ready dict of any message class, inbound or outbound, as
    it appears on the wire: ``type`` included, enums as their lower-case values, optional
    fields omitted as docs/protocol.md "Messages" says, record values (``data``,
    ``metadata``, filter values) passed through untouched for the JSON library.
    Structuring is strict (no ``"1"`` from ``1``) and is used for server frames
    (:func:`decode_outbound`); client frames go through :func:`decode`, which applies the
    protocol's validation rules.  Each call builds a new converter.
    """
    converter = cattrs.Converter()
    # Record values are already JSON-ready Python values (or dates, which orjson writes):
    # never copy them element by element.
    passthrough = override(unstruct_hook=_identity, struct_hook=_structure_any)

    for kind in (str, bool, float):
        converter.register_structure_hook(kind, _strict(kind))
    converter.register_structure_hook(int, _strict(int))
    converter.register_structure_hook(MessageId, _structure_message_id)
    converter.register_structure_hook(MessageId | None, _structure_optional_message_id)
    # Generic aliases are not classes: match them by equality.
    converter.register_structure_hook_func(
        lambda kind: kind == dict[str, Any], _structure_json_object
    )
    converter.register_structure_hook_func(
        lambda kind: kind == dict[str, Any] | None, _structure_optional_json_object
    )

    # --- outbound: to JSON (encode) and back (decode_outbound) ---
    error_unstructure = make_dict_unstructure_fn(
        ErrorInfo, converter, _cattrs_omit_if_default=True, details=passthrough
    )
    converter.register_unstructure_hook(ErrorInfo, error_unstructure)
    converter.register_structure_hook(
        ErrorInfo, make_dict_structure_fn(ErrorInfo, converter, _cattrs_forbid_extra_keys=True)
    )

    def unstructure_response(message: Response) -> dict[str, Any]:
        if message.success is True:
            return _success_payload(message.id, message.data, message.metadata, message.timestamp)
        out: dict[str, Any] = {
            "id": message.id,
            "type": _RESPONSE,
            "success": message.success,
        }
        if message.success:
            out["data"] = message.data
        elif message.error is not None:
            out["error"] = error_unstructure(message.error)
        if message.metadata is not None:
            out["metadata"] = message.metadata
        out["timestamp"] = message.timestamp
        return out

    converter.register_unstructure_hook(Response, unstructure_response)

    def unstructure_notification(message: Notification) -> dict[str, Any]:
        if message.seq is None and message.change is None:  # no change feed
            return {
                "type": _NOTIFICATION,
                "operation": message.operation.value,
                "subscription_id": message.subscription_id,
                "schema": message.schema,
                "entity": message.entity,
                "data": message.data,
                "timestamp": message.timestamp,
            }
        out: dict[str, Any] = {"type": _NOTIFICATION, "operation": message.operation.value}
        if message.change is not None:
            out["change"] = message.change
        if message.seq is not None:
            out["seq"] = message.seq
        out["subscription_id"] = message.subscription_id
        out["schema"] = message.schema
        out["entity"] = message.entity
        out["data"] = message.data
        out["timestamp"] = message.timestamp
        return out

    converter.register_unstructure_hook(Notification, unstructure_notification)

    def unstructure_pong(message: Pong) -> dict[str, Any]:
        out: dict[str, Any] = {"type": _PONG}
        if message.id is not None:
            out["id"] = message.id
        if message.data is not None:  # a change feed's position
            out["data"] = message.data
        out["timestamp"] = message.timestamp
        return out

    converter.register_unstructure_hook(Pong, unstructure_pong)

    converter.register_structure_hook(
        Response,
        make_dict_structure_fn(
            Response, converter, _cattrs_forbid_extra_keys=True, data=passthrough
        ),
    )
    converter.register_structure_hook(
        Notification,
        make_dict_structure_fn(
            Notification, converter, _cattrs_forbid_extra_keys=True, data=passthrough
        ),
    )
    converter.register_structure_hook(
        Pong,
        make_dict_structure_fn(Pong, converter, _cattrs_forbid_extra_keys=True, data=passthrough),
    )

    # --- inbound: to JSON (encode_inbound) ---
    for spec_class in (SortSpec, PreloadSpec, QueryOptions):
        converter.register_unstructure_hook(
            spec_class,
            make_dict_unstructure_fn(spec_class, converter, _cattrs_omit_if_default=True),
        )
    # A filter is always written whole: a ``value`` of null is meaningful (IS NULL).
    converter.register_unstructure_hook(
        FilterSpec, make_dict_unstructure_fn(FilterSpec, converter, value=passthrough)
    )

    request_fields = make_dict_unstructure_fn(
        Request, converter, _cattrs_omit_if_default=True, data=passthrough
    )

    def unstructure_request(message: Request) -> dict[str, Any]:
        out = {"type": _REQUEST, **request_fields(message)}
        out["id"] = message.id  # an id is never omitted
        out["operation"] = message.operation.value
        out["entity"] = message.entity
        return out

    converter.register_unstructure_hook(Request, unstructure_request)

    subscribe_fields = make_dict_unstructure_fn(Subscribe, converter, _cattrs_omit_if_default=True)

    def unstructure_subscribe(message: Subscribe) -> dict[str, Any]:
        return {
            "type": _SUBSCRIPTION,
            "operation": _SUBSCRIBE,
            **subscribe_fields(message),
        }

    converter.register_unstructure_hook(Subscribe, unstructure_subscribe)

    def unstructure_unsubscribe(message: Unsubscribe) -> dict[str, Any]:
        return {
            "type": _SUBSCRIPTION,
            "operation": _UNSUBSCRIBE,
            "id": message.id,
            "subscription_id": message.subscription_id,
        }

    converter.register_unstructure_hook(Unsubscribe, unstructure_unsubscribe)

    def unstructure_ping(message: Ping) -> dict[str, Any]:
        if message.id is None:
            return {"type": _PING}
        return {"type": _PING, "id": message.id}

    converter.register_unstructure_hook(Ping, unstructure_ping)
    return converter


# Built once at import and never mutated afterwards (no hook is registered on it outside
# make_converter), so sharing it is safe; building one per call would cost a millisecond.
_CONVERTER = make_converter()
_unstructure = _CONVERTER.unstructure
# encode() runs for every response and notification: looking the hook up by exact class
# skips cattrs' dispatch (0.9 -> 0.7 us for a small response, measured).
_OUTBOUND_HOOKS: dict[type, Callable[[Any], dict[str, Any]]] = {
    cls: _CONVERTER.get_unstructure_hook(cls) for cls in (Response, Notification, Pong)
}


# --- encode: server frames ------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        return value.isoformat() + "Z"
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def encode_json(payload: Mapping[str, Any]) -> str:
    """Any JSON object as one frame's text, rendered exactly as :func:`encode` renders
    messages (dates, naive-UTC datetimes with ``Z``): for adapters' broadcasts."""
    try:
        return orjson.dumps(payload, option=_DUMPS_OPTIONS).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits, strings with lone surrogates and
        # non-string keys; the stdlib writes them (ASCII-escaped, so the text is still
        # valid UTF-8).  Rare, so speed does not matter here.
        return json.dumps(payload, default=_json_default, separators=(",", ":"), allow_nan=False)


def encode(message: OutboundMessage) -> str:
    """One JSON object text for one frame (docs/protocol.md "Messages").

    Record values may be ``int float str bool None list dict``, ``datetime.date``
    (``"YYYY-MM-DD"``) and naive-UTC ``datetime.datetime`` (RFC 3339 with ``Z``).
    Non-finite floats are written as ``null`` (JSON has no NaN).  Any other value type
    is a bug in the caller and raises :class:`TypeError`.
    """
    return encode_json(_OUTBOUND_HOOKS[type(message)](message))


def encode_success(
    message_id: MessageId, data: Any, metadata: dict[str, Any] | None, timestamp: str
) -> str:
    """``encode(Response(id=message_id, success=True, ...))`` without building the
    ``Response``: the engine answers most requests with a success, and the frozen object
    costs more to build than the JSON costs to write. Same bytes (``_success_payload``);
    raises ``TypeError`` like :func:`encode` for a value the codec cannot write."""
    payload = _success_payload(message_id, data, metadata, timestamp)
    try:
        # encode_json's first try, one call sooner; what orjson refuses goes through it.
        return orjson.dumps(payload, option=_DUMPS_OPTIONS).decode()
    except TypeError:
        return encode_json(payload)


# --- client-side helpers ----------------------------------------------------------------


def encode_inbound(message: InboundMessage) -> str:
    """The JSON text a client would send for ``message``: enums in lower case, ``None``
    and default fields omitted.  For test clients and the fuzzing kit."""
    payload: dict[str, Any] = _unstructure(message)
    return encode_json(payload)


_OUTBOUND_CLASSES: dict[str, type[Response] | type[Notification] | type[Pong]] = {
    _RESPONSE: Response,
    _NOTIFICATION: Notification,
    _PONG: Pong,
}


def decode_outbound(frame: str | bytes) -> OutboundMessage:
    """Parse a server frame into a :class:`Response`, :class:`Notification` or
    :class:`Pong`; raise :class:`ValueError` on anything else.  For test clients."""
    try:
        parsed = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not a JSON text: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError("a server frame must be a JSON object")
    fields = dict(parsed)
    kind = fields.pop("type", None)
    cls = _OUTBOUND_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"not a server message type: {kind!r}")
    if cls is Response:
        success = fields.get("success")
        if success is True and "data" not in fields:
            raise ValueError("a successful response must carry data")
        if success is False and ("data" in fields or "error" not in fields):
            raise ValueError("a failed response must carry an error and no data")
    elif cls is Pong:
        fields.setdefault("id", None)
    try:
        message: OutboundMessage = _CONVERTER.structure(fields, cls)
    except Exception as exc:  # cattrs reports through exception groups
        raise ValueError(f"malformed {kind} message: {_describe(exc)}") from None
    return message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return str(exc)


__all__ = [
    "decode",
    "decode_outbound",
    "encode",
    "encode_inbound",
    "format_timestamp",
    "make_converter",
]
