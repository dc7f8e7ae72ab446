"""PostgreSQL adapter: psycopg 3 async, one connection per gateway instance.

Several gateway instances share one database; everything they must agree on (stored
uplinks, downlink counters, command ids) is decided by the database in one statement.
A dropped connection is reopened at the next transaction; the failed batch is retried by
the caller, and its messages stay unacknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql as pgsql

from citisense_gateway.store.base import StoreError
from citisense_gateway.store.sql import Row, Rows, Step


def _paramstyle(statement: str) -> str:
    return statement.replace("?", "%s")


class PostgresTx:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self._conn.execute(_paramstyle(sql), params)
        return cur.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        async with self._conn.cursor() as cur:
            await cur.executemany(_paramstyle(sql), rows)
            return cur.rowcount

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = await self._conn.execute(_paramstyle(sql), params)
        return list(await cur.fetchall())


class PostgresDatabase:
    types = {"blob": "BYTEA", "real": "DOUBLE PRECISION", "serial": "BIGSERIAL PRIMARY KEY",
             "hour_of_at": "CAST(FLOOR(at / 3600) AS BIGINT) * 3600"}

    def __init__(self, conninfo: str, schema: str | None = None) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except psycopg.Error as err:
            raise StoreError(f"cannot connect to PostgreSQL ({err})".strip()) from err
        if self.schema:
            name = pgsql.Identifier(self.schema)
            await conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
            await conn.execute(pgsql.SQL("SET search_path TO {}").format(name))
        return conn

    async def open(self) -> None:
        self._conn = await self._connect()

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTx]:
        async with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = await self._connect()
            async with self._conn.transaction():
                yield PostgresTx(self._conn)

    async def write(self, steps: Sequence[Step]) -> list[int]:
        async with self.transaction() as tx:
            counts = []
            for step in steps:
                if isinstance(step, Rows):
                    counts.append(await tx.executemany(step.insert.single, step.rows))
                else:
                    counts.append(sum([await tx.execute(sql, params) for sql, params in step]))
            return counts

    def is_unique_violation(self, error: BaseException) -> bool:
        return isinstance(error, psycopg.errors.UniqueViolation)
