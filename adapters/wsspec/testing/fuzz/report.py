"""What a fuzzing run finds, and how it is printed.

A property either holds (:class:`Outcome` with its example counts), fails
(:class:`PropertyFailure`, carrying what the example drew and the :class:`Transcript` of
every frame it exchanged), or could not be run (:class:`Inconclusive`, or an ``error`` on
the outcome).  :class:`Refused` is neither: the server refused valid data for a reason of its
own, and the example is rejected.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .config import PROPERTIES

__all__ = [
    "Inconclusive",
    "Outcome",
    "PropertyFailure",
    "Refused",
    "Transcript",
    "plural",
    "print_outcome",
]


class Transcript:
    """Every frame exchanged during one example, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def frame(self, label: str, direction: str, frame: str | bytes) -> None:
        text = frame if isinstance(frame, str) else f"<binary frame> {frame!r}"
        self.lines.append(f"{label:>4} {direction} {text}")

    def note(self, text: str) -> None:
        self.lines.append(f"     -- {text}")

    def render(self, indent: str = "  ", limit: int = 400) -> str:
        lines = self.lines
        if len(lines) > limit:
            skipped = len(lines) - limit
            lines = [*lines[: limit // 2], f"     ... {skipped} lines ...", *lines[-limit // 2 :]]
        return "\n".join(indent + line for line in lines)


class PropertyFailure(AssertionError):
    """The server broke a property. ``transcript`` and ``example`` are filled in by the
    runner: the frames of the failing example and a description of what was drawn."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.transcript: Transcript | None = None
        self.example: list[str] = []


class Refused(Exception):
    """The server refused valid data for a reason the fuzzer cannot know about (its own
    constraints: a unique column, a hook): the example is rejected, not failed."""


class Inconclusive(Exception):
    """The server cannot be fuzzed (no entity list, an unusable entity, ...)."""


@attrs.define
class Outcome:
    """How one property went, on one entity (``entity``) or on all (``None``)."""

    name: str
    entity: str | None
    #: Examples started (including those Hypothesis discarded while drawing).
    examples: int = 0
    rejected: int = 0
    failure: PropertyFailure | None = None
    #: Shrinking the failure was stopped at the time limit: the example is the smallest
    #: found by then, not a minimal one.
    shrink_stopped: bool = False
    error: str | None = None


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def print_outcome(outcome: Outcome, say: Callable[[str], None]) -> None:
    """The report of one property: a line when it held, the counterexample when not."""
    where = f" [{outcome.entity}]" if outcome.entity else ""
    if outcome.failure is None and outcome.error is None:
        extra = f", {outcome.rejected} rejected" if outcome.rejected else ""
        say(
            f"  ok      {outcome.name}{where}: {outcome.examples} examples{extra}"
            f"  ({PROPERTIES[outcome.name]})"
        )
        return
    if outcome.error is not None:
        say(f"  ERROR   {outcome.name}{where}: {outcome.error}")
        return
    failure = outcome.failure
    assert failure is not None
    say(f"  FAILED  {outcome.name}{where}: {PROPERTIES[outcome.name]}")
    say(f"\nProperty violated: {failure.message}")
    if failure.example:
        if outcome.shrink_stopped:
            say("\nSmallest counterexample found before shrinking ran out of time:")
        else:
            say("\nMinimal counterexample (after shrinking):")
        for line in failure.example:
            say(f"  {line}")
    if failure.transcript is not None:
        say('\nFrames exchanged, in order (">>" sent by the fuzzer, "<<" received):')
        say(failure.transcript.render())
