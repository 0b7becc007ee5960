"""Write throughput with and without the change log (docs/changefeed.md), same run.

    python benchmarks/bench_changelog.py    # N=3000 creates; PostgreSQL when
                                            # WSSPEC_TEST_POSTGRES_DSN names a database

SQLite file and PostgreSQL through PeeweeStorage (one writer), and PostgreSQL plain INSERTs
from four connections, alternating without and with the log, best of three. Each run uses a
table of its own (a temporary file, a schema of its own) and removes it. The ratio is the
claim; absolute rates vary by machine.
"""

import os
import tempfile
import threading
import time
import uuid

import peewee
from wsspec.storage.peewee import PeeweeStorage, changelog

from wsspec_core import Create

N = int(os.environ.get("N", "3000"))
DSN = os.environ.get("WSSPEC_TEST_POSTGRES_DSN")


def models(db):
    class Item(peewee.Model):
        name = peewee.CharField()
        qty = peewee.IntegerField(default=0)
        price = peewee.FloatField(null=True)
        active = peewee.BooleanField(default=True)

        class Meta:
            database = db
            table_name = "items"

    return Item


def make(kind, logged):
    if kind == "sqlite":
        path = tempfile.mktemp(suffix=".db")
        db = peewee.SqliteDatabase(path)

        def cleanup():
            return os.remove(path)
    else:
        schema = "bench_" + uuid.uuid4().hex[:8]
        admin = peewee.PostgresqlDatabase(DSN)
        admin.execute_sql(f"CREATE SCHEMA {schema}")
        admin.close()
        db = peewee.PostgresqlDatabase(DSN, options=f"-c search_path={schema}")

        def cleanup():
            db.close()
            a = peewee.PostgresqlDatabase(DSN)
            a.execute_sql(f"DROP SCHEMA {schema} CASCADE")
            a.close()

    Item = models(db)
    db.create_tables([Item])
    if logged:
        changelog.install(db, [Item])
    storage = PeeweeStorage(db)
    entity = storage.register("items", Item)
    return db, storage, entity, cleanup


def run_serial(kind, logged):
    db, storage, entity, cleanup = make(kind, logged)
    row = {"name": "widget", "qty": 3, "price": 1.5}
    for _ in range(200):
        storage.execute(Create(entity=entity, rows=[row]))
    t = time.perf_counter()
    for _ in range(N):
        storage.execute(Create(entity=entity, rows=[row]))
    rate = N / (time.perf_counter() - t)
    storage.close()
    db.close()
    cleanup()
    return rate


def run_concurrent(logged, threads=4):
    # PostgreSQL: each thread its own connection, plain INSERTs in autocommit.
    db, storage, _entity, cleanup = make("pg", logged)
    import psycopg

    schema = db.execute_sql("select current_schema()").fetchone()[0]
    per = N // threads

    def work():
        with psycopg.connect(DSN, autocommit=True, options=f"-c search_path={schema}") as c:
            for _ in range(per):
                c.execute("INSERT INTO items (name, qty, price, active) VALUES ('w', 1, 1.0, true)")

    ts = [threading.Thread(target=work) for _ in range(threads)]
    t = time.perf_counter()
    for x in ts:
        x.start()
    for x in ts:
        x.join()
    rate = per * threads / (time.perf_counter() - t)
    storage.close()
    db.close()
    cleanup()
    return rate


kinds = ["sqlite"] + (["pg"] if DSN else [])
for kind in kinds:
    res = {False: [], True: []}
    for _ in range(3):
        for logged in (False, True):
            res[logged].append(run_serial(kind, logged))
    off, on = max(res[False]), max(res[True])
    every = f"{[round(x) for x in res[False]]} / {[round(x) for x in res[True]]}"
    print(
        f"{kind}: creates/s without log {off:,.0f}  with log {on:,.0f}  "
        f"ratio {on / off:.2f}  (best of 3, N={N}; all: {every})"
    )
if DSN:
    for threads in (4,):
        res = {False: [], True: []}
        for _ in range(3):
            for logged in (False, True):
                res[logged].append(run_concurrent(logged, threads))
        off, on = max(res[False]), max(res[True])
        print(
            f"pg {threads} connections, plain INSERT autocommit: without log {off:,.0f}/s  "
            f"with log {on:,.0f}/s  ratio {on / off:.2f}"
        )
