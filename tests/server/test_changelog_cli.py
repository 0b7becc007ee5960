"""``wsspec changelog install|status|uninstall``, as a user runs it: a real subprocess on
the demo app (``wsspec.demo:build_app``), on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path

import psycopg
import pytest

WSSPEC = str(Path(sys.executable).with_name("wsspec"))
APP = "wsspec.demo:build_app"


def wsspec(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WSSPEC, "changelog", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def status_lines(cwd: Path, db: str) -> dict[str, str]:
    done = wsspec(cwd, "status", "--db", db)
    assert done.returncode == 0, done.stderr
    return dict(line.split(": ", 1) for line in done.stdout.splitlines())


def check_install_status_uninstall(cwd: Path, db: str, outside_insert: object) -> None:
    installed = wsspec(cwd, "install", APP, "--db", db)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.startswith("change log installed: epoch ")
    assert "logging users, posts" in installed.stdout
    epoch = installed.stdout.split()[4].rstrip(";")
    again = wsspec(cwd, "install", APP, "--db", db)
    assert again.returncode == 0 and epoch in again.stdout  # idempotent: same epoch
    assert status_lines(cwd, db) == {
        "epoch": epoch,
        "version": "1",
        "oldest seq": "-",
        "last seq": "0",
        "trimmed through": "0",
        "entries": "0",
        "tables": "posts, users",
    }
    outside_insert()  # plain SQL from another program
    shown = status_lines(cwd, db)
    assert shown["entries"] == "2" and shown["oldest seq"] == "1" and shown["last seq"] == "2"
    removed = wsspec(cwd, "uninstall", "--db", db)
    assert removed.returncode == 0 and removed.stdout == "change log removed\n"
    gone = wsspec(cwd, "status", "--db", db)
    assert gone.returncode == 1 and gone.stdout == "change log: not installed\n"
    fresh = wsspec(cwd, "install", APP, "--db", db)
    assert fresh.returncode == 0 and epoch not in fresh.stdout  # a reset: a new epoch


def test_changelog_command_on_a_sqlite_file(tmp_path: Path) -> None:
    def insert() -> None:
        with sqlite3.connect(tmp_path / "app.db") as conn:
            conn.execute("INSERT INTO users (name, email, status) VALUES ('a', 'a@x', 'on')")
            conn.execute("UPDATE users SET status = 'off'")
        conn.close()

    check_install_status_uninstall(tmp_path, "sqlite:///app.db", insert)


@pytest.mark.postgres
def test_changelog_command_on_postgresql(tmp_path: Path) -> None:
    dsn = os.environ.get("WSSPEC_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("WSSPEC_TEST_POSTGRES_DSN is not set")
    schema = f"wsspec_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is unreachable: {type(exc).__name__}")
    admin.execute(f'CREATE SCHEMA "{schema}"')
    options = urllib.parse.quote(f"-c search_path={schema}", safe="")
    db = f"{dsn}{'&' if '?' in dsn else '?'}options={options}"

    def insert() -> None:
        with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as c:
            c.execute("INSERT INTO users (name, email, status) VALUES ('a', 'a@x', 'on')")
            c.execute("UPDATE users SET status = 'off'")

    try:
        check_install_status_uninstall(tmp_path, db, insert)
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def test_changelog_install_needs_the_app(tmp_path: Path) -> None:
    done = wsspec(tmp_path, "install", "--db", "sqlite:///app.db")
    assert done.returncode != 0 and "MODULE:ATTR" in done.stderr
