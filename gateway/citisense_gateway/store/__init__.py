"""Storage: one interface (base.Store), SQLite and PostgreSQL implementations."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from citisense_gateway.store.base import Store, StoreError
from citisense_gateway.store.sql import SqlStore


def open_store(url: str, *, quarantine_limit: int = 10_000, sqlite_synchronous: str = "FULL"
               ) -> Store:
    """A store for `url`: sqlite:///path/to/file.db or postgresql://user@host/db[?schema=x].

    Call `await store.open()` before use.
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from citisense_gateway.store.sqlite import SqliteDatabase

        path = url[len("sqlite://"):] if url.startswith("sqlite://") else url[len("sqlite:"):]
        if not path or path == "/":
            raise StoreError(f"store URL {url!r} names no file: use sqlite:///path/to/file.db")
        return SqlStore(SqliteDatabase(Path(path), sqlite_synchronous),
                        quarantine_limit=quarantine_limit)
    if scheme in ("postgresql", "postgres"):
        from citisense_gateway.store.postgres import PostgresDatabase

        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        schema = next((v for k, v in query if k == "schema"), None)
        rest = urlencode([(k, v) for k, v in query if k != "schema"])
        conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
        return SqlStore(PostgresDatabase(conninfo, schema), quarantine_limit=quarantine_limit)
    raise StoreError(
        f"unsupported store URL {url!r}: use sqlite:///path/to/file.db or "
        "postgresql://user@host:5432/database"
    )


__all__ = ["Store", "StoreError", "open_store"]
