"""The ingest pipeline: check each received uplink, store it once, then acknowledge it.

Transports (MQTT, serial) hand payloads to offer() in arrival order. One consumer task
checks them (uplink.py), sorts them into the open batch and commits batches one at a
time; a batch's messages are acknowledged to their transport only after its commit, in
arrival order. Rejected payloads are quarantined in the same transaction and
acknowledged too: redelivering them would not make them valid.

Exactly-once: the store key is (node, boot, seq). A counter that the node's replay
window has not seen cannot be stored yet, so only the rare "seen" counter costs a
lookup, which tells a duplicate (acknowledge again, store nothing) from a replay
(quarantine). Windows are rebuilt from the store after a restart, so no state lives only
in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, Protocol

from citisense_gateway import twin, uplink
from citisense_gateway.commands import ack_outcome
from citisense_gateway.keyring import KeyRing, NodeKey
from citisense_gateway.metrics import Metrics
from citisense_gateway.store.base import (
    CommandAck,
    IngestBatch,
    NotFound,
    QuarantineRow,
    Store,
)
from citisense_gateway.uplink import Rejection
from citisense_protocols import messages
from citisense_protocols.errors import AuthError
from citisense_protocols.replay import REPLAYED, WIDTH, ReplayWindow

log = logging.getLogger("citisense.ingest")

ROLE_OF_LENGTH = {length: messages.ROLE_NAMES[role]
                  for length, role in messages.ROLE_BY_LENGTH.items()}
QUARANTINE_PAYLOAD = 512  # bytes of a refused payload kept for forensics
KIND_NAMES = {kind: messages.KIND_NAMES[kind] for kind in uplink.UPLINK_KINDS}


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


class _Delivery(NamedTuple):
    source: Source
    topic: str | None
    payload: bytes
    token: int
    received_at: float


class _Batch:
    def __init__(self) -> None:
        self.data = IngestBatch()
        self.outcomes: dict[Source, list[Outcome]] = {}
        self.keys: set[tuple[int, int, int]] = set()
        self.size = 0
        self.opened = 0.0  # loop time of the first message
        self.oldest = 0.0  # wall time of the first message
        self.duplicates = 0
        self.rejected: dict[str, int] = {}
        self.kinds: dict[int, int] = {}
        self.received: dict[str, int] = {}  # per transport
        self.node_lag: float | None = None


Observer = Callable[[IngestBatch], Awaitable[None]]


class Ingest:
    def __init__(
        self, store: Store, keyring: KeyRing, metrics: Metrics, *, batch_size: int = 500,
        batch_interval: float = 0.02, retry_after: float = 60.0,
        observers: Sequence[Observer] = (), clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.metrics = metrics
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.retry_after = retry_after  # when a command answered failed/busy is resent
        self.observers = list(observers)
        self.clock = clock
        self._inbox: deque[_Delivery] = deque()
        self._wake = asyncio.Event()
        self._batch = _Batch()
        self._pending: set[tuple[int, int, int]] = set()  # in a batch not yet committed
        self._windows: dict[int, ReplayWindow] = {}
        self._births: dict[int, tuple[int, int] | None] = {}
        self._committing: asyncio.Task[None] | None = None
        self.committed = 0  # messages settled (stored, duplicate or quarantined)

    # -- transports call these ---------------------------------------------------------------
    def offer(self, source: Source, topic: str | None, payload: bytes, token: int) -> None:
        self._inbox.append(_Delivery(source, topic, payload, token, self.clock()))
        if not self._wake.is_set():
            self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._inbox) + self._batch.size

    # -- consumer ----------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._inbox:
                    self._wake.clear()
                    timeout = None
                    if self._batch.size:
                        timeout = max(0.0, self._batch.opened + self.batch_interval - loop.time())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                while self._inbox and self._batch.size < self.batch_size:
                    delivery = self._inbox.popleft()
                    if not self._batch.size:
                        self._batch.opened = loop.time()
                        self._batch.oldest = delivery.received_at
                    if not self._take_now(delivery):
                        await self._take(delivery)
                batch = self._batch
                if batch.size >= self.batch_size or (
                    batch.size and loop.time() >= batch.opened + self.batch_interval
                ):
                    await self._seal()
        finally:
            if self._committing is not None:
                await asyncio.shield(self._committing)

    async def flush(self) -> None:
        """Commit everything received so far (shutdown, tests)."""
        while self._inbox:
            delivery = self._inbox.popleft()
            if not self._batch.size:
                self._batch.oldest = delivery.received_at
            if not self._take_now(delivery):
                await self._take(delivery)
        if self._batch.size:
            await self._seal()
        if self._committing is not None:
            await self._committing

    async def _seal(self) -> None:
        batch, self._batch = self._batch, _Batch()
        if self._committing is not None:
            # One commit at a time keeps acknowledgements in order; shielded so that
            # cancelling the consumer never abandons a batch halfway through its commit.
            await asyncio.shield(self._committing)
        self._committing = asyncio.create_task(self._commit(batch))

    async def _commit(self, batch: _Batch) -> None:
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
        self._pending -= batch.keys
        self.committed += batch.size
        m = self.metrics
        raced = len(batch.data.uplinks) - stored  # stored meanwhile by another instance
        m.duplicates.inc(batch.duplicates + raced)
        for kind, count in batch.kinds.items():
            m.stored.labels(KIND_NAMES[kind]).inc(count)
        for reason, count in batch.rejected.items():
            m.rejected.labels(reason).inc(count)
        for name, count in batch.received.items():
            m.received.labels(name.split(":", 1)[0]).inc(count)
        if batch.node_lag is not None:
            m.node_lag.set(batch.node_lag)
        m.batches.observe(batch.size)
        m.commit_lag.observe(max(0.0, self.clock() - batch.oldest))
        for observer in self.observers:
            try:
                await observer(batch.data)
            except Exception:
                log.exception("ingest observer failed")

    # -- one message ------------------------------------------------------------------------
    def _take_now(self, d: _Delivery) -> bool:
        """The common case, without awaiting: a known node, a counter above its window.

        False leaves the message to _take: a node's first message since start, an unknown
        node, a counter already seen (duplicate or replay), a will, a serial frame.
        """
        if d.topic is None:
            return False
        try:
            uplink.check_size(d.payload)
            node, topic_kind = uplink.parse_topic(d.topic)
            found = self.keyring.get(node)
            window = self._windows.get(node)
            if found is None or window is None:
                return False
            body = self._check(d.payload, found, node, topic_kind)
        except Rejection as r:
            self._settle_refused(d, r)
            return True
        kind = body[messages.KEY_KIND]
        boot = body[messages.KEY_BOOT]
        seq = body[messages.KEY_SEQ]
        counter = (boot << 32) | seq
        if kind == messages.WILL or counter <= window.highest:
            return False
        window.accept(counter)
        if kind == messages.BIRTH:
            self._births[node] = (boot, seq)
        self._settle_stored(d, body, node, boot, seq)
        return True

    async def _take(self, d: _Delivery) -> None:
        try:
            body = await self._open(d)
        except Rejection as r:
            self._settle_refused(d, r)
            return
        node = body[messages.KEY_NODE]
        boot = body[messages.KEY_BOOT]
        seq = body[messages.KEY_SEQ]
        try:
            fresh = await self._fresh(body, node, boot, seq)
        except Rejection as r:
            self._settle_refused(d, r, boot, seq)
            return
        if fresh:
            self._settle_stored(d, body, node, boot, seq)
        else:
            self._outcomes(d).append(Outcome(d.token, node, boot, seq, True))
            self._batch.duplicates += 1

    def _outcomes(self, d: _Delivery) -> list[Outcome]:
        batch = self._batch
        batch.size += 1
        name = d.source.name
        batch.received[name] = batch.received.get(name, 0) + 1
        outcomes = batch.outcomes.get(d.source)
        if outcomes is None:
            outcomes = batch.outcomes[d.source] = []
        return outcomes

    def _settle_refused(self, d: _Delivery, r: Rejection, boot: int = 0, seq: int = 0) -> None:
        self._outcomes(d).append(Outcome(d.token, r.node_id or 0, boot, seq, False))
        batch = self._batch
        batch.rejected[r.reason] = batch.rejected.get(r.reason, 0) + 1
        batch.data.quarantine.append(QuarantineRow(
            received_at=d.received_at, source=d.topic or d.source.name, reason=r.reason,
            detail=r.detail, node_id=r.node_id, payload=d.payload[:QUARANTINE_PAYLOAD],
        ))

    def _settle_stored(self, d: _Delivery, body: dict[int, Any], node: int, boot: int,
                       seq: int) -> None:
        self._outcomes(d).append(Outcome(d.token, node, boot, seq, True))
        batch = self._batch
        key = (node, boot, seq)
        self._pending.add(key)
        batch.keys.add(key)
        kind = body[messages.KEY_KIND]
        batch.kinds[kind] = batch.kinds.get(kind, 0) + 1
        data = batch.data
        data.uplinks.append(uplink.to_row(body, d.received_at, d.source.name))
        data.twins[node] = twin.learn(data.twins.get(node), body, d.received_at, d.source.name)
        if kind == messages.ACK:
            command_id, result = body[messages.KEY_DATA]
            state, next_attempt = ack_outcome(result, d.received_at, self.retry_after)
            data.acks.append(CommandAck(node, command_id, result, d.received_at, state,
                                        next_attempt))
        elif body[messages.KEY_TQ] != messages.TQ_UPTIME:
            batch.node_lag = d.received_at - body[messages.KEY_TS]

    async def _open(self, d: _Delivery) -> dict[int, Any]:
        uplink.check_size(d.payload)
        if d.topic is not None:
            node, topic_kind = uplink.parse_topic(d.topic)
        else:
            node, topic_kind = uplink.body_node(d.payload), 0
        found = self.keyring.get(node) or await self.keyring.find(node)
        if found is None:
            raise Rejection(uplink.UNKNOWN_NODE, f"node {node} is not registered", node)
        return self._check(d.payload, found, node, topic_kind)

    @staticmethod
    def _check(payload: bytes, found: NodeKey, node: int, topic_kind: int) -> dict[int, Any]:
        body = uplink.open_message(payload, found.mac, node)
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
        if (node, boot, seq) in self._pending:
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
            raise Rejection(uplink.REPLAY, err.reason, node) from err
        window.accept(counter)
        if kind == messages.BIRTH:
            self._births[node] = (boot, seq)
        return True

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
