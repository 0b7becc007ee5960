"""The Peewee storage backend: wsspec_core's storage operations on SQLite or PostgreSQL.

Modules, by role (docs/storage.md "Module layout"):

* ``introspection``: Peewee models -> wsspec_core ``Entity`` / ``Column`` / ``Relation``;
* ``dialect``: what differs between SQLite and PostgreSQL (LIKE, collation, NULL order,
  value conversion, connection set-up);
* ``compiler``: storage operations -> cached SQL text and bound parameters, no database;
* ``connections``: database URLs (``playhouse.db_url``), the PostgreSQL pool
  (``playhouse.pool``) and each thread's connection;
* ``errors``: driver exceptions -> ``StorageError`` kinds;
* ``execution``: :class:`PeeweeStorage`, which runs the compiled statements.
"""

from .execution import PeeweeStorage

__all__ = ["PeeweeStorage"]
