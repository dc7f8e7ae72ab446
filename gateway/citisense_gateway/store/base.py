"""The one storage interface of the gateway, and the records that cross it.

Two implementations: SQLite (embedded default, stdlib sqlite3 in a worker thread, WAL)
and PostgreSQL (psycopg 3 async, production, shared by several gateway instances).
Every write that an acknowledgement depends on is one transaction (commit_ingest).
Times are Unix seconds (float); JSON columns hold decoded message data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol


class StoreError(Exception):
    """A storage failure worth telling the operator about (bad URL, unreachable server)."""


class NotFound(StoreError):
    """The named node, schedule or command does not exist."""


class Conflict(StoreError):
    """The write clashes with existing data (duplicate node id, schedule version)."""


@dataclass(frozen=True, slots=True)
class Node:
    node_id: int
    role: str  # lighting | parking | air
    mac_key: bytes
    broker_hash: str  # mosquitto PBKDF2-SHA512 hash of the node's broker password
    zone: str = ""
    street: str = ""
    lat: float | None = None
    lon: float | None = None
    label: str = ""  # what the public sees: "bay 12, Marktplein", "lamp 4, Kerkstraat"
    created_at: float = 0.0


class UplinkRow(NamedTuple):
    """One stored uplink message; (node_id, boot, seq) is unique (a tuple: one per message)."""

    node_id: int
    boot: int
    seq: int
    kind: int
    ts: int
    tq: int
    at: float  # Unix time of the measurement: ts if the node had real time, else received_at
    received_at: float
    data: str  # JSON of the kind-specific data
    source: str  # "mqtt" or "serial:<port>"


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    received_at: float
    source: str
    reason: str  # unknown-node | bad-mac | malformed | invalid | replay | topic | oversize
    detail: str
    node_id: int | None
    payload: bytes  # truncated


@dataclass(slots=True)
class TwinUpdate:
    """What one batch of uplinks teaches about a node (None: unchanged)."""

    node_id: int
    last_seen: float
    via: str
    online: bool | None = None  # birth/any uplink: True; accepted will: False
    boot: int | None = None
    birth_seq: int | None = None
    firmware: str | None = None
    board: str | None = None
    config_hash: str | None = None
    reset_cause: int | None = None
    schedule_version: int | None = None  # reported by birth (lighting)
    health: str | None = None  # JSON of the last health data
    bay_state: int | None = None  # parking: 0 free, 1 occupied, 2 unknown
    indicator: int | None = None


@dataclass(frozen=True, slots=True)
class CommandAck:
    """A node's answer to a command, with the state it moves the command to."""

    node_id: int
    command_id: int
    result: int
    at: float
    state: str  # acked | failed | sent (retry at next_attempt)
    next_attempt: float


@dataclass(slots=True)
class IngestBatch:
    uplinks: list[UplinkRow] = field(default_factory=list)
    quarantine: list[QuarantineRow] = field(default_factory=list)
    twins: dict[int, TwinUpdate] = field(default_factory=dict)
    acks: list[CommandAck] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Twin:
    node_id: int
    last_seen: float | None
    via: str
    online: bool
    boot: int | None
    birth_seq: int | None
    firmware: str
    board: str
    config_hash: str
    reset_cause: int | None
    reported_schedule: int | None  # version the node runs
    desired_schedule: str | None  # schedule name
    desired_version: int | None
    health: str  # JSON
    bay_state: int | None
    indicator: int | None
    reserved_until: float | None
    desired_config: str | None  # JSON settings map the node should run
    confirmed_config: str | None  # birth `cfg` (hex) seen once the node applied it


@dataclass(frozen=True, slots=True)
class Command:
    command_id: int
    node_id: int
    opcode: int
    args: str  # JSON of the arguments as sent (bytes as hex)
    state: str  # pending | sent | acked | failed | expired
    created_at: float
    created_by: str
    expires_at: float
    attempts: int
    next_attempt: float
    sent_at: float | None
    done_at: float | None
    result: int | None
    note: str  # why it was issued, e.g. "schedule night-2 v3 rollout"


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    name: str
    version: int
    body: str  # JSON of the schedule object (integer keys as in the wire map)
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    user: str
    action: str
    target: str
    details: str


@dataclass(frozen=True, slots=True)
class HourlyRow:
    """Downsampled telemetry of one node for one hour."""

    node_id: int
    hour: int  # Unix time of the hour's start
    samples: int
    data: str  # JSON: per field {"mean", "min", "max", "n"} or OR-ed flags


