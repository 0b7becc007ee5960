"""Peewee models -> wsspec_core ``Entity`` / ``Column`` / ``Relation``, and the per-model
facts the compiler needs (:class:`Target`: quoted table, value converters, defaults).

Only model metadata is read (``Model._meta``, Peewee's documented introspection); no
database is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import peewee

from wsspec_core import Column, ColumnType, Entity, Relation, RelationKind

from .dialect import Converter, Dialect, quote


def column_type(field: peewee.Field) -> ColumnType:
    """The wsspec type of a Peewee field; ``ValueError`` for the unsupported ones."""
    if isinstance(field, peewee.ForeignKeyField):
        return column_type(field.rel_field)
    if isinstance(field, peewee.BooleanField):
        return ColumnType.BOOLEAN
    if isinstance(field, peewee.DateTimeField):
        return ColumnType.DATETIME
    if isinstance(field, peewee.DateField):
        return ColumnType.DATE
    if isinstance(field, peewee.TimestampField | peewee.BlobField | peewee.BitField):
        raise ValueError(f"field {field.name!r}: {type(field).__name__} is not supported")
    if isinstance(field, peewee.IntegerField):  # Auto, BigInteger, SmallInteger, Identity
        return ColumnType.INTEGER
    if isinstance(field, peewee.FloatField | peewee.DecimalField):  # DoubleField too
        return ColumnType.FLOAT
    return ColumnType.TEXT  # Char, FixedChar, Text, UUID, Time, IP, ...


def integer_bits(field: peewee.Field) -> int:
    """The signed width of an integer field as Peewee declares it on PostgreSQL, from its
    ``field_type``: ``SMALLINT`` 16; ``INT`` (IntegerField, IdentityField), ``AUTO``
    (AutoField, ``SERIAL``) and a foreign key to either 32; ``BIGINT``, ``BIGAUTO`` 64.

    SQLite stores every integer in 64 bits, but the declared width is applied on every
    backend (docs/storage.md "Registering models"): answers must not depend on the
    database, and a value a model cannot hold on PostgreSQL is refused as a
    ``validation_error`` naming the column, not a database error. Other field types
    (a custom one) get 64."""
    declared = str(field.field_type).upper()
    if declared.startswith("BIG"):
        return 64
    if declared.startswith("SMALLINT"):
        return 16
    if declared.startswith(("INT", "AUTO")):
        return 32
    return 64


def has_sql_default(field: peewee.Field) -> bool:
    """Whether the field declares a database-side default
    (``constraints=[SQL("DEFAULT ...")]``)."""
    return any(
        isinstance(c, peewee.SQL) and c.sql.strip().upper().startswith("DEFAULT ")
        for c in field.constraints or ()
    )


def columns(model: type[peewee.Model]) -> list[Column]:
    """The model's columns, in field order, named by their database column names."""
    found = []
    for field in model._meta.sorted_fields:
        auto = isinstance(field, peewee.AutoField) or (
            field.primary_key and isinstance(field, peewee.IntegerField) and field.sequence
        )
        kind = column_type(field)
        found.append(
            Column(
                name=field.column_name,
                type=kind,
                integer_bits=integer_bits(field) if kind is ColumnType.INTEGER else 64,
                nullable=bool(field.null),
                primary_key=bool(field.primary_key),
                has_default=bool(auto or field.default is not None or has_sql_default(field)),
            )
        )
    return found


def check(name: str, model: type[peewee.Model]) -> None:
    """Raise ``ValueError`` if ``model`` cannot be registered as ``name``."""
    schema, _, entity_name = name.rpartition(".")
    found: Any = columns(model)  # (attrs converter: mypy cannot see it)
    Entity(name=entity_name, schema=schema, table_name="t", columns=found)


class Target:
    """What the adapter knows about one registered model, beyond its Entity."""

    __slots__ = ("defaults", "fields", "model", "table", "to_db", "to_py")

    def __init__(self, model: type[peewee.Model], table: str) -> None:
        self.model = model
        #: The quoted, schema-qualified table name.
        self.table = table
        self.fields: dict[str, peewee.Field] = {}
        #: Column -> converter applied to values bound as parameters (writes and filters).
        self.to_db: dict[str, Converter] = {}
        #: Column -> converter applied to values read back (``None`` when not needed).
        self.to_py: dict[str, Converter] = {}
        #: Column -> Peewee's Python-side default (value or callable), applied on create.
        self.defaults: dict[str, Any] = {}


def target(model: type[peewee.Model], dialect: Dialect) -> Target:
    meta = model._meta
    table = quote(meta.table_name)
    if meta.schema:
        table = f"{quote(meta.schema)}.{table}"
    found = Target(model, table)
    for field in meta.sorted_fields:
        col = field.column_name
        found.fields[col] = field
        kind = column_type(field)
        found.to_db[col] = dialect.to_db(field, kind)
        found.to_py[col] = dialect.to_py(field, kind)
        if field.default is not None:
            found.defaults[col] = field.default
    return found


def entities(models: Mapping[str, type[peewee.Model]]) -> dict[str, Entity]:
    """An Entity per registered name, with the relations between registered models.

    A ``ForeignKeyField`` gives its model a ``belongs_to`` relation named after the field
    and the target model a ``has_many`` relation named by the backref (none for ``"+"``).
    A relation whose name clashes with a column is left out; of two with one name, the
    first is kept.
    """
    model_names: dict[type[peewee.Model], str] = {}
    for name, model in models.items():
        model_names.setdefault(model, name)
    relations: dict[str, list[Relation]] = {name: [] for name in models}
    for name, model in models.items():
        own_columns = {f.column_name for f in model._meta.sorted_fields}
        for field in model._meta.sorted_fields:
            if not isinstance(field, peewee.ForeignKeyField):
                continue
            remote = model_names.get(field.rel_model)
            if remote is None:
                continue
            if field.name not in own_columns:
                relations[name].append(
                    Relation(
                        name=field.name,
                        kind=RelationKind.BELONGS_TO,
                        target=remote,
                        local_column=field.column_name,
                        remote_column=field.rel_field.column_name,
                    )
                )
            backref = field.backref
            remote_columns = {f.column_name for f in field.rel_model._meta.sorted_fields}
            if backref and backref != "+" and backref not in remote_columns:
                relations[remote].append(
                    Relation(
                        name=backref,
                        kind=RelationKind.HAS_MANY,
                        target=name,
                        local_column=field.rel_field.column_name,
                        remote_column=field.column_name,
                    )
                )
    found = {}
    for name, model in models.items():
        schema, _, entity_name = name.rpartition(".")
        unique: dict[str, Relation] = {}
        for relation in relations[name]:
            unique.setdefault(relation.name, relation)
        entity_columns: Any = columns(model)  # (attrs converter: mypy cannot see it)
        entity_relations: Any = tuple(unique.values())
        found[name] = Entity(
            name=entity_name,
            schema=schema,
            table_name=model._meta.table_name,
            columns=entity_columns,
            relations=entity_relations,
        )
    return found
