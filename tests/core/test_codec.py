"""The wire codec (wsspec_core/_codec.py): docs/protocol.md "Messages", "Validation order",
"Errors"."""

from __future__ import annotations

import datetime
import json
from typing import Any

import cattrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsspec_core import (
    DecodeError,
    ErrorInfo,
    FilterSpec,
    Notification,
    Operation,
    Ping,
    Pong,
    PreloadSpec,
    QueryOptions,
    Request,
    Response,
    ResumePosition,
    SortSpec,
    Subscribe,
    Unsubscribe,
    _codec,
    decode,
    decode_outbound,
    encode,
    encode_inbound,
    format_timestamp,
    make_converter,
)
from wsspec_core._messages import REQUEST_OPERATIONS

# --- helpers -----------------------------------------------------------------------------


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def request(**fields: Any) -> str:
    base: dict[str, Any] = {"id": "m1", "type": "request", "operation": "read", "entity": "users"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not _MISSING})


_MISSING: Any = object()


def error_of(result: object) -> tuple[object, str, str]:
    assert isinstance(result, DecodeError), result
    return result.id, result.error.code, result.error.message


# --- format_timestamp ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1765535400.123, "2025-12-12T10:30:00.123Z"),
        (1765535400.0, "2025-12-12T10:30:00.000Z"),
        (1765535400.9996, "2025-12-12T10:30:01.000Z"),  # rounds to the nearest ms
        (951782400.5, "2000-02-29T00:00:00.500Z"),
    ],
)
def test_format_timestamp(now: float, text: str) -> None:
    assert format_timestamp(now) == text


@given(
    st.floats(min_value=-62_135_596_800, max_value=253_402_300_798, allow_nan=False)
    | st.floats(min_value=1.7e9, max_value=1.7e9 + 3, allow_nan=False)
)
def test_format_timestamp_formats_as_datetime_does(now: float) -> None:
    """The seconds remembered and the milliseconds looked up (issue 11) give the text of
    the whole moment formatted afresh, as format_timestamp did before."""
    seconds, millis = divmod(round(now * 1000), 1000)
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    assert format_timestamp(now) == f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


# --- decode: frames that are not a JSON object ---------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "{",
        '{"type": "ping"',
        b"\xff\xfe",
        b'{"type": "ping", "id": "\xff"}',
        b"\xef\xbb\xbf{}",  # UTF-8 byte order mark
        '{"type": "ping", "id": "\ud800"}',  # a str frame holding a lone surrogate
        '{"type": "ping", "id": "\\ud800"}',  # an escaped lone surrogate
        "[]",
        '"request"',
        "42",
        "null",
        "true",
        "NaN",
        "[" * 5000 + "]" * 5000,
        '{"a":' * 5000 + "1" + "}" * 5000,
        '{"type": "ping"}\n{"type": "ping"}',  # two messages in one frame
    ],
)
def test_unparseable_frames_are_invalid_message_with_empty_id(raw: str | bytes) -> None:
    message_id, code, _ = error_of(decode(raw))
    assert (message_id, code) == ("", "invalid_message")


def test_binary_frames_holding_utf8_json_are_accepted() -> None:
    raw = '{"type":"request","id":"é","operation":"read","entity":"usérs"}'.encode()
    assert decode(raw) == Request(id="é", operation=Operation.READ, entity="usérs")
    assert decode(b'{"type":"PING"}') == Ping()


def test_unknown_top_level_keys_are_ignored() -> None:
    raw = request(
        success=True, metadata={"x": 1}, timestamp="2025-01-01T00:00:00Z", error=None, extra=[1]
    )
    assert decode(raw) == Request(id="m1", operation=Operation.READ, entity="users")


# --- type ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"id": "a"}, ("a", "invalid_message")),
        ({"id": "a", "type": None}, ("a", "invalid_message")),
        ({"id": "a", "type": 1}, ("a", "invalid_message")),
        ({"id": 7, "type": ["request"]}, (7, "invalid_message")),
        ({"id": "a", "type": "query"}, ("a", "invalid_message_type")),
        ({"id": "a", "type": ""}, ("a", "invalid_message_type")),
        ({"id": "a", "type": "response"}, ("a", "invalid_message_type")),
        ({"id": "a", "type": "notification"}, ("a", "invalid_message_type")),
        ({"id": "a", "type": "pong"}, ("a", "invalid_message_type")),
        ({"id": "a", "type": "error"}, ("a", "invalid_message_type")),
        ({"type": "query"}, ("", "invalid_message_type")),
    ],
)
def test_type_rules(fields: dict[str, Any], expected: tuple[object, str]) -> None:
    message_id, code, _ = error_of(decode(json.dumps(fields)))
    assert (message_id, code) == expected


