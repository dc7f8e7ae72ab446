"""The Store interface in SQL, written once for SQLite and PostgreSQL.

Statements use `?` placeholders and the SQL both engines share (ON CONFLICT upserts,
RETURNING); a Database adapter runs them and supplies the few type names that differ.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from itertools import chain
from typing import Any, NamedTuple, Protocol

from citisense_gateway.store.base import (
    AuditEntry,
    Command,
    Conflict,
    HourlyRow,
    IngestBatch,
    Node,
    NotFound,
    QuarantineRow,
    ScheduleRecord,
    Twin,
    UplinkRow,
)

Row = tuple[Any, ...]


class RowInsert:
    """An INSERT of many rows: one statement per row, or a few multi-row VALUES statements.

    SQLite gets the multi-row form: its worker thread then takes the GIL back once per
    statement (executemany does it for every row, and each time may wait for the busy
    event loop thread to let go). A batch of a size seen before is one statement; other
    sizes are split into power-of-two blocks, so that few statements are ever prepared,
    each under SQLite's limit on parameters (32766). PostgreSQL gets the one-row statement
    to executemany, which psycopg pipelines.
    """

    EXACT = 8  # row counts given a statement of their own (full batches recur)

    def __init__(self, head: str, width: int, tail: str = "") -> None:
        self.head, self.tail = head, tail
        self.row = "(" + ", ".join(["?"] * width) + ")"
        self.largest = min(1024, 32766 // width)
        self.sizes = [1 << i for i in reversed(range(11)) if 1 << i <= self.largest]
        self._statements: dict[int, str] = {}

    def _statement(self, rows: int) -> str:
        statement = self._statements.get(rows)
        if statement is None:
            statement = f"{self.head} VALUES {', '.join([self.row] * rows)} {self.tail}".strip()
            self._statements[rows] = statement
        return statement

    @property
    def single(self) -> str:
        return self._statement(1)

    def blocks(self, rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[Any]]]:
        """(statement, its parameters) covering `rows` in order."""
        n = len(rows)
        if 0 < n <= self.largest and (n in self._statements or len(self._statements) <
                                       len(self.sizes) + self.EXACT):
            return [(self._statement(n), list(chain.from_iterable(rows)))]
        out = []
        done = 0
        for size in self.sizes:
            while n - done >= size:
                out.append((self._statement(size),
                            list(chain.from_iterable(rows[done : done + size]))))
                done += size
        return out


class Rows(NamedTuple):
    """A step of Database.write: many rows for one INSERT."""

    insert: RowInsert
    rows: Sequence[Sequence[Any]]


Step = Rows | list[tuple[str, Sequence[Any]]]  # or statements with their parameters


class Tx(Protocol):
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class Database(Protocol):
    types: dict[str, str]  # blob, real, serial

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...

    async def write(self, steps: Sequence[Step]) -> list[int]:
        """Run every step in one transaction, in one go (no await between statements on
        SQLite); the rows each step changed."""
        ...

    def is_unique_violation(self, error: BaseException) -> bool: ...


SCHEMA_VERSION = 2
# uplinks: keyed by the de-duplication key, the order a node's rows are read in; every other
# index there is paid by every stored message, under the write lock every ingest worker
# shares. A node's rows by time (API history, air aggregates) are found through
# uplink_hours instead: per node and hour of `at`, the lowest (boot, seq) stored with an `at`
# in that hour, written once per node and batch. A scan of the node's key range from the
# lowest of the hours at or after `since` meets every row with `at` >= since, and little
# else: a node's counters grow with its time. Rows deleted later leave their hour's mark,
# only a lower bound then, until retention forgets the hour (forget_hours).
SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
  node_id BIGINT PRIMARY KEY, role TEXT NOT NULL, mac_key {blob} NOT NULL,
  broker_hash TEXT NOT NULL, zone TEXT NOT NULL, street TEXT NOT NULL, lat {real}, lon {real},
  label TEXT NOT NULL, created_at {real} NOT NULL, downlink_counter BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS nodes_zone ON nodes (zone);
CREATE INDEX IF NOT EXISTS nodes_street ON nodes (street);
CREATE TABLE IF NOT EXISTS uplinks (
  node_id BIGINT NOT NULL, boot BIGINT NOT NULL, seq BIGINT NOT NULL, kind INTEGER NOT NULL,
  ts BIGINT NOT NULL, tq INTEGER NOT NULL, at {real} NOT NULL, received_at {real} NOT NULL,
  data TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (node_id, boot, seq));
CREATE INDEX IF NOT EXISTS uplinks_kind_at ON uplinks (kind, at);
CREATE TABLE IF NOT EXISTS uplink_hours (
  node_id BIGINT NOT NULL, hour BIGINT NOT NULL, boot BIGINT NOT NULL, seq BIGINT NOT NULL,
  PRIMARY KEY (node_id, hour));
CREATE TABLE IF NOT EXISTS quarantine (
  id {serial}, received_at {real} NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL,
  detail TEXT NOT NULL, node_id BIGINT, payload {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS twins (
  node_id BIGINT PRIMARY KEY, last_seen {real}, via TEXT, online INTEGER, boot BIGINT,
  birth_seq BIGINT, firmware TEXT, board TEXT, config_hash TEXT, reset_cause INTEGER,
  reported_schedule BIGINT, desired_schedule TEXT, desired_version BIGINT, health TEXT,
  bay_state INTEGER, indicator INTEGER, reserved_until {real}, desired_config TEXT,
  confirmed_config TEXT);
CREATE TABLE IF NOT EXISTS commands (
  command_id {serial}, node_id BIGINT NOT NULL, opcode INTEGER NOT NULL, args TEXT NOT NULL,
  state TEXT NOT NULL, created_at {real} NOT NULL, created_by TEXT NOT NULL,
  expires_at {real} NOT NULL, attempts INTEGER NOT NULL, next_attempt {real} NOT NULL,
  sent_at {real}, done_at {real}, result INTEGER, note TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS commands_due ON commands (state, next_attempt);
CREATE INDEX IF NOT EXISTS commands_node ON commands (node_id, command_id);
CREATE TABLE IF NOT EXISTS schedules (
  name TEXT NOT NULL, version BIGINT NOT NULL, body TEXT NOT NULL, created_at {real} NOT NULL,
  created_by TEXT NOT NULL, PRIMARY KEY (name, version));
CREATE UNIQUE INDEX IF NOT EXISTS schedules_version ON schedules (version);
CREATE TABLE IF NOT EXISTS audit (
  id {serial}, at {real} NOT NULL, user_name TEXT NOT NULL, action TEXT NOT NULL,
  target TEXT NOT NULL, details TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS occupancy (
  zone TEXT NOT NULL, at {real} NOT NULL, free INTEGER NOT NULL, occupied INTEGER NOT NULL,
  unknown INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS occupancy_zone ON occupancy (zone, at);
CREATE TABLE IF NOT EXISTS telemetry_hourly (
  node_id BIGINT NOT NULL, hour BIGINT NOT NULL, samples INTEGER NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (node_id, hour));
"""

