"""The engine. (Interface stub.)"""

from __future__ import annotations


class Engine:
    pass