def test_unknown_type_message_names_it() -> None:
    assert error_of(decode(frame(id="a", type="Response")))[2] == "Unknown message type: Response"


def test_echoed_strings_are_truncated() -> None:
    message = error_of(decode(frame(id="a", type="x" * 10_000)))[2]
    assert len(message) < 200


@pytest.mark.parametrize("spelling", ["request", "REQUEST", "Request", "rEqUeSt"])
def test_type_is_case_insensitive(spelling: str) -> None:
    assert decode(request(type=spelling)) == Request(
        id="m1", operation=Operation.READ, entity="users"
    )


@pytest.mark.parametrize("spelling", ["subscription", "SUBSCRIPTION", "Subscription"])
def test_subscription_type_is_case_insensitive(spelling: str) -> None:
    raw = frame(id="s", type=spelling, operation="Subscribe", entity="users")
    assert decode(raw) == Subscribe(id="s", entity="users")


# --- id -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_id", "decoded"),
    [("abc", "abc"), (0, 0), (-5, -5), (12.0, 12), (2**63 - 1, 2**63 - 1), (" ", " ")],
)
def test_readable_ids(raw_id: object, decoded: str | int) -> None:
    assert decode(request(id=raw_id)) == Request(
        id=decoded, operation=Operation.READ, entity="users"
    )


@pytest.mark.parametrize("raw_id", [_MISSING, None, "", True, False, 1.5, [], {}, ["a"]])
@pytest.mark.parametrize("kind", ["request", "subscription"])
def test_request_and_subscription_need_an_id(raw_id: object, kind: str) -> None:
    raw = request(id=raw_id, type=kind, operation="subscribe" if kind == "subscription" else "read")
    message_id, code, message = error_of(decode(raw))
    assert (message_id, code) == ("", "invalid_message")
    assert "id" in message


def test_id_is_checked_before_operation() -> None:
    assert error_of(decode(frame(type="request", operation="bogus")))[1] == "invalid_message"


def test_ping_id_is_optional_and_echoed_as_given() -> None:
    assert decode(frame(type="ping")) == Ping(id=None)
    assert decode(frame(type="ping", id=None)) == Ping(id=None)
    assert decode(frame(type="PING", id="p")) == Ping(id="p")
    assert decode(frame(type="ping", id=3)) == Ping(id=3)
    assert decode(frame(type="ping", id="")) == Ping(id="")
    # Ping ignores everything else.
    assert decode(frame(type="ping", id=1, operation="bogus", options=5)) == Ping(id=1)


@pytest.mark.parametrize("raw_id", [True, {}, [1], 2.5])
def test_ping_with_an_unreadable_id_is_invalid_message(raw_id: object) -> None:
    assert error_of(decode(frame(type="ping", id=raw_id)))[:2] == ("", "invalid_message")


# --- operation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"operation": _MISSING}, "invalid_message"),
        ({"operation": None}, "invalid_message"),
        ({"operation": 3}, "invalid_message"),
        ({"operation": "select"}, "invalid_operation"),
        ({"operation": ""}, "invalid_operation"),
        ({"operation": "subscribe"}, "invalid_operation"),
        ({"operation": "unsubscribe"}, "invalid_operation"),
        ({"type": "subscription", "operation": "read"}, "invalid_subscription_operation"),
        ({"type": "subscription", "operation": "meta"}, "invalid_subscription_operation"),
        ({"type": "subscription", "operation": _MISSING}, "invalid_message"),
        ({"type": "subscription", "operation": False}, "invalid_message"),
    ],
)
def test_operation_rules(fields: dict[str, Any], code: str) -> None:
    result = decode(request(**fields))
    assert error_of(result)[:2] == ("m1", code)
    assert isinstance(result, DecodeError)
    assert result.entity_ref is None


def test_operation_errors_name_the_operation() -> None:
    assert error_of(decode(request(operation="Select")))[2] == "Unknown operation: Select"
    raw = request(type="subscription", operation="watch")
    assert error_of(decode(raw))[2] == "Unknown subscription operation: watch"


def test_operation_is_checked_before_entity() -> None:
    assert error_of(decode(request(operation="bogus", entity=_MISSING)))[1] == "invalid_operation"