# From version 1: its two indexes of uplinks (node, kind, at) and (kind, received_at) give
# way to uplinks_kind_at and uplink_hours (created by SCHEMA), whose marks come from the rows.
MIGRATE_1_TO_2 = """
DROP INDEX IF EXISTS uplinks_node_kind;
DROP INDEX IF EXISTS uplinks_kind_time;
INSERT INTO uplink_hours (node_id, hour, boot, seq)
  SELECT node_id, hour, boot, seq FROM (
    SELECT node_id, boot, seq, {hour_of_at} AS hour, ROW_NUMBER() OVER (
      PARTITION BY node_id, {hour_of_at} ORDER BY boot, seq) AS n FROM uplinks) AS marks
  WHERE n = 1
  ON CONFLICT (node_id, hour) DO NOTHING;
UPDATE schema_version SET version = 2
"""

NODE_COLUMNS = "node_id, role, mac_key, broker_hash, zone, street, lat, lon, label, created_at"
UPLINK_COLUMNS = "node_id, boot, seq, kind, ts, tq, at, received_at, data, source"
TWIN_COLUMNS = (
    "node_id, last_seen, via, online, boot, birth_seq, firmware, board, config_hash, "
    "reset_cause, reported_schedule, desired_schedule, desired_version, health, bay_state, "
    "indicator, reserved_until, desired_config, confirmed_config"
)
COMMAND_COLUMNS = (
    "command_id, node_id, opcode, args, state, created_at, created_by, expires_at, attempts, "
    "next_attempt, sent_at, done_at, result, note"
)
OPEN_STATES = ("pending", "sent")

