"""The transport-neutral runtime: the :class:`App`, and the :class:`Runtime` that carries out
the engine's actions on trio or asyncio (through anyio) for every transport."""

from .app import STORAGE_THREADS, App
from .metrics import ServerMetrics
from .runtime import (
    CLOSE_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    Connection,
    ConnectionInfo,
    Runtime,
    Transport,
    TransportClosed,
)
from .storage_lanes import Storage, StorageLanes
from .tailer import ChangeFeedUnavailable, MemoryTailer, Retention, Tailer, tailer_for

__all__ = [
    "CLOSE_TIMEOUT",
    "SHUTDOWN_TIMEOUT",
    "STORAGE_THREADS",
    "App",
    "ChangeFeedUnavailable",
    "Connection",
    "ConnectionInfo",
    "MemoryTailer",
    "Retention",
    "Runtime",
    "ServerMetrics",
    "Storage",
    "StorageLanes",
    "Tailer",
    "Transport",
    "TransportClosed",
    "tailer_for",
]
