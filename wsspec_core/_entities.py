"""Storage-neutral descriptions of the entities a server exposes, and their registry.

A storage adapter turns its ORM models into :class:`Entity` values; the core never sees
the ORM. Resolution of a request's ``(schema, entity)`` pair follows docs/protocol.md
section "Entities and schemas".
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence

import attrs


class ColumnType(enum.Enum):
    """The value types the core knows how to coerce, compare and match."""

    # Members are singletons compared by identity, so the C-level identity hash is
    # correct, and much cheaper than Enum's Python-level one on hot dict lookups.
    __hash__ = object.__hash__

    INTEGER = "integer"
    FLOAT = "float"
    TEXT = "text"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"


class RelationKind(enum.Enum):
    #: This entity holds a foreign key to the target: preloads as one object (or null).
    BELONGS_TO = "belongs_to"
    #: The target holds a foreign key to this entity (a backref): preloads as a list.
    HAS_MANY = "has_many"


@attrs.frozen(kw_only=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = True
    primary_key: bool = False
    #: The database fills the column when a create leaves it out (a default, or an
    #: auto-incrementing key), so a create may omit it even when it is not nullable.
    has_default: bool = False
    #: For an INTEGER column: the signed width the database stores, 16, 32 or 64 bits.
    #: Values outside it are refused by coercion (docs/protocol.md "Coercion") instead of
    #: failing in the database. Ignored for the other types.
    integer_bits: int = attrs.field(default=64, validator=attrs.validators.in_((16, 32, 64)))


@attrs.frozen(kw_only=True)
class Relation:
    """A named relation, preloadable as ``options.preload[].relation``.

    ``BELONGS_TO``: ``row[local_column]`` equals ``target_row[remote_column]`` (one target).
    ``HAS_MANY``: ``target_row[remote_column]`` equals ``row[local_column]`` (many targets).
    """

    name: str
    kind: RelationKind
    #: The qualified name (see :attr:`Entity.qualified_name`) of the related entity.
    target: str
    local_column: str
    remote_column: str


def _columns(items: Iterable[Column]) -> tuple[Column, ...]:
    return tuple(items)


def _relations(items: Iterable[Relation]) -> tuple[Relation, ...]:
    return tuple(items)


def _check_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or "." in value:
        raise ValueError(f"{attribute.name} must be a non-empty name without dots: {value!r}")


@attrs.frozen(kw_only=True)
class Entity:
    """One registered model: what a request's ``schema``/``entity`` resolve to."""

    name: str = attrs.field(validator=_check_name)
    #: ``""`` when the model was registered without a schema.
    schema: str = ""
    table_name: str
    columns: tuple[Column, ...] = attrs.field(converter=_columns)
    relations: tuple[Relation, ...] = attrs.field(default=(), converter=_relations)
    columns_by_name: Mapping[str, Column] = attrs.field(init=False, eq=False, repr=False)
    relations_by_name: Mapping[str, Relation] = attrs.field(init=False, eq=False, repr=False)
    primary_key: Column = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        by_name = {c.name: c for c in self.columns}
        if len(by_name) != len(self.columns):
            raise ValueError(f"duplicate column names in {self.qualified_name}")
        keys = [c for c in self.columns if c.primary_key]
        if len(keys) != 1:
            raise ValueError(f"{self.qualified_name} needs exactly one primary key column")
        relations = {r.name: r for r in self.relations}
        if len(relations) != len(self.relations):
            raise ValueError(f"duplicate relation names in {self.qualified_name}")
        clash = set(relations) & set(by_name)
        if clash:
            raise ValueError(f"relation names clash with columns in {self.qualified_name}: {clash}")
        object.__setattr__(self, "columns_by_name", by_name)
        object.__setattr__(self, "relations_by_name", relations)
        object.__setattr__(self, "primary_key", keys[0])

    @property
    def qualified_name(self) -> str:
        """``"schema.entity"``, or ``"entity"`` when there is no schema."""
        return f"{self.schema}.{self.name}" if self.schema else self.name


@attrs.frozen
class ResolutionError:
    """Why a ``(schema, entity)`` pair did not resolve: becomes ``model_not_found``."""

    message: str
    candidates: tuple[str, ...] = ()


class EntityRegistry:
    """The registered entities, looked up as docs/protocol.md "Entities and schemas" says.

    * ``schema`` given: the entity registered under exactly that schema; failing that,
      an entity of that name registered *without* a schema (as the Go original does, but
      the client's schema string is only ever compared, never used to build SQL).
    * ``schema`` absent or empty: the one entity of that name, whatever its schema; two or
      more candidates are ambiguous and the error lists them.
    """

    def __init__(self, entities: Iterable[Entity] = ()) -> None:
        self._by_qualified: dict[str, Entity] = {}
        self._by_name: dict[str, list[Entity]] = {}
        for entity in entities:
            self.register(entity)

    def register(self, entity: Entity) -> None:
        if entity.qualified_name in self._by_qualified:
            raise ValueError(f"entity {entity.qualified_name!r} is already registered")
        self._by_qualified[entity.qualified_name] = entity
        self._by_name.setdefault(entity.name, []).append(entity)

    def validate(self) -> None:
        """Check that every relation points at a registered entity and existing columns."""
        for entity in self._by_qualified.values():
            for relation in entity.relations:
                target = self._by_qualified.get(relation.target)
                if target is None:
                    raise ValueError(
                        f"{entity.qualified_name}.{relation.name} targets unregistered "
                        f"entity {relation.target!r}"
                    )
                if relation.local_column not in entity.columns_by_name:
                    raise ValueError(f"{entity.qualified_name}.{relation.name}: bad local column")
                if relation.remote_column not in target.columns_by_name:
                    raise ValueError(f"{entity.qualified_name}.{relation.name}: bad remote column")

    def entities(self) -> list[Entity]:
        return list(self._by_qualified.values())

    @property
    def by_qualified(self) -> Mapping[str, Entity]:
        """The entities by qualified name (a live, read-only view): what :meth:`resolve`
        looks up first for a schema and a name."""
        return self._by_qualified

    @property
    def by_name(self) -> Mapping[str, Sequence[Entity]]:
        """The entities by their name without schema (a live, read-only view): one entity
        under a name is what :meth:`resolve` finds for that name and no schema."""
        return self._by_name

    def get(self, qualified_name: str) -> Entity | None:
        return self._by_qualified.get(qualified_name)

    def resolve(self, schema: str | None, name: str) -> Entity | ResolutionError:
        if schema:
            found = self._by_qualified.get(f"{schema}.{name}")
            if found is None:
                found = self._by_qualified.get(name)
            if found is not None:
                return found
            return ResolutionError(f"Model not found: {schema}.{name}")
        candidates = self._by_name.get(name, [])
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            return ResolutionError(f"Model not found: {name}")
        names = tuple(sorted(c.qualified_name for c in candidates))
        return ResolutionError(
            f"Model {name!r} is ambiguous: give a schema, one of {', '.join(names)}", names
        )