@pytest.mark.parametrize("spelling", ["read", "READ", "Read"])
def test_operation_is_case_insensitive(spelling: str) -> None:
    decoded = decode(request(operation=spelling))
    assert isinstance(decoded, Request)
    assert decoded.operation is Operation.READ


@pytest.mark.parametrize("operation", sorted(op.value for op in REQUEST_OPERATIONS))
def test_every_request_operation_decodes(operation: str) -> None:
    raw = request(operation=operation.upper(), record_id="1", data={"a": 1})
    decoded = decode(raw)
    assert isinstance(decoded, Request)
    assert decoded.operation.value == operation


# --- entity and schema ----------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["read", "create", "update", "delete"])
@pytest.mark.parametrize("entity", [_MISSING, None, ""])
def test_request_needs_an_entity(operation: str, entity: object) -> None:
    result = decode(request(operation=operation, entity=entity, record_id="1", data={}))
    assert error_of(result)[:2] == ("m1", "invalid_message")
    assert isinstance(result, DecodeError)
    assert result.entity_ref is None


@pytest.mark.parametrize("entity", [_MISSING, None, ""])
def test_meta_without_entity_lists_entities(entity: object) -> None:
    assert decode(request(operation="meta", entity=entity)) == Request(
        id="m1", operation=Operation.META, entity=""
    )


def test_meta_with_entity() -> None:
    assert decode(request(operation="meta", schema="public")) == Request(
        id="m1", operation=Operation.META, entity="users", schema="public"
    )


@pytest.mark.parametrize("entity", [1, True, ["users"], {"name": "users"}])
@pytest.mark.parametrize("operation", ["read", "meta"])
def test_entity_must_be_a_string(entity: object, operation: str) -> None:
    assert error_of(decode(request(operation=operation, entity=entity)))[:2] == (
        "m1",
        "invalid_message",
    )


@pytest.mark.parametrize(("schema", "decoded"), [(None, None), ("", None), ("public", "public")])
def test_schema_is_optional(schema: object, decoded: str | None) -> None:
    result = decode(request(schema=schema))
    assert isinstance(result, Request)
    assert result.schema == decoded


@pytest.mark.parametrize("schema", [1, False, ["public"], {}])
def test_schema_must_be_a_string(schema: object) -> None:
    result = decode(request(schema=schema))
    assert error_of(result)[:2] == ("m1", "invalid_message")


@pytest.mark.parametrize("entity", [_MISSING, None, "", 5])
def test_subscribe_needs_an_entity(entity: object) -> None:
    raw = request(type="subscription", operation="subscribe", entity=entity)
    assert error_of(decode(raw))[:2] == ("m1", "invalid_message")


def test_subscribe() -> None:
    raw = request(
        type="subscription",
        operation="subscribe",
        schema="public",
        options={"filters": [{"column": "status", "operator": "eq", "value": "active"}]},
    )
    assert decode(raw) == Subscribe(
        id="m1",
        entity="users",
        schema="public",
        options=QueryOptions(filters=(FilterSpec(column="status", operator="eq", value="active"),)),
    )


# --- record_id, data ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "decoded"), [("42", "42"), (42, 42), (42.0, 42), ("abc", "abc")])
def test_record_id_string_or_number(raw: object, decoded: str | int) -> None:
    result = decode(request(operation="delete", record_id=raw))
    assert result == Request(id="m1", operation=Operation.DELETE, entity="users", record_id=decoded)


def test_read_with_record_id_reads_one() -> None:
    result = decode(request(record_id=5))
    assert isinstance(result, Request)
    assert result.record_id == 5


@pytest.mark.parametrize("record_id", [_MISSING, None, ""])
@pytest.mark.parametrize("operation", ["update", "delete"])
def test_update_and_delete_need_a_record_id(record_id: object, operation: str) -> None:
    result = decode(request(operation=operation, record_id=record_id, schema="s", data={"a": 1}))
    assert error_of(result)[:2] == ("m1", "invalid_message")
    assert isinstance(result, DecodeError)
    assert result.entity_ref == ("s", "users")


@pytest.mark.parametrize("record_id", [True, 1.5, [1], {"id": 1}])
@pytest.mark.parametrize("operation", ["read", "update", "delete"])
def test_record_id_of_wrong_type(record_id: object, operation: str) -> None:
    result = decode(request(operation=operation, record_id=record_id, data={"a": 1}))
    assert error_of(result)[:2] == ("m1", "invalid_message")
    assert isinstance(result, DecodeError)
    assert result.entity_ref == (None, "users")


