"""Commands to nodes: validated, stored, signed, sent, retried with backoff, acked, expired.

A command is a row first (id from the database, shared by every gateway instance) and a
message second. Each transmission takes the node's next downlink counter, so a retry is
a fresh message with the same command id: the node's replay window accepts it and the
node answers `duplicate` if it ran the command already. Issuing a command identical to
one still open returns that one: an operator's double click sends nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from citisense_gateway.keyring import KeyRing
from citisense_gateway.metrics import Metrics
from citisense_gateway.store.base import Command, IngestBatch, NotFound, Store
from citisense_protocols import catalogue, messages
from citisense_protocols.errors import MessageError

log = logging.getLogger("citisense.commands")

OPCODES = {name: op for op, (name, _, _) in enumerate(catalogue.OPS) if name}
DONE = (messages.OK, messages.STALE, messages.DUPLICATE)
GIVE_UP = (messages.EXPIRED, messages.BAD_ARGS, messages.UNSUPPORTED)
NO_TIME_RETRY = 5.0  # a time sync goes out first; then the command again


class CommandError(ValueError):
    """A command the gateway refuses to send; the message names the field and rule."""


def ack_outcome(result: int, now: float, retry_after: float) -> tuple[str, float]:
    """(state, next attempt) a node's ack result moves its command to."""
    if result in DONE:
        return "acked", now
    if result in GIVE_UP:
        return "failed", now
    if result == messages.NO_TIME:
        return "sent", now + NO_TIME_RETRY
    return "sent", now + retry_after  # failed, busy: try again later


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
            ) -> float:
    """Seconds before transmission `attempt + 1`: doubling, capped, with +-20 % jitter so a
    district's retries do not line up."""
    return float(min(cap, base * 2**attempt)) * (0.8 + 0.4 * rand())


def args_to_json(op: int, args: object) -> str:
    """Arguments as stored and audited (schedule keys as text, bytes as hex)."""
    if op == messages.OP_APP_UPDATE and isinstance(args, list):
        args = [a.hex() if isinstance(a, bytes) else a for a in args]
    return json.dumps(args, sort_keys=True, separators=(",", ":"))


def args_from_json(op: int, text: str) -> Any:
    """The wire form of stored arguments."""
    args = json.loads(text)
    if op == messages.OP_SCHEDULE:
        return {int(k): v for k, v in args.items()}
    if op == messages.OP_APP_UPDATE:
        return [bytes.fromhex(a) if i == 3 else a for i, a in enumerate(args)]
    return args


def check_args(op: int, args: object) -> None:
    """CommandError unless the contract accepts `args` for `op` (the node would refuse)."""
    if op not in OPCODES.values():
        raise CommandError(f"unknown opcode {op}")
    try:
        catalogue.decode_body(messages.command(1, 0, 0, 0, op, args))
    except MessageError as err:
        raise CommandError(str(err)) from err


class Downlink(Protocol):
    async def send(self, node_id: int, kind: int, message: bytes) -> None: ...


@dataclass(frozen=True)
class CommandPolicy:
    ttl: float = 3600.0  # default expiry after issue
    retry_base: float = 10.0
    retry_cap: float = 600.0
    max_attempts: int = 8
    retry_after: float = 60.0  # after a `failed` or `busy` answer


class Commands:
    """Issues commands and runs the sender loop (one per gateway instance)."""

    def __init__(self, store: Store, keyring: KeyRing, downlink: Downlink, metrics: Metrics,
                 policy: CommandPolicy | None = None, clock: Callable[[], float] = time.time
                 ) -> None:
        self.store = store
        self.keyring = keyring
        self.downlink = downlink
        self.metrics = metrics
        self.policy = policy or CommandPolicy()
        self.clock = clock
        self._wake = asyncio.Event()

    async def issue(self, node_ids: list[int], op: int, args: object, *, user: str,
                    ttl: float | None = None, note: str = "") -> list[Command]:
        """Store one command per node (or return the identical open one) and wake the sender."""
        if not user:
            raise CommandError("every command is attributed to a user")
        check_args(op, args)
        text = args_to_json(op, args)
        now = self.clock()
        expires = now + (self.policy.ttl if ttl is None else ttl)
        issued = []
        for node_id in node_ids:
            await self.store.get_node(node_id)  # NotFound names an unknown node
            existing = await self.store.find_open_command(node_id, op, text)
            if existing is not None:
                issued.append(existing)
                continue
            issued.append(await self.store.add_command(
                node_id, op, text, created_by=user, expires_at=expires, note=note, now=now))
        self._wake.set()
        return issued

    async def run(self, tick: float = 1.0) -> None:
        while True:
            try:
                await self.send_due()
            except Exception:
                log.exception("command sender failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick)

    async def send_due(self) -> int:
        """Send, retry or expire every command that is due; returns transmissions."""
        sent = 0
        now = self.clock()
        for command in await self.store.due_commands(now):
            if now >= command.expires_at:
                await self._finish(command, "expired", now)
            elif command.attempts >= self.policy.max_attempts:
                await self._finish(command, "failed", now)
            elif await self._transmit(command, now):
                sent += 1
        return sent

    async def _finish(self, command: Command, state: str, now: float) -> None:
        await self.store.finish_command(command.command_id, state, now)
        self.metrics.commands.labels(state).inc()
        log.info("command %d to node %d %s", command.command_id, command.node_id, state)

    async def _transmit(self, command: Command, now: float) -> bool:
        p = self.policy
        next_attempt = now + backoff(command.attempts, p.retry_base, p.retry_cap)
        if not await self.store.claim_send(command.command_id, command.attempts, now,
                                           next_attempt):
            return False  # another gateway instance sends it
        node = await self.keyring.find(command.node_id)
        if node is None:
            await self._finish(command, "failed", now)
            return False
        counter = await self.store.next_counter(command.node_id)
        body = messages.command(
            command.node_id, command.command_id, int(command.expires_at), counter,
            command.opcode, args_from_json(command.opcode, command.args),
        )
        try:
            await self.downlink.send(command.node_id, messages.COMMAND,
                                     messages.encode_signed(node.key, body))
        except Exception as err:  # the claim already scheduled the retry
            log.warning("sending command %d to node %d failed: %s", command.command_id,
                        command.node_id, err)
            return False
        self.metrics.command_sends.inc()
        return True

    async def observe(self, batch: IngestBatch) -> None:
        """After an ingest commit: latency and outcome of the acks it carried."""
        for ack in batch.acks:
            try:
                command = await self.store.get_command(ack.command_id)
            except NotFound:
                continue
            if command.node_id != ack.node_id:
                continue
            if command.sent_at is not None and ack.state != "sent":
                self.metrics.command_latency.observe(max(0.0, ack.at - command.sent_at))
            if ack.state != "sent":
                self.metrics.commands.labels(ack.state).inc()
            if ack.result == messages.NO_TIME:
                await self.issue([ack.node_id], messages.OP_TIME_SYNC, int(self.clock()),
                                 user="gateway", ttl=60, note=f"node has no time (command "
                                 f"{ack.command_id})")
            self._wake.set()
