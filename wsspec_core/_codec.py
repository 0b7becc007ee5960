"""The wire codec. (Interface stub: being implemented.)"""

from __future__ import annotations

from ._messages import DecodeError, InboundMessage, OutboundMessage


def format_timestamp(now: float) -> str:
    """RFC 3339, UTC, with a ``Z``: ``2025-12-12T10:30:00.123Z``."""
    raise NotImplementedError


def decode(frame: str | bytes) -> InboundMessage | DecodeError:
    raise NotImplementedError


def encode(message: OutboundMessage) -> str:
    raise NotImplementedError


def encode_inbound(message: InboundMessage) -> str:
    raise NotImplementedError


def decode_outbound(frame: str | bytes) -> OutboundMessage:
    raise NotImplementedError


def make_converter() -> object:
    raise NotImplementedError