@pytest.mark.parametrize("data", [{"name": "a"}, {}, [{"name": "a"}], [{"a": 1}, {"a": 2}]])
def test_create_data(data: object) -> None:
    assert decode(request(operation="create", data=data)) == Request(
        id="m1", operation=Operation.CREATE, entity="users", data=data
    )


@pytest.mark.parametrize("data", [_MISSING, None, [], [1], [{"a": 1}, 2], "x", 3, True])
def test_create_data_of_wrong_shape(data: object) -> None:
    result = decode(request(operation="create", data=data))
    assert error_of(result)[:2] == ("m1", "invalid_message")
    assert isinstance(result, DecodeError)
    assert result.entity_ref == (None, "users")


@pytest.mark.parametrize("data", [_MISSING, None, [], [{"a": 1}], "x", 3])
def test_update_data_must_be_an_object(data: object) -> None:
    result = decode(request(operation="update", record_id="1", data=data))
    assert error_of(result)[:2] == ("m1", "invalid_message")


def test_update() -> None:
    assert decode(request(operation="update", record_id="1", data={"a": None})) == Request(
        id="m1", operation=Operation.UPDATE, entity="users", record_id="1", data={"a": None}
    )


def test_data_is_ignored_for_read_delete_and_meta() -> None:
    for operation in ("read", "delete", "meta"):
        result = decode(request(operation=operation, record_id="1", data="junk"))
        assert isinstance(result, Request)
        assert result.data is None


def test_record_id_is_checked_before_data_and_options() -> None:
    raw = request(operation="update", record_id=True, data=5, options=5)
    assert "record_id" in error_of(decode(raw))[2]
    raw = request(operation="update", record_id=1, data=5, options=5)
    assert error_of(decode(raw))[1] == "invalid_message"


# --- unsubscribe ----------------------------------------------------------------------------


def test_unsubscribe() -> None:
    raw = frame(type="subscription", operation="UNSUBSCRIBE", id=3, subscription_id="sub-1")
    assert decode(raw) == Unsubscribe(id=3, subscription_id="sub-1")


@pytest.mark.parametrize("subscription_id", [_MISSING, None, ""])
def test_unsubscribe_needs_a_subscription_id(subscription_id: object) -> None:
    raw = request(type="subscription", operation="unsubscribe", subscription_id=subscription_id)
    assert error_of(decode(raw))[:2] == ("m1", "missing_subscription_id")


@pytest.mark.parametrize("subscription_id", [1, True, ["a"]])
def test_subscription_id_must_be_a_string(subscription_id: object) -> None:
    raw = request(type="subscription", operation="unsubscribe", subscription_id=subscription_id)
    assert error_of(decode(raw))[:2] == ("m1", "invalid_message")


# --- options --------------------------------------------------------------------------------


def options_of(options: object, **fields: Any) -> QueryOptions:
    result = decode(request(options=options, **fields))
    assert isinstance(result, Request | Subscribe), result
    return result.options


def test_full_options() -> None:
    options = {
        "filters": [
            {"column": "status", "operator": "EQ", "value": "active"},
            {"column": "status", "operator": "eq", "value": None, "logic_operator": "or"},
            {"column": "age", "operator": "between", "value": [1, 2], "logic_operator": None},
        ],
        "columns": ["id", "name"],
        "omit_columns": ["secret"],
        "preload": ["posts", {"relation": "team", "columns": ["id"]}, {"relation": "x"}],
        "sort": [{"column": "name", "direction": "DESC"}, {"column": "id"}],
        "limit": 10.0,
        "offset": 0,
    }
    assert options_of(options) == QueryOptions(
        filters=(
            FilterSpec(column="status", operator="EQ", value="active"),
            FilterSpec(column="status", operator="eq", value=None, logic_operator="or"),
            FilterSpec(column="age", operator="between", value=[1, 2]),
        ),
        columns=("id", "name"),
        omit_columns=("secret",),
        preload=(
            PreloadSpec(relation="posts"),
            PreloadSpec(relation="team", columns=("id",)),
            PreloadSpec(relation="x"),
        ),
        sort=(SortSpec(column="name", direction="DESC"), SortSpec(column="id")),
        limit=10,
        offset=0,
    )


def test_null_and_empty_options() -> None:
    assert options_of(None) == QueryOptions()
    assert options_of({}) == QueryOptions()
    nulls = dict.fromkeys(
        ("filters", "columns", "omit_columns", "preload", "sort", "limit", "offset")
    )
    assert options_of(nulls) == QueryOptions()
    assert options_of({"columns": []}) == QueryOptions(columns=())


