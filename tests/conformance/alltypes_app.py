"""An app with every column type, served by ``wsspec serve`` in the fuzzer's tests:
``wsspec serve tests.conformance.alltypes_app:build_app --db sqlite:///...``."""

from __future__ import annotations

import peewee
from wsspec import App
from wsspec.storage.peewee import PeeweeStorage


def build_app(db_url: str | None = None) -> App:
    storage = PeeweeStorage.from_url(db_url or "sqlite:///:memory:")

    class Thing(peewee.Model):
        id = peewee.AutoField()
        label = peewee.TextField()
        count = peewee.IntegerField(null=True)
        ratio = peewee.FloatField(null=True)
        flag = peewee.BooleanField(null=True)
        day = peewee.DateField(null=True)
        at = peewee.DateTimeField(null=True)

        class Meta:
            table_name = "things"

    class Tag(peewee.Model):
        code = peewee.TextField(primary_key=True)
        weight = peewee.FloatField(default=1.0)
        active = peewee.BooleanField(default=True)

        class Meta:
            table_name = "tags"

    storage.database.bind([Thing, Tag])
    with storage.database.connection_context():
        storage.database.create_tables([Thing, Tag], safe=True)
    storage.register("public.things", Thing)
    storage.register("tags", Tag)
    return App(storage)
