"""The in-memory storage backend. (Interface stub.)"""

from __future__ import annotations


class MemoryStorage:
    pass
