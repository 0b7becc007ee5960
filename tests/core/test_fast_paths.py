"""The engine's fast paths give the same bytes as the general ones (issue 11).

* ``encode_success`` writes a success response without building a ``Response``: same bytes
  as ``encode(Response(...))``, key order included.
* ``decode(..., options_cache=...)`` hands back remembered ``QueryOptions``: the same
  message as a decode without the cache, whatever was remembered before (``1``, ``1.0``
  and ``true`` are three shapes, as are ``0.0`` and ``-0.0``).
* The compiler's identity cache compiles repeated shapes to what a fresh compiler does.
* An engine without hooks (every continuation skipped) sends the same frames, byte for
  byte, as one whose no-op hooks take the general path through ``RunHooks``.
* A read takes the engine's direct path when no hook a read runs is registered: the same
  actions as the general path, and ``RequestCompiler.read`` compiles as ``compile`` does.
* A read of a known shape goes from the parsed frame to its ``RunStorage`` without a
  ``Request`` (``Engine._read_parsed``): the same actions as a read decoded first, through
  queues, failures, odd results, hooks and entities registered midway.
* A read the adapter runs inline through ``Engine.run_inline`` (its outcome handled in
  the same ``handle()`` call) causes the actions an adapter that runs its ``RunStorage``
  at once and feeds the outcome next gets, in the same order; a ``Send.answers`` hint
  is what its frame answers; ``Engine.message_received`` and ``Engine.frames_written``
  return what ``handle()`` returns for the events they stand for.
* A read by key of an idle connection that ``run_inline`` answers is answered in place
  (``Engine._read_at_once``): the actions and flow-control state of the path it replaces.
* ``quick_init`` builds the objects attrs' own ``__init__`` builds; ``quick_new`` and
  ``read_run`` build the objects the classes build.
"""

from __future__ import annotations

import datetime
import decimal
import inspect
from typing import Any

import attrs
import orjson
import pytest
from engine_driver import Driver
from hypothesis import given, settings
from hypothesis import strategies as st

import wsspec_core as ws
from wsspec_core._codec import OptionsCache, encode_success
from wsspec_core._pipeline import Connection, ConnState, read_run
from wsspec_core._requests import RequestCompiler

USERS = ws.Entity(
    schema="public",
    name="users",
    table_name="users",
    columns=[
        ws.Column(name="id", type=ws.ColumnType.INTEGER, nullable=False, primary_key=True),
        ws.Column(name="name", type=ws.ColumnType.TEXT),
        ws.Column(name="status", type=ws.ColumnType.TEXT),
        ws.Column(name="age", type=ws.ColumnType.INTEGER),
        ws.Column(name="score", type=ws.ColumnType.FLOAT),
        ws.Column(name="born", type=ws.ColumnType.DATE),
    ],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 1.0, True, 0.0, -0.0, False, "1", "active", ""]),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300)
@given(
    message_id=st.one_of(st.text(max_size=10), st.integers(min_value=-(2**63), max_value=2**64)),
    data=st.one_of(
        json_values, st.dates(), st.datetimes(), st.integers(min_value=2**64, max_value=2**70)
    ),
    metadata=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), scalars, max_size=4)),
)
def test_encode_success_is_encode_of_a_response(
    message_id: Any, data: Any, metadata: dict[str, Any] | None
) -> None:
    timestamp = "2025-01-01T00:00:00.000Z"
    general = ws.encode(
        ws.Response(id=message_id, success=True, timestamp=timestamp, data=data, metadata=metadata)
    )
    assert encode_success(message_id, data, metadata, timestamp) == general


def test_encode_success_refuses_what_encode_refuses() -> None:
    for bad in (object(), {1j}, [decimal.Decimal("1.5")]):
        try:
            ws.encode(ws.Response(id="x", success=True, timestamp="t", data=bad))
        except TypeError:
            pass
        else:  # pragma: no cover
            raise AssertionError(f"encode wrote {bad!r}")
        try:
            encode_success("x", bad, None, "t")
        except TypeError:
            continue
        raise AssertionError(f"encode_success wrote {bad!r}")  # pragma: no cover


filters = st.lists(
    st.fixed_dictionaries(
        {
            "column": st.sampled_from(["id", "name", "status", "age", "score", "nope", 5]),
            "operator": st.sampled_from(["eq", "neq", "gte", "in", "like", "is_null", "bad"]),
        },
        optional={
            "value": st.one_of(scalars, st.lists(scalars, max_size=3)),
            "logic_operator": st.sampled_from(["AND", "or", 1]),
        },
    ),
    max_size=3,
)
options = st.fixed_dictionaries(
    {},
    optional={
        "filters": filters,
        "limit": st.one_of(st.integers(min_value=-2, max_value=200), st.floats(0, 20)),
        "offset": st.integers(min_value=-1, max_value=5),
        "columns": st.lists(st.sampled_from(["id", "name", "age", 3]), max_size=3),
        "sort": st.lists(st.fixed_dictionaries({"column": st.sampled_from(["age", "id"])})),
        "extra": json_values,
    },
)


def _frame(i: int, opts: dict[str, Any], record_id: Any = None) -> str:
    message: dict[str, Any] = {
        "id": f"m{i}",
        "type": "request",
        "operation": "read",
        "entity": "users",
        "options": opts,
    }
    if record_id is not None:
        message["record_id"] = record_id
    return orjson.dumps(message).decode()


def _typed(message: Any) -> Any:
    """A decoded message with every filter value tagged by its type (``==`` equates 1,
    1.0 and True; the wire does not)."""
    if isinstance(message, ws.Request):
        return (message, [(type(f.value), repr(f.value)) for f in message.options.filters])
    return message


@settings(max_examples=300)
@given(shapes=st.lists(options, min_size=1, max_size=6), order=st.randoms())
def test_the_options_cache_decodes_as_without_it(shapes: list[dict[str, Any]], order: Any) -> None:
    cache: OptionsCache = {}
    frames = [_frame(i, shape) for i, shape in enumerate(shapes)]
    frames += [_frame(100 + i, shape) for i, shape in enumerate(shapes)]
    order.shuffle(frames)
    for frame in frames:
        assert _typed(ws.decode(frame, options_cache=cache)) == _typed(ws.decode(frame))


def test_the_options_cache_tells_one_from_true_and_from_one_point_zero() -> None:
    cache: OptionsCache = {}
    values = [1, True, 1.0, 0.0, -0.0, False, 0, None, "1"]
    for _ in range(2):
        for value in values:
            opts = {"filters": [{"column": "age", "operator": "eq", "value": value}]}
            message = ws.decode(_frame(0, opts), options_cache=cache)
            assert isinstance(message, ws.Request)
            got = message.options.filters[0].value
            assert type(got) is type(value) and repr(got) == repr(value)
    # Shared objects hold no list a hook could change in place.
    opts = {"filters": [{"column": "age", "operator": "in", "value": [1, 2]}]}
    first = ws.decode(_frame(0, opts), options_cache=cache)
    second = ws.decode(_frame(1, opts), options_cache=cache)
    assert isinstance(first, ws.Request) and isinstance(second, ws.Request)
    assert first.options == second.options
    assert first.options is not second.options


