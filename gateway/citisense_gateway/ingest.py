"""The ingest pipeline: check each received uplink, store it once, then acknowledge it.

Transports (MQTT, serial) hand payloads to offer() or, a whole socket read at once, to
offer_many(), in arrival order. One consumer task checks them (uplink.py), sorts them into
the open batch and commits batches one at a time: the open batch is sealed as soon as no
commit runs (or when it is full), and taking goes on while the last one commits; a
batch's messages are acknowledged to their transport only after its commit, in arrival
order. Rejected payloads are quarantined in the same transaction and acknowledged too:
redelivering them would not make them valid.

Exactly-once: the store key is (node, boot, seq); the replay window is a security check
in front of it. A counter that the node's window has not seen cannot be stored yet, so
only the rare "seen" counter costs a lookup, which tells a duplicate (acknowledge again,
store nothing) from one never stored. Windows are rebuilt from the store after a restart,
so no state lives only in this process; but each ingest worker or instance has its own,
and a message redelivered to one after the others stored far newer counters of its node
is older than its window. Never stored and made recently enough that retention would
still keep it raw, it is a late delivery: stored, and counted. Made before that, its
stored copy may have been summarised and deleted, so it is refused as a replay.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, Protocol

import cbor2

from citisense_gateway import twin, uplink
from citisense_gateway.commands import ack_outcome
from citisense_gateway.keyring import KeyRing, NodeKey
from citisense_gateway.metrics import Metrics
from citisense_gateway.retention import DAY, RetentionPolicy
from citisense_gateway.store.base import (
    CommandAck,
    IngestBatch,
    NotFound,
    QuarantineRow,
    Store,
    TwinUpdate,
    UplinkRow,
)
from citisense_gateway.uplink import Rejection
from citisense_protocols import messages
from citisense_protocols.errors import AuthError, DecodeError
from citisense_protocols.replay import REPLAYED, TOO_OLD, WIDTH, ReplayWindow

FULL = (1 << WIDTH) - 1

log = logging.getLogger("citisense.ingest")

ROLE_OF_LENGTH = {length: messages.ROLE_NAMES[role]
                  for length, role in messages.ROLE_BY_LENGTH.items()}
TELEMETRY_LENGTH = {role: length for length, role in ROLE_OF_LENGTH.items()}
QUARANTINE_PAYLOAD = 512  # bytes of a refused payload kept for forensics
SLICE = 200  # messages taken between two turns of the event loop (a few milliseconds)
KIND_NAMES = {kind: messages.KIND_NAMES[kind] for kind in uplink.UPLINK_KINDS}


# A telemetry topic's lane: node, its key's MacKey.verify_usual, the shapes of its telemetry
# seen so far (uplink.Shape, by message size), its key's MacKey.open, the pattern of its
# role's plainly valid telemetry, the JSON of its data as a format of integers, its replay
# window, whether it is a parking node (its telemetry tells the bay's state).
_Lane = tuple[int, Callable[[bytes], bool], dict[int, uplink.Shape],
              Callable[[bytes], bytes | None], re.Pattern[bytes], str, ReplayWindow, bool]
# The lane reads bodies by these keys as literals.
assert (messages.KEY_NODE, messages.KEY_BOOT, messages.KEY_SEQ, messages.KEY_TS,
        messages.KEY_TQ, messages.KEY_DATA) == (2, 3, 4, 5, 6, 7)
assert (messages.TELEMETRY, messages.TQ_UPTIME) == (2, 0)  # literals in the lane too


class Outcome(NamedTuple):
    """What became of one received payload, reported back to its transport."""

    token: int  # the transport's handle (MQTT packet id)
    node_id: int  # 0 when unknown
    boot: int
    seq: int
    accepted: bool  # stored, now or before: the sender may forget it


class Source(Protocol):
    """A transport session that receives uplinks and takes their acknowledgements."""

    name: str

    def acknowledge(self, outcomes: list[Outcome]) -> None: ...


class Received(Protocol):
    """One received payload: an MQTT PUBLISH (mqtt_wire.Publish) or a serial frame."""

    @property
    def topic(self) -> str | None: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def packet_id(self) -> int: ...  # the transport's handle, returned as Outcome.token


class _Frame(NamedTuple):
    topic: str | None
    payload: bytes
    packet_id: int


class _Chunk:
    """Payloads received together: one source, one receipt time."""

    __slots__ = ("items", "next", "received_at", "source")

    def __init__(self, source: Source, received_at: float, items: Sequence[Received]) -> None:
        self.source = source
        self.received_at = received_at
        self.items = items
        self.next = 0  # the first item not taken into a batch yet


class _Batch:
    def __init__(self) -> None:
        self.data = IngestBatch()
        self.outcomes: dict[Source, list[Outcome]] = {}
        self.size = 0
        self.oldest = 0.0  # wall time of the first message
        self.duplicates = 0
        self.late = 0  # stored though older than the replay window
        self.rejected: dict[str, int] = {}
        self.kinds: dict[int, int] = {}
        self.received: dict[str, int] = {}  # per transport
        self.node_lag: float | None = None
        self._keys: set[tuple[int, int, int]] = set()
        self._keyed = 0  # rows in _keys

    def outcomes_of(self, source: Source) -> list[Outcome]:
        outcomes = self.outcomes.get(source)
        if outcomes is None:
            outcomes = self.outcomes[source] = []
        return outcomes

    def count(self, source: Source, taken: int) -> None:
        self.size += taken
        self.received[source.name] = self.received.get(source.name, 0) + taken

    def holds(self, key: tuple[int, int, int]) -> bool:
        """The batch stores (node, boot, seq). Only duplicates ask: the set is built then."""
        rows = self.data.uplinks
        if self._keyed < len(rows):
            self._keys.update([(r.node_id, r.boot, r.seq) for r in rows[self._keyed :]])
            self._keyed = len(rows)
        return key in self._keys


Observer = Callable[[IngestBatch], Awaitable[None]]


class Settled(NamedTuple):
    """The counts of one committed batch: what the metrics learn from it (an ingest worker
    process sends them to the gateway process, see ingest_workers.py)."""

    size: int
    duplicates: int
    kinds: dict[int, int]  # stored, per message kind
    rejected: dict[str, int]  # per reason
    received: dict[str, int]  # per source name
    node_lag: float | None
    commit_lag: float  # from receipt of the batch's oldest message to its commit
    late: int = 0  # stored though older than the replay window (Ingest._late)


def count(metrics: Metrics, settled: Settled) -> None:
    m = metrics
    m.duplicates.inc(settled.duplicates)
    m.late.inc(settled.late)
    for kind, n in settled.kinds.items():
        m.stored.labels(KIND_NAMES[kind]).inc(n)
    for reason, n in settled.rejected.items():
        m.rejected.labels(reason).inc(n)
    for name, n in settled.received.items():
        m.received.labels(name.split(":", 1)[0]).inc(n)
    if settled.node_lag is not None:
        m.node_lag.set(settled.node_lag)
    m.batches.observe(settled.size)
    m.commit_lag.observe(settled.commit_lag)


class Ingest:
    def __init__(
        self, store: Store, keyring: KeyRing, metrics: Metrics, *, batch_size: int = 500,
        retry_after: float = 60.0,
        observers: Sequence[Observer] = (), clock: Callable[[], float] = time.time,
        on_settled: Callable[[Settled], None] | None = None,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.metrics = metrics
        self.batch_size = batch_size
        self.retry_after = retry_after  # when a command answered failed/busy is resent
        self.observers = list(observers)
        self.on_settled = on_settled or (lambda settled: count(metrics, settled))
        self.clock = clock
        # How long retention keeps each kind raw: the horizon of a late delivery (_late).
        retention = retention or RetentionPolicy()
        status = retention.status_days * DAY
        self._kept = {messages.TELEMETRY: retention.raw_days * DAY,
                      messages.EVENT: retention.events_days * DAY, messages.BIRTH: status,
                      messages.HEALTH: status, messages.ACK: status, messages.WILL: status}
        self._inbox: deque[_Chunk] = deque()
        self._wake = asyncio.Event()
        self._batch = _Batch()
        self._sealed: list[_Batch] = []  # sealed, not committed yet
        self._taking = asyncio.Lock()  # one taker at a time: run(), or flush() meanwhile
        self._windows: dict[int, ReplayWindow] = {}
        self._lanes: dict[str, _Lane] = {}  # by telemetry topic
        self._lanes_generation = -1  # of the keyring the lanes were opened with
        self._births: dict[int, tuple[int, int] | None] = {}
        self._committing: asyncio.Task[None] | None = None
        self.committed = 0  # messages settled (stored, duplicate or quarantined)

    # -- transports call these ---------------------------------------------------------------
    def offer(self, source: Source, topic: str | None, payload: bytes, token: int) -> None:
        self.offer_many(source, [_Frame(topic, payload, token)])

    def offer_many(self, source: Source, items: Sequence[Received]) -> None:
        """Payloads received together (one read of the transport), in arrival order."""
        if items:
            self._inbox.append(_Chunk(source, self.clock(), items))
            if not self._wake.is_set():
                self._wake.set()

    @property
    def backlog(self) -> int:
        return sum(len(c.items) - c.next for c in self._inbox) + self._batch.size

    # -- consumer ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Take what arrives; commit a batch at once when no commit is running, or when full.

        While a commit runs, the next batch keeps taking (its messages then share a commit);
        the moment the commit ends, the open batch is sealed, however small: a lone message
        waits for no timer. A backlog is taken whole (up to batch_size) before it is sealed,
        so that a busy gateway commits full batches (each commit costs about as much again
        per node it touches: twins, uplink_hours). Under load the batches grow by
        themselves: whatever arrives during a commit shares the next one.
        """
        try:
            while True:
                if not self._inbox:
                    self._wake.clear()
                    await self._wake.wait()  # received (offer_many) or committed (_committed)
                async with self._taking:
                    await self._fill()
                    batch = self._batch
                    if batch.size and (batch.size >= self.batch_size or self._idle()):
                        await self._seal()
        finally:
            if self._committing is not None:
                await asyncio.shield(self._committing)

    def _idle(self) -> bool:
        """No commit (with its acknowledgements and observers) is running."""
        return self._committing is None or self._committing.done()

    def _committed(self, task: asyncio.Task[None]) -> None:
        if self._batch.size and not self._wake.is_set():
            self._wake.set()  # run() seals the open batch now

    async def flush(self) -> None:
        """Commit everything received so far (shutdown, tests; also while run() runs)."""
        async with self._taking:
            while self._inbox:
                await self._fill()
                if self._batch.size >= self.batch_size:
                    await self._seal()
            if self._batch.size:
                await self._seal()
        if self._committing is not None:
            await asyncio.shield(self._committing)

    async def _fill(self) -> None:
        """Take received payloads into the open batch until it is full or none is left."""
        inbox = self._inbox
        batch = self._batch
        while inbox and batch.size < self.batch_size:
            chunk = inbox[0]
            if not batch.size:
                batch.oldest = chunk.received_at
            if self._take_now(chunk):
                await self._take(chunk)
            if chunk.next == len(chunk.items):
                inbox.popleft()
            # Let the loop run between slices: the commit of the previous batch, its
            # acknowledgements and the sockets must not wait for a whole batch.
            await asyncio.sleep(0)

    async def _seal(self) -> None:
        batch, self._batch = self._batch, _Batch()
        self._sealed.append(batch)
        previous = self._committing
        # Commits run one after the other, which keeps acknowledgements in order. The task
        # exists at once: cancelling the consumer never abandons a sealed batch.
        self._committing = asyncio.create_task(self._commit(batch, previous))
        self._committing.add_done_callback(self._committed)
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # at most one batch waits for its commit
        else:
            await asyncio.sleep(0)  # let the commit start before taking the next batch

    async def _commit(self, batch: _Batch, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        delay = 0.1
        while True:
            try:
                stored = await self.store.commit_ingest(batch.data)
                break
            except Exception:
                # The batch stays unacknowledged; the transports hold their messages.
                log.exception("store commit failed; retrying in %.1f s", delay)
                self.metrics.store_errors.inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for source, outcomes in batch.outcomes.items():
            try:
                source.acknowledge(outcomes)
            except Exception:
                log.exception("acknowledging to %s failed", source.name)
        self._sealed.remove(batch)
        self.committed += batch.size
        raced = len(batch.data.uplinks) - stored  # stored meanwhile by another instance
        kinds = batch.kinds
        if raced:
            # Which rows the other instance had stored is not known: counted off the commonest
            # kind of the batch, so that the total stored is exact.
            kinds = dict(kinds)
            commonest = max(kinds, key=kinds.__getitem__)
            kinds[commonest] -= min(raced, kinds[commonest])
        self.on_settled(Settled(
            batch.size, batch.duplicates + raced, kinds, batch.rejected, batch.received,
            batch.node_lag, max(0.0, self.clock() - batch.oldest), batch.late))
        for observer in self.observers:
            try:
                await observer(batch.data)
            except Exception:
                log.exception("ingest observer failed")

    # -- messages ----------------------------------------------------------------------------
    def _take_now(self, chunk: _Chunk) -> bool:
        """Take the chunk's messages of the common case, without awaiting: a known node, a
        counter above its window. True if it stopped at a message left to _take.

        Stops at the first one left to _take (a node's first message since start, an unknown
        node, a counter already seen, a will, a serial frame), at the end of a slice or when
        the batch is full.
        Telemetry, nearly all of the traffic, takes its lane (_Lane): everything known of
        its topic looked up at once, rows and twin updates written here. A message of a
        shape the lane has seen (uplink.Shape) is checked whole by one pattern match, its
        tag verified and its values unpacked at once; any other is opened, matched against
        its role's telemetry pattern and decoded by cbor2, and teaches the lane its shape.
        """
        batch = self._batch
        items = chunk.items
        first = i = chunk.next
        end = min(len(items), first + self.batch_size - batch.size, first + SLICE)
        source = chunk.source
        outcomes = batch.outcomes_of(source)
        keys = self.keyring
        windows = self._windows
        if keys.generation != self._lanes_generation:  # keys changed: lanes hold old ones
            self._lanes.clear()
            self._lanes_generation = keys.generation
        lanes = self._lanes
        received_at = chunk.received_at
        via = source.name
        data = batch.data
        uplinks = data.uplinks
        twins = data.twins
        new = tuple.__new__  # a NamedTuple's own __new__ is a Python call
        loads = cbor2.loads
        telemetry = 0
        timed = -1  # ts of the last message timed by a clock (not uptime)
        while i < end:
            item = items[i]
            topic = item.topic
            lane = lanes.get(topic) if topic is not None else None
            if lane is not None:
                node, verify, shapes, opener, pattern, layout, lane_window, parking = lane
                payload = item.payload
                # A shape of this node's telemetry: one match checks layout and values.
                shape = shapes.get(len(payload))
                if (shape is not None and shape.pattern.fullmatch(payload) is not None
                        and verify(payload)):
                    values = shape.unpack(payload)
                    if shape.fixes:
                        values = uplink.shaped_values(shape, payload)
                else:
                    try:
                        raw = opener(payload)
                    except DecodeError:
                        raw = None
                    values = None
                    if raw is not None and pattern.fullmatch(raw) is not None:
                        body = loads(raw)
                        values = (body[2], body[3], body[4], body[5], body[6], *body[7])
                        shape = uplink.telemetry_shape(values, len(raw))
                        if shape is not None:
                            shapes[len(payload)] = shape
                # Anything but plainly valid, fresh telemetry: the general path below.
                if values is not None:
                    boot = values[1]
                    seq = values[2]
                    counter = (boot << 32) | seq
                    highest = lane_window.highest
                    if values[0] == node and counter > highest:
                        # ReplayWindow.accept, for a new highest counter
                        shift = counter - highest
                        lane_window.seen = (((lane_window.seen << shift) | 1) & FULL
                                            if shift < WIDTH else 1)
                        lane_window.highest = counter
                        outcomes.append(new(Outcome, (item.packet_id, node, boot, seq, True)))
                        ts = values[3]
                        tq = values[4]
                        if tq:  # not TQ_UPTIME
                            at = ts + 0.0
                            timed = ts
                        else:
                            at = received_at
                        # Validated telemetry holds only integers and nulls: the JSON of its
                        # data is one format, or its repr with null for None.
                        readings = values[5:]
                        try:
                            text = layout % readings
                        except TypeError:
                            text = repr(list(readings)).replace(" ", "").replace("None", "null")
                        uplinks.append(new(UplinkRow, (
                            node, boot, seq, 2, ts, tq, at, received_at, text, via)))
                        # twin.learn, for telemetry
                        update = twins.get(node)
                        if update is None:
                            update = twins[node] = TwinUpdate(node, received_at, via, True)
                        else:
                            if received_at > update.last_seen:
                                update.last_seen = received_at
                            update.via = via
                            update.online = True
                        if parking:
                            update.bay_state = readings[0]
                            update.indicator = readings[1]
                        telemetry += 1
                        i += 1
                        continue
            elif topic is not None:
                self._open_lane(topic)
            if topic is None:
                break
            try:
                uplink.check_size(item.payload)
                node, topic_kind = uplink.parse_topic(topic)
                found = keys.get(node)
                window = windows.get(node)
                if found is None or window is None:
                    break
                raw = uplink.authenticate(item.payload, found.mac, node)
                body = (uplink.plain_telemetry(raw, node, TELEMETRY_LENGTH.get(found.role, 0))
                        if topic_kind == messages.TELEMETRY else None)
                if body is None:
                    body = self._judge(raw, found, node, topic_kind)
            except Rejection as r:
                self._refuse(outcomes, chunk, item, r)
                i += 1
                continue
            kind = body[messages.KEY_KIND]
            boot = body[messages.KEY_BOOT]
            seq = body[messages.KEY_SEQ]
            counter = (boot << 32) | seq
            if kind == messages.WILL or counter <= window.highest:
                break
            window.accept(counter)
            if kind == messages.BIRTH:
                self._births[node] = (boot, seq)
            outcomes.append(new(Outcome, (item.packet_id, node, boot, seq, True)))
            if timed >= 0:  # the lane's messages before this one: node_lag in arrival order
                batch.node_lag = received_at - timed
                timed = -1
            self._store(body, node, kind, chunk)
            i += 1
        if telemetry:
            batch.kinds[messages.TELEMETRY] = batch.kinds.get(messages.TELEMETRY, 0) + telemetry
            if timed >= 0:
                batch.node_lag = received_at - timed
        batch.count(source, i - first)
        chunk.next = i
        return i < end

    def _open_lane(self, topic: str) -> None:
        """The lane of a telemetry topic whose node is known and has its replay window."""
        try:
            node, kind = uplink.parse_topic(topic)
        except Rejection:
            return
        found = self.keyring.get(node)
        window = self._windows.get(node)
        if kind == messages.TELEMETRY and found is not None and window is not None:
            length = TELEMETRY_LENGTH[found.role]
            self._lanes[topic] = (node, found.mac.verify_usual, {}, found.mac.open,
                                  uplink.telemetry_pattern(length),
                                  "[" + ",".join(["%d"] * length) + "]", window,
                                  found.role == "parking")

    async def _take(self, chunk: _Chunk) -> None:
        """Take the chunk's next message, awaiting the store or the registry if need be."""
        item = chunk.items[chunk.next]
        outcomes = self._batch.outcomes_of(chunk.source)
        try:
            body = await self._open(item, chunk.source)
            node = body[messages.KEY_NODE]
            boot = body[messages.KEY_BOOT]
            seq = body[messages.KEY_SEQ]
        except Rejection as r:
            self._refuse(outcomes, chunk, item, r)
        else:
            try:
                fresh = await self._fresh(body, node, boot, seq)
            except Rejection as r:
                self._refuse(outcomes, chunk, item, r, boot, seq)
            else:
                outcomes.append(Outcome(item.packet_id, node, boot, seq, True))
                if fresh:
                    self._store(body, node, body[messages.KEY_KIND], chunk)
                else:
                    self._batch.duplicates += 1
        self._batch.count(chunk.source, 1)
        chunk.next += 1

    def _refuse(self, outcomes: list[Outcome], chunk: _Chunk, item: Received, r: Rejection,
                boot: int = 0, seq: int = 0) -> None:
        outcomes.append(Outcome(item.packet_id, r.node_id or 0, boot, seq, False))
        batch = self._batch
        batch.rejected[r.reason] = batch.rejected.get(r.reason, 0) + 1
        batch.data.quarantine.append(QuarantineRow(
            received_at=chunk.received_at, source=item.topic or chunk.source.name,
            reason=r.reason, detail=r.detail, node_id=r.node_id,
            payload=item.payload[:QUARANTINE_PAYLOAD],
        ))

    def _store(self, body: dict[int, Any], node: int, kind: int, chunk: _Chunk) -> None:
        batch = self._batch
        batch.kinds[kind] = batch.kinds.get(kind, 0) + 1
        received_at = chunk.received_at
        via = chunk.source.name
        data = batch.data
        data.uplinks.append(uplink.to_row(body, received_at, via))
        data.twins[node] = twin.learn(data.twins.get(node), body, received_at, via)
        if kind == messages.ACK:
            command_id, result = body[messages.KEY_DATA]
            state, next_attempt = ack_outcome(result, received_at, self.retry_after)
            data.acks.append(CommandAck(node, command_id, result, received_at, state,
                                        next_attempt))
        elif body[messages.KEY_TQ] != messages.TQ_UPTIME:
            batch.node_lag = received_at - body[messages.KEY_TS]

    async def _open(self, item: Received, source: Source) -> dict[int, Any]:
        uplink.check_size(item.payload)
        if item.topic is not None:
            node, topic_kind = uplink.parse_topic(item.topic)
        else:
            node, topic_kind = uplink.body_node(item.payload), 0
        found = self.keyring.get(node) or await self.keyring.find(node)
        if found is None:
            raise Rejection(uplink.UNKNOWN_NODE, f"node {node} is not registered", node)
        return self._judge(uplink.authenticate(item.payload, found.mac, node), found, node,
                           topic_kind)

    @staticmethod
    def _judge(raw: bytes, found: NodeKey, node: int, topic_kind: int) -> dict[int, Any]:
        """The validated body of an authenticated message: it must fit its topic and role."""
        body = uplink.decode(raw, node)
        if topic_kind:
            uplink.check_kind(topic_kind, body)
        kind = body[messages.KEY_KIND]
        data = body[messages.KEY_DATA]
        if kind == messages.TELEMETRY and ROLE_OF_LENGTH[len(data)] != found.role:
            raise Rejection(uplink.INVALID, f"{ROLE_OF_LENGTH[len(data)]} telemetry from "
                            f"{found.role} node {node}", node)
        if kind == messages.BIRTH and messages.ROLE_NAMES[data[1]] != found.role:
            raise Rejection(uplink.INVALID, f"birth as {messages.ROLE_NAMES[data[1]]} from "
                            f"{found.role} node {node}", node)
        return body

    async def _fresh(self, body: dict[int, Any], node: int, boot: int, seq: int) -> bool:
        """True: store it; False: already stored (or about to be); Rejection: a replay."""
        key = (node, boot, seq)
        if self._batch.holds(key) or any(batch.holds(key) for batch in self._sealed):
            return False
        window = self._windows.get(node)
        if window is None:
            window = await self._seed(node)
        kind = body[messages.KEY_KIND]
        counter = (boot << 32) | seq
        if kind == messages.WILL:
            # Signed at connect, published by the broker later: it cannot pass the window.
            if await self.store.is_stored(node, boot, seq):
                return False
            if self._births.get(node) != (boot, seq + 1):
                raise Rejection(uplink.REPLAY, "will does not match the last birth", node)
            return True
        try:
            window.check(counter)
        except AuthError as err:
            # A bit set in the window was set by the store (seed) or by a batch of ours: the
            # message is stored or about to be. Only one older than the window needs a look.
            if err.reason == REPLAYED or await self.store.is_stored(node, boot, seq):
                return False
            if err.reason == TOO_OLD and await self._late(body, node, boot, seq):
                self._batch.late += 1
                return True  # the window stays: it only moves forward
            raise Rejection(uplink.REPLAY, err.reason, node) from err
        window.accept(counter)
        if kind == messages.BIRTH:
            self._births[node] = (boot, seq)
        return True

    async def _late(self, body: dict[int, Any], node: int, boot: int, seq: int) -> bool:
        """An authentic message older than the window and never stored: made recently enough
        that retention would still keep it raw (so it cannot be a summarised one again)?

        Timed by uptime, it is placed in time by another message of its boot timed so:
        made ts - ts' seconds before that one was received.
        """
        ts = body[messages.KEY_TS]
        made = float(ts)
        if body[messages.KEY_TQ] == messages.TQ_UPTIME:
            timed = (node, boot, messages.TQ_UPTIME)
            reference = next(((row.ts, row.received_at)  # not committed yet
                              for batch in (self._batch, *self._sealed)
                              for row in reversed(batch.data.uplinks)
                              if (row.node_id, row.boot, row.tq) == timed), None)
            if reference is None:
                reference = await self.store.uptime_reference(node, boot)
                if reference is None:
                    return False
            made = reference[1] - (reference[0] - ts)
        return made >= self.clock() - self._kept[body[messages.KEY_KIND]]

    async def _seed(self, node: int) -> ReplayWindow:
        """The node's window as the store knows it: its newest stored counters."""
        window = ReplayWindow()
        stored = await self.store.recent_counters(node, WIDTH)
        if stored:
            highest = (stored[0][0] << 32) | stored[0][1]
            seen = 0
            for boot, seq in stored:
                age = highest - ((boot << 32) | seq)
                if age < WIDTH:
                    seen |= 1 << age
            window = ReplayWindow(highest, seen)
        self._windows[node] = window
        try:
            state = await self.store.twin(node)
        except NotFound:
            state = None
        if state is not None and state.boot is not None and state.birth_seq is not None:
            self._births[node] = (state.boot, state.birth_seq)
        return window
