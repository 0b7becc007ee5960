"""``wsspec fuzz URL``: property-based conformance checks against a running server.

Theory of operation.  The fuzzer is an ordinary WebSocketSpec client (two connections:
``main`` for requests and writes, ``sub`` for subscriptions).  It discovers the server's
entities with ``meta``, turns each into a :class:`wsspec_core.Entity`, and runs a set of
properties, each as a Hypothesis test driven programmatically (``@given`` with explicit
settings and seed).  An example draws its inputs (records, filters, writes, frames), talks
to the server, and compares what came back with what docs/protocol.md prescribes; the
expected answer of a filter is computed by the core's matcher (``wsspec_core.matches``),
which is this project's executable definition of the filter semantics.

On a failure Hypothesis shrinks the example; the fuzzer prints the minimal one as the exact
frames exchanged and exits with status 1.  The fuzzer only updates and deletes records it
created, and deletes every record it created before it exits (parents last).

Exit status: 0 all properties held; 1 a property failed; 2 the server could not be fuzzed
(unreachable, discovery failed, no usable entity, every example rejected), or the
``testing`` extra is not installed.

The modules, by role:

* :mod:`.command` - the ``wsspec fuzz`` subcommand (argument parsing only: it imports
  neither Hypothesis nor ``websockets`` until it runs);
* :mod:`.config` - :class:`FuzzConfig` and the table of properties;
* :mod:`.runner` - :class:`~.runner.Fuzzer`: discovery, bookkeeping writes, the time
  budget, running each property with Hypothesis;
* :mod:`.properties` - one module per property;
* :mod:`.entities` - what the fuzzer knows of the server's entities (from ``meta``);
* :mod:`.compare` - how an answer is checked against what the protocol prescribes;
* :mod:`.wire` - the client connections, which record every frame;
* :mod:`.report` - failures, transcripts and the printed report.

This package and :mod:`.command` and :mod:`.config` stay importable without the
``testing`` extra; everything else needs it.
"""