@settings(max_examples=200)
@given(shapes=st.lists(options, min_size=1, max_size=5), record_ids=st.lists(scalars, max_size=4))
def test_repeated_shapes_compile_as_a_fresh_compiler_does(
    shapes: list[dict[str, Any]], record_ids: list[Any]
) -> None:
    registry = ws.EntityRegistry([USERS])
    limits = ws.Limits()
    warm = RequestCompiler(registry, limits)
    conn = Connection(id=1, request=ws.RequestInfo(), state=ConnState.OPEN)
    frames = [
        _frame(i, shape, rid) for i, shape in enumerate(shapes) for rid in [None, *record_ids]
    ]
    for frame in frames * 2:
        fresh = RequestCompiler(registry, limits)
        outcomes = []
        for compiler in (warm, fresh):
            message = ws.decode(frame, options_cache=compiler.options_cache)
            if not isinstance(message, ws.Request):
                outcomes.append(message)
                continue
            try:
                outcomes.append(compiler.compile(conn, message).key)
            except ws.InvalidRequest as exc:
                outcomes.append(exc.error)
        assert outcomes[0] == outcomes[1]
        assert repr(outcomes[0]) == repr(outcomes[1])


def _requests() -> list[dict[str, Any]]:
    """Reads of many shapes, repeated (the cached paths), and mistakes."""
    shapes: list[dict[str, Any]] = [
        {},
        {"filters": [{"column": "status", "operator": "eq", "value": "active"}], "limit": 3},
        {
            "filters": [{"column": "age", "operator": "gte", "value": 18}],
            "sort": [{"column": "age"}],
        },
        {"filters": [{"column": "age", "operator": "eq", "value": 1.0}]},
        {"filters": [{"column": "age", "operator": "eq", "value": True}]},
        {"filters": [{"column": "age", "operator": "in", "value": [1, 2, 3]}]},
        {"filters": [{"column": "nope", "operator": "eq", "value": 1}]},
        {"columns": ["name", "id"], "omit_columns": ["id"]},
        {"limit": -1},
    ]
    out: list[dict[str, Any]] = []
    for round_ in range(2):
        for i, shape in enumerate(shapes):
            base = {"type": "request", "operation": "read", "entity": "users", "options": shape}
            out.append({**base, "id": f"l{round_}-{i}"})
            for record_id in (1, "2", 7, 99, 2.0, True):
                out.append({**base, "id": round_ * 100 + i, "record_id": record_id})
    out.append({"type": "request", "operation": "meta", "id": "meta"})
    out.append({"type": "ping", "id": "p"})
    out.append({"type": "request", "operation": "read", "entity": "ghosts", "id": "g"})
    return out


def _frames_sent(hooks: ws.HookRegistry | None) -> list[str]:
    engine = ws.Engine(ws.EntityRegistry([USERS]), hooks=hooks)
    storage = ws.MemoryStorage(engine.registry)
    driver = Driver(engine, storage)
    driver.connect(1)
    for i in range(10):
        storage.execute(
            ws.Create(
                entity=USERS,
                rows=(
                    {
                        "id": i,
                        "name": f"u{i}",
                        "status": "active" if i % 2 else "gone",
                        "age": 10 + i,
                        "score": i / 3,
                        "born": datetime.date(2000, 1, 1 + i),
                    },
                ),
            )
        )
    for request in _requests():
        driver.send(1, request)
    return [a.frame for a in driver.log if isinstance(a, ws.Send)]


def test_an_engine_without_hooks_sends_the_frames_of_the_general_path() -> None:
    noop = ws.HookRegistry()
    for hook_type in ("before_handle", "before_read", "after_read"):
        noop.register(hook_type, lambda ctx: None)
    fast = _frames_sent(None)
    general = _frames_sent(noop)
    assert len(fast) == len(_requests())
    assert fast == general
    for frame in fast:
        message = ws.decode_outbound(frame)
        assert ws.encode(message) == frame  # the converter's bytes, key order included


read_objects = st.fixed_dictionaries(
    {"type": st.just("request"), "operation": st.just("read")},
    optional={
        "id": st.one_of(scalars, st.just("m1"), st.just(7)),
        "entity": st.one_of(scalars, st.sampled_from(["users", "ghosts", ""])),
        "schema": st.one_of(scalars, st.sampled_from(["public", ""])),
        "record_id": st.one_of(scalars, st.lists(scalars, max_size=2)),
        "data": json_values,
        "options": st.one_of(options, scalars),
    },
)


@settings(max_examples=500)
@given(obj=read_objects)
def test_the_plain_read_fast_path_decodes_as_the_general_path(obj: dict[str, Any]) -> None:
    from wsspec_core._codec import _decode_object, _decode_plain_read

    fast = _decode_plain_read(obj, {})
    # "Request" takes the general path (the fast one wants the usual lower case), which
    # folds the case and decodes everything else alike.
    general = _decode_object({**obj, "type": "Request"})
    if fast is not None:
        assert _typed(fast) == _typed(general)
        assert type(fast.id) is type(general.id)
        assert type(fast.record_id) is type(general.record_id)  # type: ignore[union-attr]
    assert _typed(_decode_object(obj, {})) == _typed(general)