class Store(Protocol):
    """Everything the gateway keeps. Implementations are safe to share between tasks."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # registry
    async def add_node(self, node: Node, user: str) -> None: ...
    async def get_node(self, node_id: int) -> Node: ...
    async def nodes(
        self, *, zone: str | None = None, street: str | None = None, role: str | None = None
    ) -> list[Node]: ...
    async def remove_node(self, node_id: int, user: str) -> None: ...

    # ingest
    async def commit_ingest(self, batch: IngestBatch) -> int:
        """Store the batch atomically; return how many uplinks were new."""
        ...

    async def recent_counters(self, node_id: int, limit: int) -> list[tuple[int, int]]:
        """(boot, seq) of the node's newest stored uplinks, newest first."""
        ...

    async def is_stored(self, node_id: int, boot: int, seq: int) -> bool: ...
    async def uptime_reference(self, node_id: int, boot: int) -> tuple[int, float] | None:
        """(ts, received_at) of the node's newest stored uplink of `boot` timed by uptime."""
        ...

    async def uplinks(
        self, node_id: int, *, kind: int | None = None, since: float = 0.0, limit: int = 1000
    ) -> list[UplinkRow]: ...
    async def count_uplinks(self) -> int: ...
    async def quarantined(self, limit: int = 100) -> list[QuarantineRow]: ...
    async def count_quarantined(self) -> int: ...

    # twin
    async def twin(self, node_id: int) -> Twin: ...
    async def twins(self) -> list[Twin]: ...
    async def set_desired_schedule(self, node_ids: list[int], name: str, version: int) -> None: ...
    async def set_reservation(self, node_id: int, until: float | None) -> None: ...

    # commands
    async def next_counter(self, node_id: int) -> int:
        """The node's next downlink counter, persisted before it is returned."""
        ...

    async def add_command(
        self, node_id: int, opcode: int, args: str, *, created_by: str, expires_at: float,
        note: str, now: float,
    ) -> Command: ...
    async def get_command(self, command_id: int) -> Command: ...
    async def find_open_command(self, node_id: int, opcode: int, args: str) -> Command | None: ...
    async def due_commands(self, now: float, limit: int = 100) -> list[Command]:
        """Open commands to send again now, or to expire."""
        ...
    async def commands(self, node_id: int | None = None, limit: int = 100) -> list[Command]: ...
    async def claim_send(self, command_id: int, attempts: int, now: float,
                         next_attempt: float) -> bool:
        """Count one more transmission unless another instance did; True: send it."""
        ...

    async def set_reported_schedule(self, node_id: int, version: int) -> None: ...
    async def set_desired_config(self, node_ids: list[int], settings: str) -> None: ...
    async def confirm_config(self, node_id: int, config_hash: str | None) -> None: ...
    async def finish_command(self, command_id: int, state: str, at: float,
                             result: int | None = None) -> None: ...

    # schedules
    async def add_schedule(self, record: ScheduleRecord) -> None: ...
    async def get_schedule(self, name: str, version: int | None = None) -> ScheduleRecord: ...
    async def schedules(self) -> list[ScheduleRecord]: ...
    async def next_schedule_version(self) -> int:
        """Above every saved version of every schedule."""
        ...

    # audit
    async def audit(self, user: str, action: str, target: str,
                    details: dict[str, Any]) -> None: ...
    async def audit_log(self, limit: int = 100) -> list[AuditEntry]: ...

    # parking
    async def record_occupancy(self, zone: str, at: float, free: int, occupied: int,
                               unknown: int) -> None: ...
    async def occupancy_history(self, zone: str, since: float) -> list[tuple[float, int, int, int]]:
        ...

    # retention
    async def downsample(self, rows: list[HourlyRow],
                         summarised: list[tuple[int, int, int]]) -> int:
        """Store hourly rows and delete the raw telemetry they summarise, by (node, boot,
        seq); return rows deleted."""
        ...

    async def telemetry_before(self, before: float, limit: int) -> list[UplinkRow]: ...
    async def purge_hourly(self, before: float) -> int: ...
    async def hourly(self, node_id: int, since: float) -> list[HourlyRow]: ...
    async def purge(self, kinds: list[int], before: float) -> int:
        """Delete uplinks of these kinds measured (`at`) before `before`."""
        ...

    async def forget_hours(self, before: float) -> int:
        """Forget which counters the hours before `before` started at: no uplink measured
        then is kept any more (the oldest kind's retention)."""
        ...
