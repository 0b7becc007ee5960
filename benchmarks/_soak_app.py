"""The demo app with a short keepalive, for ``soak.py``'s half-open connections in quick
mode: ``wsspec serve _soak_app:build_app`` (run from ``benchmarks/``).  With the defaults a
peer that stopped answering is closed after 30 s + 20 s (and ``close_timeout``); here
after 2 s + 2 s, so that the scenario fits in a short run.  Everything else is the demo's.
"""

from __future__ import annotations

import attrs
from wsspec import App
from wsspec.demo import build_app as build_demo_app

KEEPALIVE_INTERVAL = 2.0
KEEPALIVE_TIMEOUT = 2.0


def build_app(db_url: str | None = None) -> App:
    demo = build_demo_app(db_url)
    limits = attrs.evolve(
        demo.limits, keepalive_interval=KEEPALIVE_INTERVAL, keepalive_timeout=KEEPALIVE_TIMEOUT
    )
    return App(demo.storage, registry=demo.registry, limits=limits)