@settings(max_examples=60, deadline=None)
@given(
    # No NUL: a text column refuses it (PostgreSQL cannot store it), so a row holding one
    # is logged and not notified at all.
    name=st.text(max_size=30).filter(lambda text: "\x00" not in text)
    | st.just('"subscription_id":""'),
    subscribers=st.integers(1, 4),
    feed=st.booleans(),
)
def test_a_notification_spliced_for_each_subscriber_is_the_frame_encode_writes(
    name: str, subscribers: int, feed: bool
) -> None:
    """One change to several subscribers is encoded once and spliced around each id: the
    same bytes as ``encode(Notification(...))`` for each, whatever the row holds (even
    the text the splice looks for)."""
    registry = ws.EntityRegistry([USERS])
    engine = ws.Engine(registry, limits=ws.Limits(keepalive_interval=None), change_feed=feed)
    d = Driver(engine)
    if feed:
        d.feed(ws.ChangesLogged(epoch="E", entries=(), through=0, now=d.now))
    ids = []
    for n in range(subscribers):
        d.connect(n)
        reply = d.request(
            n, {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"}
        )
        ids.append(reply["data"]["subscription_id"])
    row = {"id": 1, "name": name, "status": None, "age": None, "score": None, "born": None}
    if feed:
        entry = ws.LogEntry(
            seq=1, schema="public", entity="users", operation=ws.Operation.CREATE, old=None, new=row
        )
        actions = engine.handle(ws.ChangesLogged(epoch="E", entries=(entry,), now=d.now))
    else:
        actions = engine.handle(
            ws.ChangeCommitted(
                schema="public", entity="users", operation=ws.Operation.CREATE, row=row, now=d.now
            )
        )
    frames = [a.frame for a in actions if isinstance(a, ws.Send)]
    timestamp = orjson.loads(frames[0])["timestamp"]
    assert frames == [
        ws.encode(
            ws.Notification(
                operation=ws.Operation.CREATE,
                subscription_id=subscription_id,
                schema="public",
                entity="users",
                data=row,
                timestamp=timestamp,
                seq=1 if feed else None,
                change="added" if feed else None,
            )
        )
        for subscription_id in ids
    ]


# --- the engine's direct read path (issue 11 item 1) ------------------------------------

SMALL = ws.Entity(
    name="small",
    table_name="small",
    columns=[
        ws.Column(
            name="id", type=ws.ColumnType.INTEGER, nullable=False, primary_key=True, integer_bits=16
        ),
        ws.Column(name="name", type=ws.ColumnType.TEXT),
    ],
)
NAMED = ws.Entity(
    name="named",
    table_name="named",
    columns=[
        ws.Column(name="code", type=ws.ColumnType.TEXT, nullable=False, primary_key=True),
        ws.Column(name="age", type=ws.ColumnType.INTEGER),
    ],
)

record_ids = st.one_of(
    scalars,
    st.sampled_from(
        [2**15 - 1, 2**15, -(2**15), -(2**15) - 1, 2**63 - 1, 2**63, -(2**63), "7", "x\x00"]
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    shapes=st.lists(options, min_size=1, max_size=4),
    entities=st.lists(st.sampled_from(["users", "small", "named", "ghosts"]), min_size=1),
    record_ids=st.lists(record_ids, max_size=5),
)
def test_a_read_compiles_as_compile_does(
    shapes: list[dict[str, Any]], entities: list[str], record_ids: list[Any]
) -> None:
    """``RequestCompiler.read`` (one lookup of the read's shape) gives the run ``compile``
    gives, or the same error, whatever it remembered before (integer keys at the edges of
    a 16- and a 64-bit column's range included)."""
    registry = ws.EntityRegistry([USERS, SMALL, NAMED])
    limits = ws.Limits()
    warm = RequestCompiler(registry, limits)
    conn = Connection(id=1, request=ws.RequestInfo(), state=ConnState.OPEN)
    frames = []
    for i, shape in enumerate(shapes):
        for entity in entities:
            for rid in [None, *record_ids]:
                message: dict[str, Any] = {
                    "id": f"m{i}",
                    "type": "request",
                    "operation": "read",
                    "entity": entity,
                    "options": shape,
                }
                if rid is not None:
                    message["record_id"] = rid
                frames.append(orjson.dumps(message).decode())
    for frame in frames * 2:
        fresh = RequestCompiler(registry, limits)
        outcomes = []
        for compiler, direct in ((warm, True), (fresh, False)):
            message = ws.decode(frame, options_cache=compiler.options_cache)
            if not isinstance(message, ws.Request):
                outcomes.append(message)
                continue
            try:
                run = compiler.read(conn, message) if direct else compiler.compile(conn, message)
            except ws.InvalidRequest as exc:
                outcomes.append(exc.error)
            else:
                outcomes.append((run.kind, run.entity, run.options, run.record_id, run.key))
        assert outcomes[0] == outcomes[1]
        assert repr(outcomes[0]) == repr(outcomes[1])


class _Row(dict):  # type: ignore[type-arg]
    """A row of a dict subclass: the direct path leaves it to the general one."""


def _odd_result(variant: int, action: ws.RunStorage, result: Any) -> Any:
    """What a storage backend might answer instead of ``result``: the same, nothing, a
    subclass, a wrong type, a row that cannot be encoded, a large row, a count cut short."""
    if variant == 1:
        return None
    if variant == 2:
        if isinstance(result, ws.ListResult):
            return ws.ListResult(rows=[_Row(row) for row in result.rows], total=result.total)
        return _Row(result) if isinstance(result, dict) else result
    if variant == 3:
        return "not a row"
    if variant == 4:
        row = {"id": 1, "name": decimal.Decimal("1.5")}
        return ws.ListResult(rows=[row], total=1) if isinstance(result, ws.ListResult) else row
    if variant == 5:
        row = {"id": 1, "name": "x" * 5000}
        return ws.ListResult(rows=[row], total=1) if isinstance(result, ws.ListResult) else row
    if variant == 6 and isinstance(result, ws.ListResult):
        return ws.ListResult(rows=result.rows, total=result.total, total_exact=False)
    if variant == 7 and isinstance(result, ws.ListResult):
        return ws.ListResult(rows=[*result.rows, "not a row"], total=result.total)
    return result


def _play(
    hooks: ws.HookRegistry | None,
    script: list[tuple[str, Any]],
    limits: ws.Limits,
    *,
    general: bool = False,
) -> list[Any]:
    """Run ``script`` (reads sent, storage operations completed in a chosen order) and
    return what the adapter was asked to do, operation ids left out. ``general``: every
    hook type counts as one a read runs, so that with any hook registered reads take
    the general path."""
    engine = ws.Engine(ws.EntityRegistry([USERS]), hooks=hooks, limits=limits)
    if general:
        engine._read_hook_types = frozenset(ws.HookType)  # type: ignore[misc]
    storage = ws.MemoryStorage(engine.registry)
    for i in range(5):
        storage.execute(
            ws.Create(
                entity=USERS,
                rows=({"id": i, "name": f"u{i}", "status": "active", "age": 20 + i},),
            )
        )
    variants: dict[Any, int] = {}

    def result_of(action: ws.RunStorage, result: Any) -> Any:
        return _odd_result(variants[action.request_id], action, result)

    driver = Driver(engine, storage, auto=False, storage_result=result_of)
    driver.connect(1)
    while driver.hooks_pending:
        driver.finish_hooks(driver.hooks_pending.popleft())
    for step, arg in script:
        if step == "send":
            message, variant = arg
            variants[message["id"]] = variant
            driver.send(1, message)
        elif driver.storage_pending:
            action = driver.storage_pending[arg % len(driver.storage_pending)]
            driver.storage_pending.remove(action)
            driver.finish_storage(action)
        while driver.hooks_pending:
            driver.finish_hooks(driver.hooks_pending.popleft())
    driver.run_pending()
    return [
        (repr(action.operation), action.request_id) if isinstance(action, ws.RunStorage) else action
        for action in driver.log
    ]


def _with_unique_ids(script: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``script`` with request ids unique within it (they say which odd result each
    read gets)."""
    return [
        (
            (step, ({**arg[0], "id": f"{arg[0]['id']}-{n}"}, arg[1]))
            if step == "send"
            else (step, arg)
        )
        for n, (step, arg) in enumerate(script)
    ]


def _script_limits(in_flight: int, rate_limited: bool) -> ws.Limits:
    """The limits the direct-path scripts are played with."""
    return ws.Limits(
        keepalive_interval=None,
        max_in_flight=in_flight,
        max_reply_bytes=4000,
        rate_limit=1.0 if rate_limited else None,
        rate_burst=3,
    )


read_messages = st.builds(
    lambda n, rid, opts: {
        "id": f"r{n}",
        "type": "request",
        "operation": "read",
        "entity": "users",
        **({"record_id": rid} if rid is not None else {}),
        **({"options": opts} if opts is not None else {}),
    },
    st.integers(0, 10**6),
    st.one_of(st.none(), st.integers(0, 6), st.sampled_from(["3", True, 2**63, 1.5])),
    st.one_of(
        st.none(),
        st.sampled_from(
            [
                {"limit": 2},
                {"filters": [{"column": "status", "operator": "eq", "value": "active"}]},
                {"filters": [{"column": "age", "operator": "gte", "value": 22}], "limit": 1},
                {"columns": ["name"]},
                {"filters": [{"column": "nope", "operator": "eq", "value": 1}]},
            ]
        ),
    ),
)
script_steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.tuples(read_messages, st.integers(0, 7))),
        st.tuples(st.just("complete"), st.integers(0, 10)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(
    script=script_steps,
    in_flight=st.integers(1, 3),
    rate_limited=st.booleans(),
    other=st.sampled_from(["before_subscribe", "before_connect"]),
)
def test_the_direct_read_path_does_what_the_general_path_does(
    script: list[tuple[str, Any]], in_flight: int, rate_limited: bool, other: str
) -> None:
    """Reads through an engine without hooks, or with hooks no read runs (the direct
    path: ``Engine._read``, ``Engine._read_parsed`` and the short way through
    ``StorageCompleted``) cause the same actions, in the same order, as through an engine
    with a hook of another kind whose reads are made to take every general step (and
    skip each hook step, as there is no hook for it): pipelined beyond
    ``max_in_flight``, completed out of order, rate limited, with mistakes and with odd
    storage results."""
    script = _with_unique_ids(script)
    limits = _script_limits(in_flight, rate_limited)
    hooks = ws.HookRegistry()
    hooks.register(other, lambda ctx: None)  # no read runs it
    general = _play(hooks, script, limits, general=True)
    assert _play(hooks, script, limits) == general
    if other == "before_subscribe":  # no hook is ever called: the very same actions
        assert _play(None, script, limits) == general


QUICK_CLASSES = [
    ws.ConnectionOpened,
    ws.MessageReceived,
    ws.ConnectionClosed,
    ws.StorageCompleted,
    ws.StorageFailed,
    ws.HooksCompleted,
    ws.HooksFailed,
    ws.FramesWritten,
    ws.PongReceived,
    ws.TimePassed,
    ws.ChangeCommitted,
    ws.ChangesLogged,
    ws.BroadcastRequested,
    ws.ShutdownRequested,
    ws.AcceptConnection,
    ws.RejectConnection,
    ws.Send,
    ws.RunStorage,
    ws.RunHooks,
    ws.CloseConnection,
    ws.PauseReading,
    ws.ResumeReading,
    ws.SendPing,
    ws.Log,
    ws.Request,
    ws.ReadOne,
]


@pytest.mark.parametrize("cls", QUICK_CLASSES, ids=lambda cls: cls.__name__)
def test_quick_init_builds_what_attrs_builds(cls: Any) -> None:
    """The events, actions, ``Request`` and ``ReadOne`` are built by ``quick_init``'s
    ``__init__``: the signature of the one attrs writes for the same fields (keyword-only,
    the same defaults), every field set to what was given or to its default, frozen."""
    assert cls.__init__.__code__.co_filename == "<string>"  # quick_init's, not attrs'
    fields = attrs.fields(cls)
    reference = attrs.make_class(
        cls.__name__,
        {field.name: attrs.field(default=field.default) for field in fields},
        kw_only=True,
        frozen=True,
    )
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(reference).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [
        (p.name, p.kind, p.default) for p in theirs.values()
    ]
    values = {field.name: object() for field in fields}
    built = cls(**values)
    assert all(getattr(built, field.name) is values[field.name] for field in fields)
    required = {f.name: values[f.name] for f in fields if f.default is attrs.NOTHING}
    built = cls(**required)
    for field in fields:
        expected = values[field.name] if field.name in required else field.default
        assert getattr(built, field.name) is expected
    assert built == cls(**required) and repr(built) == repr(cls(**required))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(built, fields[0].name, 1)
    with pytest.raises(TypeError):
        cls(*values.values())
    with pytest.raises(TypeError):
        cls(**values, unknown=1)


def test_quick_init_refuses_what_it_cannot_build() -> None:
    from wsspec_core._messages import quick_init

    @attrs.frozen(kw_only=True)
    class Checked:
        value: int = attrs.field(validator=attrs.validators.instance_of(int))

    with pytest.raises(TypeError):
        quick_init(Checked)

    @attrs.frozen(kw_only=True, slots=False)
    class Unslotted:
        value: int

    with pytest.raises(TypeError):
        quick_init(Unslotted)


@pytest.mark.parametrize("cls", QUICK_CLASSES, ids=lambda cls: cls.__name__)
def test_quick_new_builds_what_the_class_builds(cls: Any) -> None:
    """``quick_new(cls)(*values)``, the engine's positional builder, gives the object
    ``cls(**values)`` gives: the same class, every field the value given, equal, the same
    repr, frozen."""
    from wsspec_core._messages import quick_new

    fields = attrs.fields(cls)
    values = {field.name: object() for field in fields}
    built = quick_new(cls)(*values.values())
    assert type(built) is cls
    assert all(getattr(built, field.name) is values[field.name] for field in fields)
    assert built == cls(**values) and repr(built) == repr(cls(**values))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(built, fields[0].name, 1)
    with pytest.raises(TypeError):
        quick_new(cls)(*list(values.values())[:-1])


def test_quick_new_builds_only_what_quick_init_built() -> None:
    from wsspec_core._messages import quick_new

    with pytest.raises(TypeError):
        quick_new(ws.Response)


def test_a_read_run_is_the_run_the_class_builds() -> None:
    """``read_run`` (the direct read path's run, built without the type call) sets every
    slot ``Run.__init__`` sets, to the same values."""
    from wsspec_core._pipeline import Run, RunKind, read_run

    conn = Connection(id=1, request=ws.RequestInfo(), state=ConnState.OPEN)
    options = ws.QueryOptions(limit=3)
    key = object()
    ours = read_run(conn, USERS, options, "m1", 7, key, "public")
    theirs = Run(conn, RunKind.SHARED, None, USERS, options=options)
    theirs.message_id = "m1"
    theirs.record_id = 7
    theirs.key = key
    theirs.schema = "public"
    for slot in Run.__slots__:
        assert getattr(ours, slot) == getattr(theirs, slot), slot
        assert type(getattr(ours, slot)) is type(getattr(theirs, slot)), slot


# --- reads straight from the parsed frame (Engine._read_parsed, issue 11) -----------------

OTHER_USERS = ws.Entity(
    schema="other",
    name="users",
    table_name="users",
    columns=[ws.Column(name="id", type=ws.ColumnType.INTEGER, nullable=False, primary_key=True)],
)

parsed_reads = st.builds(
    lambda n, entity, schema, rid, opts: {
        "id": f"r{n}" if n % 3 else n,
        "type": "request",
        "operation": "read",
        "entity": entity,
        **({"schema": schema} if schema is not None else {}),
        **({"record_id": rid} if rid is not None else {}),
        **({"options": opts} if opts is not None else {}),
    },
    st.integers(0, 10**6),
    st.sampled_from(["users"] * 4 + ["named", "named", "ghosts"]),
    st.sampled_from([None] * 6 + ["", "public", "other"]),
    st.one_of(
        st.none(), st.integers(0, 6), st.sampled_from(["3", "", "x", True, 2**63, 1.5, "k1"])
    ),
    st.one_of(
        st.none(),
        st.sampled_from(
            [
                {"limit": 2},
                {"filters": [{"column": "age", "operator": "gte", "value": 22}], "limit": 1},
                {"filters": [{"column": "age", "operator": "in", "value": [20, 21]}]},
                {"columns": ["name"]},
                {"filters": [{"column": "nope", "operator": "eq", "value": 1}]},
                {"limit": "x"},
            ]
        ),
    ),
)
# Mostly reads and completions with the usual results (odd ones are variants 1-7), so
# that shapes repeat and take the direct path; now and then something else happens.
_send = st.tuples(
    st.just("send"), st.tuples(parsed_reads, st.sampled_from([0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]))
)
_complete = st.tuples(st.just("complete"), st.integers(0, 10))
parsed_steps = st.lists(
    st.one_of(
        _send,
        _send,
        _send,
        _complete,
        _complete,
        _complete,
        st.tuples(st.just("fail"), st.integers(0, 10)),
        st.tuples(st.just("hook"), st.sampled_from(["after_read", "before_read"])),
        st.tuples(st.just("register"), st.just(None)),
        st.tuples(st.just("close"), st.just(None)),
    ),
    max_size=40,
)


def _play_parsed(script: list[tuple[str, Any]], limits: ws.Limits, parsed: bool) -> list[Any]:
    """Play ``script`` on an engine whose direct read path from the parsed frame is on
    (``parsed``) or off (every read decoded into a ``Request`` first): storage completed
    or failed in a chosen order, a hook or an entity registered midway, the connection
    closed. Returns every action, operation ids left out."""
    named = ws.Entity(
        name="named",
        table_name="named",
        columns=[
            ws.Column(name="code", type=ws.ColumnType.TEXT, nullable=False, primary_key=True),
            ws.Column(name="age", type=ws.ColumnType.INTEGER),
        ],
    )
    registry = ws.EntityRegistry([USERS, named])
    hooks = ws.HookRegistry()
    engine = ws.Engine(registry, hooks=hooks, limits=limits)
    if not parsed:
        engine._read_parsed = lambda conn, obj: False  # type: ignore[method-assign]
    storage = ws.MemoryStorage(registry)
    for i in range(5):
        storage.execute(
            ws.Create(
                entity=USERS, rows=({"id": i, "name": f"u{i}", "status": "a", "age": 20 + i},)
            )
        )
        storage.execute(ws.Create(entity=named, rows=({"code": f"k{i}", "age": i},)))
    variants: dict[Any, int] = {}

    def result_of(action: ws.RunStorage, result: Any) -> Any:
        return _odd_result(variants[action.request_id], action, result)

    driver = Driver(engine, storage, auto=False, storage_result=result_of)
    cid = 1
    driver.connect(cid)
    for step, arg in script:
        if step == "send":
            message, variant = arg
            variants[message["id"]] = variant
            driver.send(cid, message)
        elif step == "close":
            driver.disconnect(cid)
            cid += 1
            driver.connect(cid)
        elif step == "hook":

            def hook(ctx: ws.HookContext) -> None:
                ctx.metadata["seen"] = ctx.metadata.get("seen", 0) + 1

            hooks.register(arg, hook)
        elif step == "register" and "other.users" not in [
            e.qualified_name for e in registry.entities()
        ]:
            registry.register(OTHER_USERS)  # "users" is ambiguous from now on
        elif step in ("complete", "fail") and driver.storage_pending:
            action = driver.storage_pending[arg % len(driver.storage_pending)]
            driver.storage_pending.remove(action)
            if step == "complete":
                driver.finish_storage(action)
            else:
                error = ws.StorageError(kind=ws.StorageErrorKind.OTHER, message="boom")
                driver.feed(
                    ws.StorageFailed(operation_id=action.operation_id, error=error, now=driver.now)
                )
        while driver.hooks_pending:
            driver.finish_hooks(driver.hooks_pending.popleft())
    driver.run_pending()
    return [
        (repr(action.operation), action.request_id)
        if isinstance(action, ws.RunStorage)
        else (action.hook_type, action.context.message_id)
        if isinstance(action, ws.RunHooks)
        else action
        for action in driver.log
    ]


@settings(max_examples=300, deadline=None)
@given(
    script=parsed_steps,
    in_flight=st.integers(1, 3),
    rate_limited=st.sampled_from([False, False, False, True]),
)
def test_reads_from_the_parsed_frame_do_what_decoded_reads_do(
    script: list[tuple[str, Any]], in_flight: int, rate_limited: bool
) -> None:
    """An engine that answers reads straight from the parsed frame (``_read_parsed``:
    no ``Request`` built unless a later step needs one) causes the same actions, in the
    same order, as one that decodes every read into a ``Request`` first: with and
    without a schema, text and integer keys, keys and options it refuses, pipelined
    beyond ``max_in_flight`` (queued runs build their ``Request``), completed out of
    order, failed, with odd storage results, a hook registered while reads run (their
    after-hooks then run, as for a decoded read), an entity registered that makes a name
    ambiguous, and the connection closed and opened again."""
    script = _with_unique_ids(script)
    limits = _script_limits(in_flight, rate_limited)
    assert _play_parsed(script, limits, parsed=True) == _play_parsed(script, limits, parsed=False)


@pytest.mark.parametrize("hook", [None, "before_handle", "before_read", "after_read"])
def test_a_queued_read_from_the_parsed_frame_starts_as_a_decoded_one(hook: str | None) -> None:
    """A read that had to wait for ``max_in_flight`` starts when its turn comes without a
    ``Request`` (its ``RunStorage`` asked for at once), unless a hook a read runs was
    registered meanwhile: then it takes every general step, that hook included."""
    read = {"type": "request", "operation": "read", "entity": "users", "record_id": 1}
    script: list[tuple[str, Any]] = [
        ("send", ({**read, "id": "warm"}, 0)),  # compiles the shape
        ("complete", 0),
        ("send", ({**read, "id": "a"}, 0)),
        ("send", ({**read, "id": "b"}, 0)),  # queued behind a
        ("send", ({**read, "id": "c", "record_id": 2}, 0)),
    ]
    if hook is not None:
        script.append(("hook", hook))
    script += [("complete", 0), ("complete", 0), ("complete", 0)]
    limits = ws.Limits(keepalive_interval=None, max_in_flight=1)
    parsed = _play_parsed(script, limits, parsed=True)
    assert parsed == _play_parsed(script, limits, parsed=False)
    ran = [a for a in parsed if isinstance(a, tuple) and isinstance(a[0], ws.HookType)]
    assert bool(ran) == (hook is not None)


def test_reads_from_the_parsed_frame_are_the_common_case() -> None:
    """A repeated read shape takes ``_read_parsed`` and builds no ``Request``, with or
    without a schema; the first of a shape, a qualified name given as the entity, or a
    rate limit take the decoded path."""
    engine = ws.Engine(ws.EntityRegistry([USERS]), limits=ws.Limits(keepalive_interval=None))
    engine.handle(ws.ConnectionOpened(connection_id=1, request=ws.RequestInfo(), now=1.0))
    taken: list[bool] = []
    direct = engine._read_parsed

    def spy(conn: Any, obj: dict[str, Any]) -> bool:
        taken.append(direct(conn, obj))
        return taken[-1]

    engine._read_parsed = spy  # type: ignore[method-assign]
    frames = [
        {"id": "a", "type": "request", "operation": "read", "entity": "users", "record_id": 1},
        {"id": "b", "type": "request", "operation": "read", "entity": "users", "record_id": 2},
        {"id": "c", "type": "request", "operation": "read", "entity": "users"},
        {"id": "d", "type": "request", "operation": "read", "entity": "users"},
        {"id": 5, "type": "request", "operation": "read", "entity": "users", "schema": "public"},
        {"id": 6, "type": "request", "operation": "read", "entity": "public.users", "schema": "x"},
    ]
    for frame in frames:
        [run] = engine.handle(
            ws.MessageReceived(connection_id=1, data=orjson.dumps(frame).decode(), now=1.0)
        )
        assert isinstance(run, ws.RunStorage) and run.request_id == frame["id"]
        engine.handle(ws.StorageCompleted(operation_id=run.operation_id, result=None, now=1.0))
    assert taken == [False, True, False, True, True, False]


def test_reads_take_the_direct_path_beside_hooks_no_read_runs() -> None:
    """A ``before_connect`` hook (authentication, the usual one) leaves reads on the
    direct path; a read hook sends them the general way."""
    hooks = ws.HookRegistry()
    hooks.register("before_connect", lambda ctx: None)
    engine = ws.Engine(ws.EntityRegistry([USERS]), hooks=hooks)
    taken: list[bool] = []
    direct = engine._read_parsed

    def spy(conn: Any, obj: dict[str, Any]) -> bool:
        taken.append(direct(conn, obj))
        return taken[-1]

    engine._read_parsed = spy  # type: ignore[method-assign]
    driver = Driver(engine)
    driver.connect(1)
    read = {"type": "request", "operation": "read", "entity": "users", "record_id": 1}
    for n in range(3):
        assert driver.request(1, {**read, "id": n})["success"] is False  # not found
    hooks.register("after_read", lambda ctx: None)
    assert driver.request(1, {**read, "id": 3})["success"] is False
    assert taken == [False, True, True]
    assert [a.hook_type for a in driver.log if isinstance(a, ws.RunHooks)] == [
        ws.HookType.BEFORE_CONNECT
    ]


# --- Engine.run_inline: a read's outcome in the same handle() call --------------------

_inline_reads = st.one_of(
    st.tuples(st.just("one"), st.integers(0, 6)),
    st.tuples(st.just("list"), st.integers(1, 3)),
    st.tuples(st.just("bad"), st.just(0)),
)
inline_steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), _inline_reads),
        st.tuples(st.just("send"), _inline_reads),
        st.tuples(st.just("send"), _inline_reads),
        st.tuples(st.just("written"), st.integers(1, 4)),
        st.tuples(st.just("complete"), st.integers(0, 5)),
        st.tuples(
            st.just("hook"), st.sampled_from(["after_read", "before_read", "before_connect"])
        ),
        st.tuples(st.just("close"), st.just(None)),
    ),
    max_size=40,
)


def _play_inline(
    script: list[tuple[str, Any]],
    limits: ws.Limits,
    policy: str,
    engine_inline: bool,
    entry_points: bool = False,
) -> list[Any]:
    """Play ``script`` as the runtime would: reads the ``policy`` lets run inline ("all",
    "one": reads by key only, "none") are run at once, either by the adapter when it
    carries out their ``RunStorage`` (its outcome fed after the current actions) or by
    the engine through ``run_inline`` (``engine_inline``); the others wait for a
    "complete" step. A read of key 4 fails; key 5 is not there. Returns every action
    (storage actions as their operation and request id) and each event's action count
    is left out: an adapter sees the same actions in the same order."""
    registry = ws.EntityRegistry([USERS])
    hooks = ws.HookRegistry()
    engine = ws.Engine(registry, hooks=hooks, limits=limits)
    storage = ws.MemoryStorage(registry)
    for i in range(4):
        storage.execute(
            ws.Create(
                entity=USERS, rows=({"id": i, "name": f"u{i}", "status": "a", "age": 20 + i},)
            )
        )
    now, wall = 1000.0, 1_700_000_000.0

    def inline(operation: Any) -> bool:
        return policy == "all" or (policy == "one" and isinstance(operation, ws.ReadOne))

    def run(operation_id: int, operation: Any) -> ws.StorageCompleted | ws.StorageFailed:
        if isinstance(operation, ws.ReadOne) and operation.key == 4:
            error = ws.StorageError(kind=ws.StorageErrorKind.OTHER, message="boom")
            return ws.StorageFailed(operation_id=operation_id, error=error, now=now, wall=wall)
        result = storage.execute(operation)
        return ws.StorageCompleted(operation_id=operation_id, result=result, now=now, wall=wall)

    if engine_inline:

        def run_inline(
            operation_id: int, operation: Any, request_id: Any
        ) -> ws.StorageCompleted | ws.StorageFailed | None:
            return run(operation_id, operation) if inline(operation) else None

        engine.run_inline = run_inline
    log: list[Any] = []
    sent_reads: dict[int, bool] = {}
    waiting: list[ws.RunStorage] = []
    unwritten: dict[int, int] = {}

    def handle(event: ws.Event) -> list[ws.Action]:
        # With entry_points, the two hot events go through the methods taking their
        # fields (Engine.message_received, Engine.frames_written).
        if entry_points and isinstance(event, ws.MessageReceived):
            return engine.message_received(event.connection_id, event.data, event.now, event.wall)
        if entry_points and isinstance(event, ws.FramesWritten):
            return engine.frames_written(event.connection_id, event.count, event.now, event.wall)
        return engine.handle(event)

    def feed(event: ws.Event) -> None:
        queue = [event]
        while queue:
            for action in handle(queue.pop(0)):
                if isinstance(action, ws.RunStorage):
                    log.append(("storage", repr(action.operation), action.request_id))
                    if inline(action.operation):
                        queue.append(run(action.operation_id, action.operation))
                    else:
                        waiting.append(action)
                    continue
                if isinstance(action, ws.Send):
                    unwritten[action.connection_id] = unwritten.get(action.connection_id, 0) + 1
                    if action.answers is not None:
                        # Send.answers says what the frame answers: a read's success.
                        frame = orjson.loads(action.frame)
                        assert action.answers == ("read", "success")
                        assert frame["type"] == "response" and frame["success"] is True
                        assert sent_reads[frame["id"]]
                if isinstance(action, ws.RunHooks):
                    log.append(("hooks", action.hook_type, action.context.message_id))
                    exc = ws.run_hooks_sync(action.hooks, action.context)
                    assert exc is None
                    queue.append(ws.HooksCompleted(call_id=action.call_id, now=now, wall=wall))
                    continue
                log.append(action)

    cid = 1
    feed(ws.ConnectionOpened(connection_id=cid, request=ws.RequestInfo(), now=now, wall=wall))
    for n, (step, arg) in enumerate(script):
        if step == "send":
            kind, value = arg
            message: dict[str, Any] = {"id": n, "type": "request", "operation": "read"}
            if kind == "one":
                message.update(entity="users", record_id=value)
            elif kind == "list":
                message.update(entity="users", options={"limit": value})
            else:
                message.update(entity="ghosts", record_id=1)
            sent_reads[n] = True
            data = orjson.dumps(message).decode()
            feed(ws.MessageReceived(connection_id=cid, data=data, now=now, wall=wall))
        elif step == "written" and unwritten.get(cid):
            count = min(arg, unwritten[cid])
            unwritten[cid] -= count
            feed(ws.FramesWritten(connection_id=cid, count=count, now=now, wall=wall))
        elif step == "complete" and waiting:
            action = waiting.pop(arg % len(waiting))
            feed(run(action.operation_id, action.operation))
        elif step == "hook":

            def hook(ctx: ws.HookContext) -> None:
                ctx.metadata["seen"] = ctx.metadata.get("seen", 0) + 1

            hooks.register(arg, hook)
        elif step == "close":
            feed(ws.ConnectionClosed(connection_id=cid, now=now, wall=wall))
            cid += 1
            feed(
                ws.ConnectionOpened(connection_id=cid, request=ws.RequestInfo(), now=now, wall=wall)
            )
    while waiting:
        action = waiting.pop(0)
        feed(run(action.operation_id, action.operation))
    return log


@settings(max_examples=300, deadline=None)
@given(
    script=inline_steps,
    in_flight=st.integers(1, 3),
    policy=st.sampled_from(["all", "one", "none"]),
    outbound=st.sampled_from([1024, 10]),
)
def test_reads_run_inline_by_the_engine_do_what_an_adapter_running_them_does(
    script: list[tuple[str, Any]], in_flight: int, policy: str, outbound: int
) -> None:
    """``Engine.run_inline``: the actions, in order, that an adapter running the same
    reads at once when it carries out their ``RunStorage`` (the outcome fed right after
    the current actions) sees, through queued reads (``max_in_flight``), failures, rows
    not found, refused requests, slow consumers (a small ``outbound_queue``; this
    adapter reads on after a ``PauseReading``), hooks registered midway (reads then take
    the general path, whose ``RunStorage`` the adapter still runs), reads the adapter
    declines, and closes."""
    limits = ws.Limits(
        keepalive_interval=None, max_in_flight=in_flight, max_queued=2, outbound_queue=outbound
    )
    by_adapter = _play_inline(script, limits, policy, engine_inline=False)
    by_engine = _play_inline(script, limits, policy, engine_inline=True)
    # The entry points taking the hot events' fields: the actions of handle(), exactly.
    assert _play_inline(script, limits, policy, engine_inline=False, entry_points=True) == (
        by_adapter
    )
    assert _play_inline(script, limits, policy, engine_inline=True, entry_points=True) == (
        by_engine
    )

    def storage(log: list[Any]) -> list[Any]:
        return [e for e in log if isinstance(e, tuple) and e[0] == "storage"]

    def rest(log: list[Any]) -> list[Any]:
        return [e for e in log if not (isinstance(e, tuple) and e[0] == "storage")]

    # The engine asks for no RunStorage for what it ran inline; everything else matches.
    assert rest(by_engine) == rest(by_adapter)
    if policy == "none":
        assert storage(by_engine) == storage(by_adapter)


def test_a_read_run_inline_costs_no_storage_action() -> None:
    """A read by key the adapter runs inline: one ``handle()`` call, its ``Send`` and no
    ``RunStorage``."""
    registry = ws.EntityRegistry([USERS])
    engine = ws.Engine(registry, limits=ws.Limits(keepalive_interval=None))
    storage = ws.MemoryStorage(registry)
    storage.execute(ws.Create(entity=USERS, rows=({"id": 1, "name": "a"},)))
    calls: list[Any] = []

    def run_inline(operation_id: int, operation: Any, request_id: Any) -> ws.StorageCompleted:
        calls.append(request_id)
        result = storage.execute(operation)
        return ws.StorageCompleted(operation_id=operation_id, result=result, now=1.0, wall=2.0)

    engine.run_inline = run_inline
    engine.handle(ws.ConnectionOpened(connection_id=1, request=ws.RequestInfo(), now=1.0))
    read = {"id": "a", "type": "request", "operation": "read", "entity": "users", "record_id": 1}
    for message_id in ("a", "b"):  # the first compiles the shape, the second is parsed
        data = orjson.dumps({**read, "id": message_id}).decode()
        actions = engine.handle(ws.MessageReceived(connection_id=1, data=data, now=1.0))
        assert [type(a) for a in actions] == [ws.Send]
        assert isinstance(actions[0], ws.Send)
        assert orjson.loads(actions[0].frame)["data"]["name"] == "a"
        # The direct path (the second read) notes what its Send answers.
        assert actions[0].answers == (None if message_id == "a" else ("read", "success"))
    assert calls == ["a", "b"]


# --- Engine._read_at_once: a read by key of an idle connection answered in place ---------

at_once_steps = st.lists(
    st.one_of(
        st.tuples(st.just("one"), st.integers(0, 6)),
        st.tuples(st.just("one"), st.integers(0, 6)),
        st.tuples(st.just("one"), st.integers(0, 6)),
        st.tuples(st.just("one"), st.sampled_from(["2", 2**40, 1.5, ""])),
        st.tuples(st.just("list"), st.integers(1, 3)),
        st.tuples(st.just("ping"), st.just(0)),
        st.tuples(st.just("subscribe"), st.just(0)),
        st.tuples(st.just("create"), st.integers(10, 12)),
        st.tuples(st.just("written"), st.integers(1, 6)),
        st.tuples(st.just("complete"), st.integers(0, 5)),
        st.tuples(st.just("later"), st.floats(0.0, 0.01)),
        st.tuples(st.just("close"), st.just(0)),
    ),
    min_size=10,
    max_size=60,
)


def _play_at_once(
    script: list[tuple[str, Any]], limits: ws.Limits, at_once: bool, inline: str
) -> list[Any]:
    """Play ``script`` against an engine whose adapter runs ``inline`` reads at once
    through ``run_inline`` ("one": reads by key; "all": every read; "none"); writes wait
    for a "complete" step. ``at_once=False`` turns ``_read_at_once`` off, so the same
    reads take the path that queues their outcome. Key 4 fails, key 5 is not there; a
    storage outcome is stamped ``later`` than its message (its own millisecond). Returns
    every action and the engine's connection state after each step."""
    registry = ws.EntityRegistry([USERS])
    engine = ws.Engine(registry, limits=limits)
    if not at_once:
        # What _read_parsed did before _read_at_once: the run, started, its storage asked
        # for through _read_storage (run_inline, the outcome queued and handled next).
        pipeline = engine._pipeline

        def start_and_queue(conn: Any, entity: Any, options: Any, *rest: Any) -> None:
            message_id, record_id, query, schema = rest
            run = read_run(conn, entity, options, message_id, record_id, query, schema)
            assert pipeline.start_at_once(conn, run)
            engine._read_storage(run, query, message_id)

        engine._read_at_once = start_and_queue  # type: ignore[method-assign]
    storage = ws.MemoryStorage(registry)
    for i in range(4):
        storage.execute(ws.Create(entity=USERS, rows=({"id": i, "name": f"u{i}", "status": "a"},)))
    clock = {"now": 1000.0, "wall": 1_700_000_000.0, "later": 0.0}

    def run(operation_id: int, operation: Any) -> ws.StorageCompleted | ws.StorageFailed:
        now, wall = clock["now"] + clock["later"], clock["wall"] + clock["later"]
        if isinstance(operation, ws.ReadOne) and operation.key == 4:
            error = ws.StorageError(kind=ws.StorageErrorKind.OTHER, message="boom")
            return ws.StorageFailed(operation_id=operation_id, error=error, now=now, wall=wall)
        try:
            result = storage.execute(operation)
        except ws.StorageFailure as exc:  # a second create of the same key
            return ws.StorageFailed(operation_id=operation_id, error=exc.error, now=now, wall=wall)
        return ws.StorageCompleted(operation_id=operation_id, result=result, now=now, wall=wall)

    def runs_inline(operation: Any) -> bool:
        if isinstance(operation, ws.Create | ws.Update | ws.Delete):
            return False
        return inline == "all" or (inline == "one" and isinstance(operation, ws.ReadOne))

    def run_inline(
        operation_id: int, operation: Any, request_id: Any
    ) -> ws.StorageCompleted | ws.StorageFailed | None:
        return run(operation_id, operation) if runs_inline(operation) else None

    engine.run_inline = run_inline
    log: list[Any] = []
    waiting: list[ws.RunStorage] = []
    unwritten: dict[int, int] = {}

    def feed(event: ws.Event) -> None:
        queue = [event]
        while queue:
            event = queue.pop(0)
            if isinstance(event, ws.MessageReceived):
                actions = engine.message_received(
                    event.connection_id, event.data, event.now, event.wall
                )
            else:
                actions = engine.handle(event)
            for action in actions:
                if isinstance(action, ws.RunStorage):
                    log.append(("storage", repr(action.operation), action.request_id))
                    if runs_inline(action.operation):
                        queue.append(run(action.operation_id, action.operation))
                    else:
                        waiting.append(action)
                    continue
                if isinstance(action, ws.Send):
                    unwritten[action.connection_id] = unwritten.get(action.connection_id, 0) + 1
                log.append(action)

    cid = 1
    feed(ws.ConnectionOpened(connection_id=cid, request=ws.RequestInfo(), **clock_of(clock)))
    for n, (step, arg) in enumerate(script):
        message: dict[str, Any] = {"id": n, "type": "request", "operation": "read"}
        if step == "one":
            message.update(entity="users", record_id=arg)
        elif step == "list":
            message.update(entity="users", options={"limit": arg})
        elif step == "ping":
            message = {"id": n, "type": "ping"}
        elif step == "subscribe":
            message = {"id": n, "type": "subscribe", "entity": "users"}
        elif step == "create":
            message.update(operation="create", entity="users", data={"id": arg, "name": "new"})
        elif step == "written":
            if unwritten.get(cid):
                count = min(arg, unwritten[cid])
                unwritten[cid] -= count
                feed(ws.FramesWritten(connection_id=cid, count=count, **clock_of(clock)))
            continue
        elif step == "complete":
            if waiting:
                action = waiting.pop(arg % len(waiting))
                feed(run(action.operation_id, action.operation))
            continue
        elif step == "later":
            clock["later"] = arg
            continue
        else:  # close
            feed(ws.ConnectionClosed(connection_id=cid, **clock_of(clock)))
            cid += 1
            opened = ws.ConnectionOpened(
                connection_id=cid, request=ws.RequestInfo(), **clock_of(clock)
            )
            feed(opened)
            continue
        data = orjson.dumps(message).decode()
        feed(ws.MessageReceived(connection_id=cid, data=data, **clock_of(clock)))
        conn = engine._connections[cid]
        log.append(("state", conn.backlog, conn.paused, conn.in_flight, len(conn.runs)))
    while waiting:
        action = waiting.pop(0)
        feed(run(action.operation_id, action.operation))
    return log


def clock_of(clock: dict[str, float]) -> dict[str, float]:
    return {"now": clock["now"], "wall": clock["wall"]}


@settings(max_examples=400, deadline=None)
@given(
    script=at_once_steps,
    in_flight=st.integers(1, 3),
    queued=st.integers(1, 2),
    outbound=st.sampled_from([1024, 12, 8]),
    inline=st.sampled_from(["one", "all", "none"]),
)
def test_reads_answered_at_once_do_what_their_queued_outcome_does(
    script: list[tuple[str, Any]], in_flight: int, queued: int, outbound: int, inline: str
) -> None:
    """``Engine._read_at_once`` (a read by key of an idle connection, run through
    ``run_inline`` and answered in place) causes exactly the actions, in order, and
    leaves exactly the flow-control state, of the path it replaces, which starts the run
    and queues its outcome to be handled next: through the backlog's high-water mark
    (small ``outbound_queue``s, frames left unwritten), pauses, the shortest read-ahead
    (``max_in_flight=1``, ``max_queued=1``), failures, rows not found, keys refused,
    outcomes a millisecond after their message, reads the adapter declines, a write and
    its notification in flight, and closes."""
    if outbound < 2 * (in_flight + queued):
        outbound = 2 * (in_flight + queued)
    limits = ws.Limits(
        keepalive_interval=None,
        max_in_flight=in_flight,
        max_queued=queued,
        outbound_queue=outbound,
    )
    assert _play_at_once(script, limits, True, inline) == _play_at_once(
        script, limits, False, inline
    )


def test_reads_by_key_of_an_idle_connection_are_answered_at_once() -> None:
    """The common case takes the path: no ``Run`` is built for a read by key of an
    idle connection whose row is found."""
    registry = ws.EntityRegistry([USERS])
    engine = ws.Engine(registry, limits=ws.Limits(keepalive_interval=None))
    storage = ws.MemoryStorage(registry)
    storage.execute(ws.Create(entity=USERS, rows=({"id": 1, "name": "a"},)))
    engine.run_inline = lambda operation_id, operation, request_id: ws.StorageCompleted(
        operation_id=operation_id, result=storage.execute(operation), now=1.0, wall=2.0
    )
    engine.handle(ws.ConnectionOpened(connection_id=1, request=ws.RequestInfo(), now=1.0))
    read = {"type": "request", "operation": "read", "entity": "users", "record_id": 1}
    engine.message_received(1, orjson.dumps({**read, "id": 0}).decode(), 1.0)  # compiles
    built: list[Any] = []
    real = ws._engine.read_run  # type: ignore[attr-defined]
    try:
        ws._engine.read_run = lambda *a: built.append(a) or real(*a)  # type: ignore[attr-defined]
        for i in range(1, 4):
            [send] = engine.message_received(1, orjson.dumps({**read, "id": i}).decode(), 1.0)
            assert isinstance(send, ws.Send) and send.answers == ("read", "success")
            assert orjson.loads(send.frame)["data"]["name"] == "a"
    finally:
        ws._engine.read_run = real  # type: ignore[attr-defined]
    assert built == []