def test_unknown_and_go_only_option_keys_are_ignored() -> None:
    options = {
        "limit": 5,
        "customOperators": [{"name": "x", "sql": "1=1"}],
        "computedColumns": [],
        "fetch_row_number": "id",
        "cursor_forward": "abc",
        "parameters": None,
    }
    assert options_of(options) == QueryOptions(limit=5)
    filters = {"filters": [{"column": "a", "operator": "eq", "value": 1, "extra": True}]}
    assert options_of(filters) == QueryOptions(
        filters=(FilterSpec(column="a", operator="eq", value=1),)
    )


def test_a_filter_without_value_has_value_none() -> None:
    filters = {"filters": [{"column": "a", "operator": "is_null"}]}
    assert options_of(filters).filters == (FilterSpec(column="a", operator="is_null"),)


@pytest.mark.parametrize(
    ("options", "names"),
    [
        (5, "options"),
        ([], "options"),
        ("limit=5", "options"),
        ({"filters": {}}, "options.filters"),
        ({"filters": "a"}, "options.filters"),
        ({"filters": [1]}, "options.filters[0]"),
        ({"filters": [{"operator": "eq"}]}, "options.filters[0].column"),
        ({"filters": [{"column": 1, "operator": "eq"}]}, "options.filters[0].column"),
        (
            {"filters": [{"column": "a", "operator": "eq"}, {"column": "a"}]},
            "options.filters[1].operator",
        ),
        (
            {"filters": [{"column": "a", "operator": "eq", "logic_operator": 1}]},
            "options.filters[0].logic_operator",
        ),
        ({"columns": "id"}, "options.columns"),
        ({"columns": ["id", 2]}, "options.columns[1]"),
        ({"omit_columns": [None]}, "options.omit_columns[0]"),
        ({"preload": "posts"}, "options.preload"),
        ({"preload": [1]}, "options.preload[0]"),
        ({"preload": [{"columns": ["a"]}]}, "options.preload[0].relation"),
        ({"preload": [{"relation": "p", "columns": "a"}]}, "options.preload[0].columns"),
        ({"preload": [{"relation": "p", "columns": [1]}]}, "options.preload[0].columns[0]"),
        ({"sort": {"column": "a"}}, "options.sort"),
        ({"sort": ["name"]}, "options.sort[0]"),
        ({"sort": [{"direction": "asc"}]}, "options.sort[0].column"),
        ({"sort": [{"column": "a", "direction": 1}]}, "options.sort[0].direction"),
        ({"limit": -1}, "options.limit"),
        ({"limit": "10"}, "options.limit"),
        ({"limit": True}, "options.limit"),
        ({"limit": 10.5}, "options.limit"),
        ({"limit": 1e300}, "options.limit"),
        ({"limit": [10]}, "options.limit"),
        ({"offset": -5}, "options.offset"),
        ({"offset": 2**63}, "options.offset"),
        ({"offset": False}, "options.offset"),
    ],
)
def test_malformed_options_are_invalid_options(options: object, names: str) -> None:
    for raw in (
        request(options=options, schema="public"),
        request(type="subscription", operation="subscribe", options=options, schema="public"),
    ):
        result = decode(raw)
        assert isinstance(result, DecodeError), result
        assert (result.id, result.error.code) == ("m1", "invalid_options")
        assert result.error.message.startswith(names + " "), result.error.message
        assert result.entity_ref == ("public", "users")


def test_options_errors_on_meta_list_carry_no_entity() -> None:
    result = decode(request(operation="meta", entity=None, options=5))
    assert isinstance(result, DecodeError)
    assert result.error.code == "invalid_options"
    assert result.entity_ref is None


def test_limit_boundaries() -> None:
    assert options_of({"limit": 0, "offset": 2**63 - 1}) == QueryOptions(limit=0, offset=2**63 - 1)


# --- encode ---------------------------------------------------------------------------------

TS = "2025-12-12T10:30:00.123Z"


def encoded(message: Response | Notification | Pong) -> dict[str, Any]:
    text = encode(message)
    assert isinstance(text, str)
    assert "\n" not in text  # one object per frame, never batched
    result = json.loads(text)
    assert isinstance(result, dict)
    return result


def test_encode_successful_response_always_has_data() -> None:
    assert encoded(Response(id="a", success=True, timestamp=TS)) == {
        "id": "a",
        "type": "response",
        "success": True,
        "data": None,
        "timestamp": TS,
    }
    response = Response(id=1, success=True, timestamp=TS, data=[1], metadata={"total": 1})
    assert encoded(response) == {
        "id": 1,
        "type": "response",
        "success": True,
        "data": [1],
        "metadata": {"total": 1},
        "timestamp": TS,
    }


