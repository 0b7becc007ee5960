"""The public strategies (wsspec.testing.strategies) against the core codec and matcher.

* every valid message survives ``encode_inbound`` then ``decode`` unchanged;
* ``to_wire`` writes the same JSON object as ``encode_inbound``;
* every malformed frame decodes to a ``DecodeError`` with the paired code and id;
* every generated value and filter is accepted by the core's coercion and filter compiler.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsspec.testing import strategies as wst

from wsspec_core import (
    DecodeError,
    Entity,
    InboundMessage,
    coerce_value,
    compile_filters,
    decode,
    encode_inbound,
    matches,
)

from ._entities import ALL

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

entities = pytest.mark.parametrize("entity", ALL, ids=lambda e: e.qualified_name)


@entities
def test_valid_messages_round_trip(entity: Entity) -> None:
    @FAST
    @given(wst.messages(entity))
    def check(message: InboundMessage) -> None:
        frame = encode_inbound(message)
        assert decode(frame) == message
        assert decode(frame.encode()) == message  # binary frames holding UTF-8 JSON

    check()


@entities
def test_to_wire_agrees_with_the_codec(entity: Entity) -> None:
    @FAST
    @given(wst.messages(entity))
    def check(message: InboundMessage) -> None:
        assert decode(json.dumps(wst.to_wire(message))) == message

    check()


@pytest.mark.parametrize("entity", [None, *ALL], ids=lambda e: e.qualified_name if e else "none")
def test_malformed_frames_decode_to_their_code(entity: Entity | None) -> None:
    @settings(FAST, max_examples=300)
    @given(wst.malformed_frames(entity))
    def check(bad: wst.MalformedFrame) -> None:
        result = decode(bad.frame)
        assert isinstance(result, DecodeError), (bad.reason, result)
        assert result.error.code == bad.code, (bad.reason, result)
        assert result.id == bad.id, (bad.reason, result)

    check()


@entities
def test_rows_coerce(entity: Entity) -> None:
    @FAST
    @given(wst.rows(entity))
    def check(row: dict[str, object]) -> None:
        for name, value in row.items():
            column = entity.columns_by_name[name]
            if value is None:
                assert column.nullable
            else:
                coerce_value(column, value)

    check()


@entities
def test_filters_compile_and_match_without_error(entity: Entity) -> None:
    @FAST
    @given(st.data())
    def check(data: st.DataObject) -> None:
        samples = data.draw(st.lists(wst.rows(entity, optional=False), max_size=3))
        specs = data.draw(wst.filter_specs(entity, samples=samples))
        compiled = compile_filters(entity, specs)
        for sample in samples:
            row = {
                name: None if value is None else coerce_value(entity.columns_by_name[name], value)
                for name, value in sample.items()
            }
            matches(compiled, row)

    check()


@entities
def test_invalid_requests_pass_the_codec(entity: Entity) -> None:
    """Their mistake shows only against the entity: the codec lets them through."""

    @FAST
    @given(wst.invalid_requests(entity))
    def check(bad: wst.MalformedFrame) -> None:
        assert not isinstance(decode(bad.frame), DecodeError), bad

    check()
