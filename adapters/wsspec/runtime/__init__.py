"""The transport-neutral runtime: the :class:`App`, and the :class:`Runtime` that carries out
the engine's actions on trio or asyncio (through anyio) for every transport."""

from .app import STORAGE_THREADS, App
from .runtime import (
    CLOSE_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    Connection,
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
    "MemoryTailer",
    "Retention",
    "Runtime",
    "Storage",
    "StorageLanes",
    "Tailer",
    "Transport",
    "TransportClosed",
    "tailer_for",
]