def test_encode_failed_response_has_error_and_no_data() -> None:
    response = Response(
        id="",
        success=False,
        timestamp=TS,
        data="ignored",
        error=ErrorInfo(code="invalid_message", message="Bad"),
    )
    assert encoded(response) == {
        "id": "",
        "type": "response",
        "success": False,
        "error": {"code": "invalid_message", "message": "Bad"},
        "timestamp": TS,
    }
    with_details = Response(
        id="x",
        success=False,
        timestamp=TS,
        error=ErrorInfo(code="model_not_found", message="m", details={"candidates": ["a", "b"]}),
    )
    assert encoded(with_details)["error"]["details"] == {"candidates": ["a", "b"]}


def test_encode_notification_has_every_field() -> None:
    notification = Notification(
        operation=Operation.DELETE,
        subscription_id="s1",
        schema="",
        entity="users",
        data={"id": 1},
        timestamp=TS,
    )
    assert encoded(notification) == {
        "type": "notification",
        "operation": "delete",
        "subscription_id": "s1",
        "schema": "",
        "entity": "users",
        "data": {"id": 1},
        "timestamp": TS,
    }


def test_encode_pong() -> None:
    assert encoded(Pong(id=None, timestamp=TS)) == {"type": "pong", "timestamp": TS}
    assert encoded(Pong(id=0, timestamp=TS)) == {"type": "pong", "id": 0, "timestamp": TS}
    assert encoded(Pong(id="", timestamp=TS)) == {"type": "pong", "id": "", "timestamp": TS}


def test_encode_dates_and_datetimes() -> None:
    row = {
        "day": datetime.date(2025, 2, 3),
        "at": datetime.datetime(2025, 2, 3, 4, 5, 6),
        "precise": datetime.datetime(2025, 2, 3, 4, 5, 6, 123456),
        "nested": [{"d": datetime.date(2000, 1, 1)}],
        "f": 1.5,
        "n": None,
        "b": False,
    }
    data = encoded(Response(id="a", success=True, timestamp=TS, data=row))["data"]
    assert data == {
        "day": "2025-02-03",
        "at": "2025-02-03T04:05:06Z",
        "precise": "2025-02-03T04:05:06.123456Z",
        "nested": [{"d": "2000-01-01"}],
        "f": 1.5,
        "n": None,
        "b": False,
    }


def test_encode_values_orjson_refuses() -> None:
    # Integers beyond 64 bits and lone surrogates take the slow path but still encode.
    data = {"big": 2**70, "s": "a\ud800b", "at": datetime.datetime(2025, 1, 1)}
    text = encode(Response(id="a", success=True, timestamp=TS, data=data))
    text.encode("utf-8")  # valid UTF-8 text
    assert json.loads(text)["data"] == {"big": 2**70, "s": "a\ud800b", "at": "2025-01-01T00:00:00Z"}


def test_encode_is_compact_unicode() -> None:
    text = encode(Pong(id="é", timestamp=TS))
    assert text == '{"type":"pong","id":"é","timestamp":"' + TS + '"}'


# --- decode_outbound and encode_inbound -----------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "nope",
        "[]",
        "{}",
        '{"type": "request", "id": "a"}',
        '{"type": "ping"}',
        '{"type": "pong"}',
        '{"type": "pong", "id": true, "timestamp": "t"}',
        '{"type": "pong", "timestamp": 5}',
        '{"type": "pong", "timestamp": "t", "extra": 1}',
        '{"type": "response", "id": "a", "success": "yes", "data": 1, "timestamp": "t"}',
        '{"type": "response", "id": "a", "success": true, "timestamp": "t"}',
        '{"type": "response", "id": "a", "success": false, "timestamp": "t"}',
        '{"type": "response", "id": "a", "success": false, "data": 1,'
        ' "error": {"code": "c", "message": "m"}, "timestamp": "t"}',
        '{"type": "response", "id": "a", "success": false, "error": {"code": "c"},'
        ' "timestamp": "t"}',
        '{"type": "response", "id": "a", "success": true, "data": 1, "metadata": [],'
        ' "timestamp": "t"}',
        '{"type": "notification", "operation": "zap", "subscription_id": "s", "schema": "",'
        ' "entity": "e", "data": 1, "timestamp": "t"}',
        '{"type": "notification", "operation": "create", "schema": "",'
        ' "entity": "e", "data": 1, "timestamp": "t"}',
    ],
)
def test_decode_outbound_rejects_what_a_server_must_not_send(raw: str) -> None:
    with pytest.raises(ValueError):
        decode_outbound(raw)


