"""One way to reach ClickHouse: embedded chDB by default, a server over HTTP(S) in production.

Both go through clickhouse-connect, so every query and insert in meterflow runs
unchanged against either. chDB allows one data path per process, which is why
callers share the client this returns instead of opening their own.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from importlib import resources

import clickhouse_connect
from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

_MIGRATIONS_TABLE = "schema_migrations"
_STATEMENT_END = re.compile(r";\s*(?:\n|$)")


@cache
def connect(dsn: str, database: str) -> Client:
    """The process's client on `database`, created if missing, with every migration applied.

    Cached for the life of the process: a dropped chDB client is closed by the
    garbage collector on whichever thread runs it, and chDB can hang closing a
    connection while another thread (a Bytewax worker) queries through another.
    """
    client = clickhouse_connect.get_client(dsn=dsn)
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.database = database
    migrate(client)
    return client


def migrate(client: Client) -> list[str]:
    """Apply the SQL files in `sinks/migrations` not yet recorded; returns the names applied.

    Every statement is itself idempotent (IF NOT EXISTS), so a crash between a
    statement and its record only repeats harmless work on the next start. Files
    are append-only: a change to a table is a new file, never an edit of an old one.
    """
    client.command(
        f"CREATE TABLE IF NOT EXISTS {_MIGRATIONS_TABLE} "
        "(name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY name"
    )
    done = {
        row[0] for row in client.query(f"SELECT name FROM {_MIGRATIONS_TABLE} FINAL").result_rows
    }
    applied = []
    for name, sql in _migration_files():
        if name in done:
            continue
        for statement in _statements(sql):
            client.command(statement)
        client.insert(_MIGRATIONS_TABLE, [[name]], column_names=["name"])
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


def _migration_files() -> list[tuple[str, str]]:
    folder = resources.files("sinks") / "migrations"
    files = sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql"))
    return files


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in _STATEMENT_END.split("\n".join(lines)) if s.strip()]
