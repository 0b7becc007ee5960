"""The testing kit: check a WebSocketSpec server, this project's or anyone else's.

* :mod:`wsspec.testing.strategies` - Hypothesis strategies for valid messages and for
  malformed frames paired with the error a compliant server must answer;
* :mod:`wsspec.testing.fuzz` - ``wsspec fuzz URL``, the conformance fuzzer built on them.

Both need the ``testing`` extra (``pip install 'wsspec[testing]'``: Hypothesis and
``websockets``).  This package itself imports neither, so that the command line can tell
when they are missing.
"""
