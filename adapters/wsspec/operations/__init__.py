"""Operating a wsspec server (docs/operations.md): the ``/metrics``, ``/healthz`` and
``/readyz`` endpoints (:mod:`.endpoints`), the small HTTP server that serves them on a port
of their own (:mod:`.http_server`), JSON log lines (:mod:`.logs`) and ``--workers``
processes (:mod:`.workers`). What the server counts is :mod:`wsspec.runtime.metrics`."""