def test_encode_inbound_shapes() -> None:
    assert json.loads(encode_inbound(Ping())) == {"type": "ping"}
    assert json.loads(encode_inbound(Unsubscribe(id="u", subscription_id="s"))) == {
        "type": "subscription",
        "operation": "unsubscribe",
        "id": "u",
        "subscription_id": "s",
    }
    meta = Request(id="m", operation=Operation.META, entity="")
    assert json.loads(encode_inbound(meta)) == {
        "type": "request",
        "id": "m",
        "operation": "meta",
        "entity": "",
    }
    read = Request(
        id="r",
        operation=Operation.READ,
        entity="users",
        options=QueryOptions(filters=(FilterSpec(column="a", operator="eq"),), limit=5),
    )
    assert json.loads(encode_inbound(read)) == {
        "type": "request",
        "id": "r",
        "operation": "read",
        "entity": "users",
        "options": {
            "filters": [{"column": "a", "operator": "eq", "value": None, "logic_operator": "AND"}],
            "limit": 5,
        },
    }


def test_make_converter_builds_a_fresh_converter() -> None:
    first, second = make_converter(), make_converter()
    assert isinstance(first, cattrs.Converter)
    assert first is not second
    pong = Pong(id=1, timestamp=TS)
    assert first.unstructure(pong) == {"type": "pong", "id": 1, "timestamp": TS}
    assert first.structure({"id": 1, "timestamp": TS}, Pong) == pong


# --- properties -------------------------------------------------------------------------------

# JSON-safe scalars: orjson holds integers to 64 bits; JSON has no NaN.
json_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
json_scalars = (
    st.none() | st.booleans() | json_ints | st.floats(allow_nan=False, allow_infinity=False)
) | st.text(max_size=10)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=5), json_values, max_size=4)
names = st.text(min_size=1, max_size=8)
message_ids = st.text(min_size=1, max_size=8) | json_ints
small_counts = st.integers(min_value=0, max_value=2**63 - 1)

