"""PeeweeStorage.execute next to the raw sqlite3 module, on the same file and the same SQL.

Run: ``python benchmarks/bench_storage.py`` (about 15 s). Two workloads:

* read by id: ``ReadOne`` of every column of one row, by primary key;
* filtered list: ``ReadList`` with two filters (``age = ?`` and ``status = ?``, about 55
  matching rows), sorted by ``name``, limit 20, which also needs the ``COUNT(*)`` for
  ``total``.

The raw side runs the SQL the adapter generated (taken from its cache) through
``sqlite3.Connection.execute`` and builds the same dicts, so the ratio is the adapter's
own overhead: operation dispatch, the SQL cache look-up, parameter conversion and row
conversion. The target is a ratio of at least 0.5 (docs/storage.md). A last line shows the raw
side without building dicts at all (tuples only), the cheapest possible baseline.
"""

from __future__ import annotations

import datetime
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee
from wsspec.storage.peewee import PeeweeStorage

from wsspec_core import (
    NO_FILTERS,
    EntityRegistry,
    FilterSpec,
    Limits,
    QueryOptions,
    ReadOne,
    Selection,
    SortSpec,
    compile_read,
)

ROWS = 10_000
SECONDS = 2.0


def rate(fn: Callable[[int], Any]) -> float:
    """Operations per second of ``fn(i)``, best of three rounds of ~SECONDS/3."""
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        deadline = start + SECONDS / 3
        while True:
            for _ in range(200):
                fn(n)
                n += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def main() -> None:
    directory = Path(tempfile.mkdtemp(prefix="wsspec-bench-"))
    path = directory / "bench.db"
    db = peewee.SqliteDatabase(str(path))

    class User(peewee.Model):
        name = peewee.CharField()
        email = peewee.CharField(null=True)
        age = peewee.IntegerField(null=True, index=True)
        status = peewee.CharField(default="active")
        active = peewee.BooleanField(default=True)
        seen = peewee.DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "users"

    db.create_tables([User])
    rng = random.Random(7)
    with db.atomic():
        User.insert_many(
            [
                {
                    "name": f"user{i:05d}",
                    "email": f"u{i}@example.com",
                    "age": rng.randint(18, 80),
                    "status": rng.choice(["active", "away", "banned"]),
                    "active": rng.random() < 0.5,
                    "seen": datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=i),
                }
                for i in range(ROWS)
            ]
        ).execute()

    storage = PeeweeStorage(db)
    users = storage.register("public.users", User)
    registry = EntityRegistry(storage.entities())
    everything = Selection(columns=tuple(c.name for c in users.columns))
    by_id = [
        ReadOne(entity=users, key=k, filters=NO_FILTERS, selection=everything)
        for k in range(1, ROWS + 1)
    ]
    listing = compile_read(
        users,
        QueryOptions(
            filters=(
                FilterSpec(column="age", operator="eq", value=30),
                FilterSpec(column="status", operator="eq", value="active"),
            ),
            sort=(SortSpec(column="name"),),
            limit=20,
        ),
        registry,
        Limits(),
    )
    storage.execute(by_id[0])
    storage.execute(listing)
    # The statements the adapter runs, from its SQL compiler (the same cached objects).
    one_sql, _ = storage._compiler.read_one(by_id[0])
    list_sql, _ = storage._compiler.read_list(listing)
    count_sql = list_sql.count
    assert count_sql is not None

    raw = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    names = one_sql.names
    seen_at = names.index("seen")
    active_at = names.index("active")

    def raw_row(values: tuple[Any, ...]) -> dict[str, Any]:
        row = dict(zip(names, values, strict=True))
        if values[seen_at] is not None:
            row["seen"] = datetime.datetime.fromisoformat(values[seen_at])
        row["active"] = bool(values[active_at])
        return row

    def raw_one(i: int) -> Any:
        found = raw.execute(one_sql.sql, (1 + i % ROWS,)).fetchone()
        return raw_row(found)

    def raw_list(i: int) -> Any:
        params = (30, "active")
        rows = [raw_row(r) for r in raw.execute(list_sql.sql, (*params, 20, 0)).fetchall()]
        total = raw.execute(count_sql.sql, params).fetchone()[0]
        return rows, total

    def raw_one_tuples(i: int) -> Any:
        return raw.execute(one_sql.sql, (1 + i % ROWS,)).fetchone()

    assert raw_one(0) == storage.execute(by_id[0])
    expected = storage.execute(listing)
    assert raw_list(0) == (expected.rows, expected.total)

    results = [
        ("read by id", rate(lambda i: storage.execute(by_id[i % ROWS])), rate(raw_one)),
        (
            "filtered list (2 filters, limit 20)",
            rate(lambda i: storage.execute(listing)),
            rate(raw_list),
        ),
    ]
    print(f"SQLite {sqlite3.sqlite_version}, {ROWS} rows, file {path}")
    print(f"{'workload':<38}{'adapter ops/s':>15}{'raw sqlite3 ops/s':>19}{'ratio':>8}")
    for label, adapter, baseline in results:
        print(f"{label:<38}{adapter:>15,.0f}{baseline:>19,.0f}{adapter / baseline:>8.2f}")
    adapter_one, tuples_one = results[0][1], rate(raw_one_tuples)
    print(
        f"{'read by id vs raw tuples (no dicts)':<38}{adapter_one:>15,.0f}{tuples_one:>19,.0f}"
        f"{adapter_one / tuples_one:>8.2f}"
    )
    print("target: ratio >= 0.50")
    print(f"SQL (read by id): {one_sql.sql}")
    print(f"SQL (list):       {list_sql.sql}")
    raw.close()
    db.close()


if __name__ == "__main__":
    main()