INSERT_UPLINKS = RowInsert(f"INSERT INTO uplinks ({UPLINK_COLUMNS})", 10,
                           "ON CONFLICT (node_id, boot, seq) DO NOTHING")
INSERT_QUARANTINE = RowInsert(
    "INSERT INTO quarantine (received_at, source, reason, detail, node_id, payload)", 6)
MARK_HOURS = RowInsert("INSERT INTO uplink_hours (node_id, hour, boot, seq)", 4, """
ON CONFLICT (node_id, hour) DO UPDATE SET boot = excluded.boot, seq = excluded.seq
WHERE (excluded.boot, excluded.seq) < (uplink_hours.boot, uplink_hours.seq)""")
# Bounded: hostile traffic must not fill the disk.
TRIM_QUARANTINE = "DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?"
# Fields a batch did not learn arrive as NULL and keep their stored value. A batch has one
# update per node: a multi-row upsert may touch each row once only (PostgreSQL).
UPSERT_TWINS = RowInsert("""
INSERT INTO twins (node_id, last_seen, via, online, boot, birth_seq, firmware, board,
  config_hash, reset_cause, reported_schedule, health, bay_state, indicator)""", 14, """
ON CONFLICT (node_id) DO UPDATE SET
  last_seen = CASE WHEN twins.last_seen IS NULL OR excluded.last_seen > twins.last_seen
                   THEN excluded.last_seen ELSE twins.last_seen END,
  via = excluded.via,
  online = COALESCE(excluded.online, twins.online),
  boot = COALESCE(excluded.boot, twins.boot),
  birth_seq = COALESCE(excluded.birth_seq, twins.birth_seq),
  firmware = COALESCE(excluded.firmware, twins.firmware),
  board = COALESCE(excluded.board, twins.board),
  config_hash = COALESCE(excluded.config_hash, twins.config_hash),
  reset_cause = COALESCE(excluded.reset_cause, twins.reset_cause),
  reported_schedule = COALESCE(excluded.reported_schedule, twins.reported_schedule),
  health = COALESCE(excluded.health, twins.health),
  bay_state = COALESCE(excluded.bay_state, twins.bay_state),
  indicator = COALESCE(excluded.indicator, twins.indicator)
""")
# The twin update of a batch that only saw a node alive (telemetry, nearly all traffic): the
# same upsert for its three fields, four times cheaper on SQLite than the whole one above.
TOUCH_TWINS = RowInsert("INSERT INTO twins (node_id, last_seen, via, online)", 4, """
ON CONFLICT (node_id) DO UPDATE SET
  last_seen = CASE WHEN twins.last_seen IS NULL OR excluded.last_seen > twins.last_seen
                   THEN excluded.last_seen ELSE twins.last_seen END,
  via = excluded.via,
  online = COALESCE(excluded.online, twins.online)
""")
_UNLEARNED = (None,) * 10  # a TwinUpdate's fields after online, none learned
ACK_COMMAND = (
    "UPDATE commands SET state = ?, result = ?, done_at = ?, next_attempt = ? "
    "WHERE command_id = ? AND node_id = ? AND state IN ('pending', 'sent')"
)