filter_specs = st.builds(
    FilterSpec,
    column=st.text(max_size=6),
    operator=st.text(max_size=6),
    value=json_values,
    logic_operator=st.text(max_size=3),
)
query_options = st.builds(
    QueryOptions,
    filters=st.lists(filter_specs, max_size=3).map(tuple),
    columns=st.none() | st.lists(st.text(max_size=4), max_size=3).map(tuple),
    omit_columns=st.lists(st.text(max_size=4), max_size=3).map(tuple),
    preload=st.lists(
        st.builds(
            PreloadSpec,
            relation=st.text(max_size=5),
            columns=st.none() | st.lists(st.text(max_size=4), max_size=2).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
    sort=st.lists(
        st.builds(SortSpec, column=st.text(max_size=4), direction=st.text(max_size=4)), max_size=2
    ).map(tuple),
    limit=st.none() | small_counts,
    offset=st.none() | small_counts,
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    operation = draw(st.sampled_from(sorted(REQUEST_OPERATIONS, key=lambda op: op.value)))
    needs_key = operation in (Operation.UPDATE, Operation.DELETE)
    record_id = draw((names | json_ints) if needs_key else st.none() | names | json_ints)
    data: Any = None
    if operation is Operation.CREATE:
        data = draw(json_objects | st.lists(json_objects, min_size=1, max_size=3))
    elif operation is Operation.UPDATE:
        data = draw(json_objects)
    entity = draw(names | st.just("") if operation is Operation.META else names)
    return Request(
        id=draw(message_ids),
        operation=operation,
        entity=entity,
        schema=draw(st.none() | names),
        record_id=record_id,
        data=data,
        options=draw(query_options),
    )


inbound_messages = (
    requests()
    | st.builds(
        Subscribe,
        id=message_ids,
        entity=names,
        schema=st.none() | names,
        options=query_options,
        snapshot=st.booleans(),
        resume=st.none()
        | st.builds(ResumePosition, epoch=st.text(max_size=8), seq=st.integers(0, 2**63 - 1)),
    )
    | st.builds(Unsubscribe, id=message_ids, subscription_id=names)
    | st.builds(Ping, id=st.none() | st.text(max_size=8) | json_ints)
)


@given(inbound_messages)
def test_inbound_round_trip(message: Request | Subscribe | Unsubscribe | Ping) -> None:
    text = encode_inbound(message)
    assert decode(text) == message
    assert decode(text.encode()) == message


error_infos = st.builds(
    ErrorInfo, code=names, message=st.text(max_size=10), details=st.none() | json_objects
)
responses = st.builds(
    Response,
    id=st.just("") | message_ids,
    success=st.just(True),
    timestamp=st.text(max_size=5),
    data=json_values,
    metadata=st.none() | json_objects,
) | st.builds(
    Response,
    id=st.just("") | message_ids,
    success=st.just(False),
    timestamp=st.text(max_size=5),
    error=error_infos,
    metadata=st.none() | json_objects,
)
outbound_messages = (
    responses
    | st.builds(
        Notification,
        operation=st.sampled_from(Operation),
        subscription_id=names,
        schema=st.text(max_size=5),
        entity=names,
        data=json_values,
        timestamp=st.text(max_size=5),
    )
    | st.builds(Pong, id=st.none() | st.text(max_size=5) | json_ints, timestamp=st.text(max_size=5))
)


@given(outbound_messages)
def test_outbound_round_trip(message: Response | Notification | Pong) -> None:
    text = encode(message)
    assert decode_outbound(text) == message
    assert decode_outbound(text.encode()) == message


def _check_decoded(result: object) -> None:
    assert isinstance(result, DecodeError | Request | Subscribe | Unsubscribe | Ping)
    if isinstance(result, DecodeError):
        assert result.error.code in {
            "invalid_message",
            "invalid_message_type",
            "invalid_operation",
            "invalid_subscription_operation",
            "invalid_options",
            "missing_subscription_id",
        }
        assert isinstance(result.id, str | int) and not isinstance(result.id, bool)


@settings(max_examples=200)
@given(json_values)
def test_arbitrary_json_never_raises(value: object) -> None:
    _check_decoded(decode(orjson.dumps(value)))


@settings(max_examples=200)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_arbitrary_bytes_and_text_never_raise(raw: bytes | str) -> None:
    _check_decoded(decode(raw))


# Near-miss messages: the right keys with values that are sometimes right, so the
# generated frames reach every rule.  They go to _decode_object directly, which has no
# catch-all: an exception here is a real bug, not one that decode() would hide.
plausible = {
    "type": st.sampled_from(["request", "Subscription", "ping", "pong", "x"]) | json_scalars,
    "id": st.sampled_from(["m", ""]) | json_scalars,
    "operation": st.sampled_from(
        ["read", "CREATE", "update", "delete", "meta", "subscribe", "unsubscribe", "y"]
    )
    | json_scalars,
    "entity": st.sampled_from(["users", ""]) | json_values,
    "schema": st.sampled_from(["public", ""]) | json_scalars,
    "record_id": st.sampled_from(["1", 1, 1.0, ""]) | json_values,
    "data": json_objects | st.lists(json_objects, max_size=2) | json_values,
    "subscription_id": st.sampled_from(["s", ""]) | json_scalars,
    "options": st.fixed_dictionaries(
        {},
        optional={
            "filters": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "column": st.just("a") | json_scalars,
                        "operator": st.just("eq") | json_scalars,
                        "value": json_values,
                        "logic_operator": st.just("OR") | json_scalars,
                    },
                )
                | json_scalars,
                max_size=3,
            )
            | json_values,
            "columns": st.lists(st.just("a") | json_scalars, max_size=2) | json_values,
            "omit_columns": st.lists(st.just("a") | json_scalars, max_size=2) | json_values,
            "preload": st.lists(
                st.just("p")
                | st.fixed_dictionaries(
                    {},
                    optional={
                        "relation": st.just("p") | json_scalars,
                        "columns": st.lists(st.just("a") | json_scalars, max_size=2) | json_values,
                    },
                )
                | json_scalars,
                max_size=2,
            )
            | json_values,
            "sort": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "column": st.just("a") | json_scalars,
                        "direction": st.just("desc") | json_scalars,
                    },
                )
                | json_scalars,
                max_size=2,
            )
            | json_values,
            "limit": st.integers(-2, 2**64) | json_scalars,
            "offset": st.floats() | json_scalars,
        },
    )
    | json_values,
}


@settings(max_examples=400)
@given(st.fixed_dictionaries({}, optional=plausible))
def test_near_miss_messages_never_raise(obj: dict[str, Any]) -> None:
    result = _codec._decode_object(obj)
    _check_decoded(result)
    if not isinstance(result, DecodeError):
        # Whatever decodes is a message that encodes back to itself.
        assert decode(encode_inbound(result)) == result
