"""The properties the fuzzer checks, one module each (docs/fuzzing.md has the table).

Each module defines ``check(fuzzer, data, target)``, the body of one Hypothesis example:
it draws its inputs from ``data``, talks to the server through the
:class:`~wsspec.testing.fuzz.runner.Fuzzer`'s connections, and raises
:class:`~wsspec.testing.fuzz.report.PropertyFailure` when the server breaks the property
(or :class:`~wsspec.testing.fuzz.report.Refused` to reject the example).  ``PER_ENTITY``
says whether it runs once per entity (``target`` is that entity) or once overall
(``target`` is ``None`` and the example draws the entity).
"""

from __future__ import annotations

from types import ModuleType

from . import filtered_read, malformed, responses, roundtrip, subscription

__all__ = ["BY_NAME"]

#: Property name (as on the command line, :data:`..config.PROPERTIES`) -> its module.
BY_NAME: dict[str, ModuleType] = {
    "responses": responses,
    "malformed": malformed,
    "roundtrip": roundtrip,
    "filtered-read": filtered_read,
    "subscription": subscription,
}