def _node(row: Row) -> Node:
    return Node(
        node_id=int(row[0]), role=row[1], mac_key=bytes(row[2]), broker_hash=row[3],
        zone=row[4], street=row[5], lat=row[6], lon=row[7], label=row[8],
        created_at=float(row[9]),
    )


def _uplink(row: Row) -> UplinkRow:
    return UplinkRow(
        node_id=int(row[0]), boot=int(row[1]), seq=int(row[2]), kind=int(row[3]), ts=int(row[4]),
        tq=int(row[5]), at=float(row[6]), received_at=float(row[7]), data=row[8], source=row[9],
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _twin(row: Row) -> Twin:
    return Twin(
        node_id=int(row[0]), last_seen=row[1], via=row[2] or "", online=bool(row[3]),
        boot=_opt_int(row[4]), birth_seq=_opt_int(row[5]), firmware=row[6] or "",
        board=row[7] or "", config_hash=row[8] or "", reset_cause=_opt_int(row[9]),
        reported_schedule=_opt_int(row[10]), desired_schedule=row[11],
        desired_version=_opt_int(row[12]), health=row[13] or "{}", bay_state=_opt_int(row[14]),
        indicator=_opt_int(row[15]), reserved_until=row[16], desired_config=row[17],
        confirmed_config=row[18],
    )


def _command(row: Row) -> Command:
    return Command(
        command_id=int(row[0]), node_id=int(row[1]), opcode=int(row[2]), args=row[3],
        state=row[4], created_at=float(row[5]), created_by=row[6], expires_at=float(row[7]),
        attempts=int(row[8]), next_attempt=float(row[9]), sent_at=row[10], done_at=row[11],
        result=_opt_int(row[12]), note=row[13],
    )


def _opt_bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


class SqlStore:
    """Store over a Database adapter (see sqlite.py and postgres.py)."""

    def __init__(self, db: Database, *, quarantine_limit: int = 10_000) -> None:
        self.db = db
        self.quarantine_limit = quarantine_limit

    async def open(self) -> None:
        await self.db.open()
        async with self.db.transaction() as tx:
            for statement in SCHEMA.format(**self.db.types).split(";"):
                if statement.strip():
                    await tx.execute(statement)
            rows = await tx.fetchall("SELECT version FROM schema_version")
            if not rows:
                await tx.execute("INSERT INTO schema_version (version) VALUES (?)",
                                 (SCHEMA_VERSION,))
            elif int(rows[0][0]) == 1:
                for statement in MIGRATE_1_TO_2.format(**self.db.types).split(";"):
                    if statement.strip():
                        await tx.execute(statement)
            elif int(rows[0][0]) != SCHEMA_VERSION:
                raise Conflict(
                    f"database schema version {rows[0][0]}, this gateway needs {SCHEMA_VERSION}"
                )

    async def close(self) -> None:
        await self.db.close()

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self.db.transaction() as tx:
            return await tx.fetchall(sql, params)

    # -- registry -------------------------------------------------------------------------
    async def add_node(self, node: Node, user: str) -> None:
        try:
            async with self.db.transaction() as tx:
                await tx.execute(
                    f"INSERT INTO nodes ({NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (node.node_id, node.role, node.mac_key, node.broker_hash, node.zone,
                     node.street, node.lat, node.lon, node.label, node.created_at),
                )
                await tx.execute(
                    "INSERT INTO twins (node_id, online) VALUES (?, 0) "
                    "ON CONFLICT (node_id) DO NOTHING", (node.node_id,),
                )
                await self._audit(tx, user, "node.add", str(node.node_id),
                                  {"role": node.role, "zone": node.zone, "street": node.street},
                                  node.created_at)
        except Exception as err:
            if self.db.is_unique_violation(err):
                raise Conflict(f"node {node.node_id} is already registered") from err
            raise

    async def get_node(self, node_id: int) -> Node:
        rows = await self._all(f"SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = ?", (node_id,))
        if not rows:
            raise NotFound(f"node {node_id} is not registered")
        return _node(rows[0])

    async def nodes(
        self, *, zone: str | None = None, street: str | None = None, role: str | None = None
    ) -> list[Node]:
        where, params = [], []
        for column, value in (("zone", zone), ("street", street), ("role", role)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._all(
            f"SELECT {NODE_COLUMNS} FROM nodes{clause} ORDER BY node_id", params
        )
        return [_node(row) for row in rows]

    async def remove_node(self, node_id: int, user: str) -> None:
        async with self.db.transaction() as tx:
            if not await tx.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)):
                raise NotFound(f"node {node_id} is not registered")
            await tx.execute("DELETE FROM twins WHERE node_id = ?", (node_id,))
            await self._audit(tx, user, "node.remove", str(node_id), {}, None)

    # -- ingest -----------------------------------------------------------------------------
    async def commit_ingest(self, batch: IngestBatch) -> int:
        # One write: on SQLite one trip to the worker thread, so a commit never waits for
        # the event loop between its statements.
        steps: list[Step] = [Rows(INSERT_UPLINKS, batch.uplinks)]
        marks: dict[tuple[int, float], UplinkRow] = {}
        get = marks.get
        for r in batch.uplinks:  # the batch's row of lowest (boot, seq) per node and hour
            hour = (r[0], r[6] // 3600)  # node_id, at
            mark = get(hour)
            if mark is None or r[1] < mark[1] or (r[1] == mark[1] and r[2] < mark[2]):
                marks[hour] = r
        steps.append(Rows(MARK_HOURS, [(node, int(hour) * 3600, r[1], r[2])
                                       for (node, hour), r in marks.items()]))
        if batch.quarantine:
            steps.append(Rows(INSERT_QUARANTINE, [
                (q.received_at, q.source, q.reason, q.detail, q.node_id, q.payload)
                for q in batch.quarantine
            ]))
            steps.append([(TRIM_QUARANTINE, (self.quarantine_limit,))])
        touched: list[tuple[Any, ...]] = []
        learned: list[tuple[Any, ...]] = []
        for t in batch.twins.values():
            fields = (t.boot, t.birth_seq, t.firmware, t.board, t.config_hash, t.reset_cause,
                      t.schedule_version, t.health, t.bay_state, t.indicator)
            if fields == _UNLEARNED:
                touched.append((t.node_id, t.last_seen, t.via, _opt_bool(t.online)))
            else:
                learned.append((t.node_id, t.last_seen, t.via, _opt_bool(t.online), *fields))
        steps.append(Rows(TOUCH_TWINS, touched))
        steps.append(Rows(UPSERT_TWINS, learned))
        steps.append([
            (ACK_COMMAND, (ack.state, ack.result, None if ack.state == "sent" else ack.at,
                           ack.next_attempt, ack.command_id, ack.node_id))
            for ack in batch.acks
        ])
        return (await self.db.write(steps))[0]

    async def recent_counters(self, node_id: int, limit: int) -> list[tuple[int, int]]:
        rows = await self._all(
            "SELECT boot, seq FROM uplinks WHERE node_id = ? ORDER BY boot DESC, seq DESC LIMIT ?",
            (node_id, limit),
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    async def is_stored(self, node_id: int, boot: int, seq: int) -> bool:
        rows = await self._all(
            "SELECT 1 FROM uplinks WHERE node_id = ? AND boot = ? AND seq = ?",
            (node_id, boot, seq),
        )
        return bool(rows)

    async def uptime_reference(self, node_id: int, boot: int) -> tuple[int, float] | None:
        rows = await self._all(
            "SELECT ts, received_at FROM uplinks WHERE node_id = ? AND boot = ? AND tq = 0 "
            "ORDER BY seq DESC LIMIT 1", (node_id, boot),
        )
        return (int(rows[0][0]), float(rows[0][1])) if rows else None

    async def uplinks(
        self, node_id: int, *, kind: int | None = None, since: float = 0.0, limit: int = 1000
    ) -> list[UplinkRow]:
        kind_clause = " AND kind = ?" if kind is not None else ""
        params: list[Any] = [node_id, node_id, since // 3600 * 3600, since]
        if kind is not None:
            params.append(kind)
        params.append(limit)
        rows = await self._all(
            f"SELECT {UPLINK_COLUMNS} FROM uplinks WHERE node_id = ? AND (boot, seq) >= ("
            "SELECT boot, seq FROM uplink_hours WHERE node_id = ? AND hour >= ? "
            f"ORDER BY boot, seq LIMIT 1) AND at >= ?{kind_clause} ORDER BY boot, seq LIMIT ?",
            params,
        )
        return [_uplink(row) for row in rows]

    async def count_uplinks(self) -> int:
        return int((await self._all("SELECT COUNT(*) FROM uplinks"))[0][0])

    async def quarantined(self, limit: int = 100) -> list[QuarantineRow]:
        rows = await self._all(
            "SELECT received_at, source, reason, detail, node_id, payload FROM quarantine "
            "ORDER BY id DESC LIMIT ?", (limit,),
        )
        return [QuarantineRow(float(r[0]), r[1], r[2], r[3], _opt_int(r[4]), bytes(r[5]))
                for r in rows]

    async def count_quarantined(self) -> int:
        return int((await self._all("SELECT COUNT(*) FROM quarantine"))[0][0])

    # -- twin -------------------------------------------------------------------------------
    async def twin(self, node_id: int) -> Twin:
        rows = await self._all(f"SELECT {TWIN_COLUMNS} FROM twins WHERE node_id = ?", (node_id,))
        if not rows:
            raise NotFound(f"node {node_id} is not registered")
        return _twin(rows[0])

    async def twins(self) -> list[Twin]:
        rows = await self._all(f"SELECT {TWIN_COLUMNS} FROM twins ORDER BY node_id")
        return [_twin(row) for row in rows]

    async def set_desired_schedule(self, node_ids: list[int], name: str, version: int) -> None:
        async with self.db.transaction() as tx:
            await tx.executemany(
                "UPDATE twins SET desired_schedule = ?, desired_version = ? WHERE node_id = ?",
                [(name, version, node_id) for node_id in node_ids],
            )

    async def set_reservation(self, node_id: int, until: float | None) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE twins SET reserved_until = ? WHERE node_id = ?",
                             (until, node_id))

    # -- commands ---------------------------------------------------------------------------
    async def next_counter(self, node_id: int) -> int:
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "UPDATE nodes SET downlink_counter = downlink_counter + 1 WHERE node_id = ? "
                "RETURNING downlink_counter", (node_id,),
            )
        if not rows:
            raise NotFound(f"node {node_id} is not registered")
        return int(rows[0][0])

    async def add_command(
        self, node_id: int, opcode: int, args: str, *, created_by: str, expires_at: float,
        note: str, now: float,
    ) -> Command:
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "INSERT INTO commands (node_id, opcode, args, state, created_at, created_by, "
                "expires_at, attempts, next_attempt, note) "
                "VALUES (?, ?, ?, 'pending', ?, ?, ?, 0, ?, ?) "
                f"RETURNING {COMMAND_COLUMNS}",
                (node_id, opcode, args, now, created_by, expires_at, now, note),
            )
            command = _command(rows[0])
            await self._audit(tx, created_by, "command.issue", str(node_id),
                              {"command": command.command_id, "opcode": opcode,
                               "args": json.loads(args), "note": note}, now)
        return command

    async def get_command(self, command_id: int) -> Command:
        rows = await self._all(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE command_id = ?", (command_id,)
        )
        if not rows:
            raise NotFound(f"command {command_id} does not exist")
        return _command(rows[0])

    async def find_open_command(self, node_id: int, opcode: int, args: str) -> Command | None:
        rows = await self._all(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE node_id = ? AND opcode = ? "
            "AND args = ? AND state IN ('pending', 'sent') ORDER BY command_id DESC LIMIT 1",
            (node_id, opcode, args),
        )
        return _command(rows[0]) if rows else None

    async def due_commands(self, now: float, limit: int = 100) -> list[Command]:
        rows = await self._all(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE state IN ('pending', 'sent') "
            "AND (next_attempt <= ? OR expires_at <= ?) ORDER BY next_attempt LIMIT ?",
            (now, now, limit),
        )
        return [_command(row) for row in rows]

    async def commands(self, node_id: int | None = None, limit: int = 100) -> list[Command]:
        where = " WHERE node_id = ?" if node_id is not None else ""
        params: list[Any] = [node_id] if node_id is not None else []
        rows = await self._all(
            f"SELECT {COMMAND_COLUMNS} FROM commands{where} ORDER BY command_id DESC LIMIT ?",
            [*params, limit],
        )
        return [_command(row) for row in rows]

    async def claim_send(self, command_id: int, attempts: int, now: float,
                         next_attempt: float) -> bool:
        async with self.db.transaction() as tx:
            claimed = await tx.execute(
                "UPDATE commands SET state = 'sent', attempts = attempts + 1, "
                "sent_at = COALESCE(sent_at, ?), next_attempt = ? "
                "WHERE command_id = ? AND attempts = ? AND state IN ('pending', 'sent')",
                (now, next_attempt, command_id, attempts),
            )
        return claimed == 1

    async def set_reported_schedule(self, node_id: int, version: int) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE twins SET reported_schedule = ? WHERE node_id = ?",
                             (version, node_id))

    async def set_desired_config(self, node_ids: list[int], settings: str) -> None:
        async with self.db.transaction() as tx:
            await tx.executemany(
                "UPDATE twins SET desired_config = ?, confirmed_config = NULL WHERE node_id = ?",
                [(settings, node_id) for node_id in node_ids],
            )

    async def confirm_config(self, node_id: int, config_hash: str | None) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE twins SET confirmed_config = ? WHERE node_id = ?",
                             (config_hash, node_id))

    async def finish_command(self, command_id: int, state: str, at: float,
                             result: int | None = None) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE commands SET state = ?, done_at = ?, result = COALESCE(?, result) "
                "WHERE command_id = ? AND state IN ('pending', 'sent')",
                (state, at, result, command_id),
            )

    # -- schedules --------------------------------------------------------------------------
    async def add_schedule(self, record: ScheduleRecord) -> None:
        try:
            async with self.db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO schedules (name, version, body, created_at, created_by) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (record.name, record.version, record.body, record.created_at,
                     record.created_by),
                )
                await self._audit(tx, record.created_by, "schedule.add", record.name,
                                  {"version": record.version, "body": json.loads(record.body)},
                                  record.created_at)
        except Exception as err:
            if self.db.is_unique_violation(err):
                raise Conflict(
                    f"schedule {record.name!r} version {record.version} already exists"
                ) from err
            raise

    async def get_schedule(self, name: str, version: int | None = None) -> ScheduleRecord:
        if version is None:
            rows = await self._all(
                "SELECT name, version, body, created_at, created_by FROM schedules "
                "WHERE name = ? ORDER BY version DESC LIMIT 1", (name,),
            )
        else:
            rows = await self._all(
                "SELECT name, version, body, created_at, created_by FROM schedules "
                "WHERE name = ? AND version = ?", (name, version),
            )
        if not rows:
            which = f" version {version}" if version is not None else ""
            raise NotFound(f"schedule {name!r}{which} does not exist")
        r = rows[0]
        return ScheduleRecord(r[0], int(r[1]), r[2], float(r[3]), r[4])

    async def next_schedule_version(self) -> int:
        rows = await self._all("SELECT MAX(version) FROM schedules")
        return int(rows[0][0] or 0) + 1

    async def schedules(self) -> list[ScheduleRecord]:
        rows = await self._all(
            "SELECT name, version, body, created_at, created_by FROM schedules "
            "ORDER BY name, version"
        )
        return [ScheduleRecord(r[0], int(r[1]), r[2], float(r[3]), r[4]) for r in rows]

    # -- audit ------------------------------------------------------------------------------
    async def _audit(self, tx: Tx, user: str, action: str, target: str,
                     details: dict[str, Any], at: float | None) -> None:
        await tx.execute(
            "INSERT INTO audit (at, user_name, action, target, details) VALUES (?, ?, ?, ?, ?)",
            (time.time() if at is None else at, user, action, target,
             json.dumps(details, sort_keys=True)),
        )

    async def audit(self, user: str, action: str, target: str, details: dict[str, Any]) -> None:
        async with self.db.transaction() as tx:
            await self._audit(tx, user, action, target, details, None)

    async def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        rows = await self._all(
            "SELECT at, user_name, action, target, details FROM audit ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [AuditEntry(float(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    # -- parking ----------------------------------------------------------------------------
    async def record_occupancy(self, zone: str, at: float, free: int, occupied: int,
                               unknown: int) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO occupancy (zone, at, free, occupied, unknown) VALUES (?, ?, ?, ?, ?)",
                (zone, at, free, occupied, unknown),
            )

    async def occupancy_history(self, zone: str, since: float) -> list[tuple[float, int, int, int]]:
        rows = await self._all(
            "SELECT at, free, occupied, unknown FROM occupancy WHERE zone = ? AND at >= ? "
            "ORDER BY at", (zone, since),
        )
        return [(float(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]

    # -- retention --------------------------------------------------------------------------
    async def downsample(self, rows: list[HourlyRow],
                         summarised: list[tuple[int, int, int]]) -> int:
        async with self.db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO telemetry_hourly (node_id, hour, samples, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (node_id, hour) DO UPDATE SET samples = excluded.samples, "
                "data = excluded.data",
                [(r.node_id, r.hour, r.samples, r.data) for r in rows],
            )
            return await tx.executemany(
                "DELETE FROM uplinks WHERE node_id = ? AND boot = ? AND seq = ?", summarised)

    async def telemetry_before(self, before: float, limit: int) -> list[UplinkRow]:
        rows = await self._all(
            f"SELECT {UPLINK_COLUMNS} FROM uplinks WHERE kind = 2 AND at < ? "
            "ORDER BY node_id, at LIMIT ?", (before, limit),
        )
        return [_uplink(row) for row in rows]

    async def purge_hourly(self, before: float) -> int:
        async with self.db.transaction() as tx:
            return await tx.execute("DELETE FROM telemetry_hourly WHERE hour < ?", (before,))

    async def hourly(self, node_id: int, since: float) -> list[HourlyRow]:
        rows = await self._all(
            "SELECT node_id, hour, samples, data FROM telemetry_hourly WHERE node_id = ? "
            "AND hour >= ? ORDER BY hour", (node_id, since),
        )
        return [HourlyRow(int(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows]

    async def purge(self, kinds: list[int], before: float) -> int:
        async with self.db.transaction() as tx:
            return await tx.executemany(
                "DELETE FROM uplinks WHERE kind = ? AND at < ?",
                [(kind, before) for kind in kinds],
            )

    async def forget_hours(self, before: float) -> int:
        async with self.db.transaction() as tx:
            return await tx.execute("DELETE FROM uplink_hours WHERE hour < ?", (before,))
