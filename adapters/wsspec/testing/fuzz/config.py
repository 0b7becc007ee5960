"""What a fuzzing run is asked to do: :class:`FuzzConfig`, and the properties it knows.

Importable without the ``testing`` extra: the command line builds ``--help`` from it.
"""

from __future__ import annotations

import attrs

__all__ = ["PROPERTIES", "FuzzConfig"]

#: Property name -> what it checks (the summary prints these).  Each has its module in
#: :mod:`wsspec.testing.fuzz.properties`.
PROPERTIES: dict[str, str] = {
    "responses": "every request gets exactly one response carrying its id (pipelined)",
    "malformed": "malformed input gets the prescribed error and the connection stays usable",
    "roundtrip": "a record read after create/update equals what was stored; "
    "missing records are not_found",
    "filtered-read": "a filtered read returns exactly the records the filters match",
    "subscription": "a filtered subscription is notified of exactly the matching writes, "
    "and of none after unsubscribe",
}

#: Shrinking a failure may outlast the time budget by up to this much, so that a short
#: budget still ends with a shrunk counterexample (see runner.Fuzzer.run_property).
MIN_SHRINK_SECONDS = 10.0


@attrs.frozen(kw_only=True)
class FuzzConfig:
    url: str
    entities: tuple[str, ...] = ()
    properties: tuple[str, ...] = tuple(PROPERTIES)
    max_examples: int = 25
    #: Time budget, shared among the properties; checked between rounds of examples.
    max_seconds: float = 60.0
    seed: int | None = None
    timeout: float = 5.0
    grace: float = 0.05
    #: At least this long for shrinking a failure, even past ``max_seconds``.
    min_shrink_seconds: float = MIN_SHRINK_SECONDS
