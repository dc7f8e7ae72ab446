"""Downlink: verify, de-duplicate and dispatch the gateway's signed messages.

Checks in the order of protocols/SPEC.md (Command): tag, counter, envelope, expiry,
opcode, arguments; then the handler the role registered for the opcode runs.
- A bad tag, a replayed or stale counter, or a broken envelope: dropped and counted,
  never acked. There is no trustworthy id, and a forger must not make nodes talk; a
  QoS 1 redelivery of a command already handled is such a replay.
- Every other command is acked exactly once: its counter is accepted and persisted
  first (a replay after a reboot is refused), then the result is decided:
  `duplicate` for an id executed before (the gateway retried because our ack was lost),
  `no-time` when the node has no wall-clock time (only a time sync runs then, being
  the cure), `expired`, `unsupported` or `bad-args`, or the handler's result.
- Uplink-acks (kind 17, serial links) move the window in RAM only and are reported to
  `on_uplink_ack`: replaying one can only confirm a (boot, seq) already sent.

Flash: one write per acked command (a few a day; the SPEC budgets 100 a day at under
40 000 writes a year). handle() never raises: a failing handler is acked `failed`.
"""

from citisense_firmware.compat import unload
from citisense_protocols import cbor, mac, messages
from citisense_protocols.errors import WireError
from citisense_protocols.replay import ReplayWindow

RECENT = 16  # executed command ids remembered (SPEC: at least 16)


def _check(body: dict):
    """None if `body` follows the catalogue, else the MessageError saying why (its
    result: the ack to answer, -1 for a broken envelope). The catalogue is loaded for
    the check only: a node gets a few commands a day."""
    from citisense_protocols import catalogue

    try:
        catalogue.decode_body(body)
    except messages.MessageError as error:
        return error
    finally:
        unload("citisense_protocols.catalogue")
    return None


def _is_coroutine(value) -> bool:
    return hasattr(value, "send") and hasattr(value, "throw")


class Downlink:
    """Commands and uplink-acks for one node.

    counter: a config.Counter holding the highest accepted command counter.
    clock: uplink.Clock (expiry checks; time sync sets it).
    uplink: an uplink.Uplink; when given, handle() also queues the ack message.
    Handlers: handler(args) -> result code (None means OK); plain or async.
    As an MQTT on_message: `lambda topic, payload: downlink.handle(payload)`.
    """

    def __init__(self, node_id: int, key: bytes, counter, clock, uplink=None) -> None:
        self.node_id = node_id
        self._key = key
        self._counter = counter
        self.clock = clock
        self.uplink = uplink
        if counter.value is None:
            self.window = ReplayWindow()
        else:
            self.window = ReplayWindow.resume(counter.value)
        self._handlers = {messages.OP_TIME_SYNC: self._time_sync}
        self._recent = []  # ids of executed commands, newest last
        self.on_uplink_ack = None  # callable(boot, seq)
        self.rejected = 0  # dropped: bad tag, replayed counter, bad envelope, other node
        self.last_error = None

    def register(self, op: int, handler) -> None:
        self._handlers[op] = handler

    def _time_sync(self, unix: int) -> None:
        self.clock.set(unix, messages.TQ_GATEWAY)

    def _reject(self, error) -> None:
        self.rejected += 1
        self.last_error = error

    async def handle(self, message: bytes) -> list | None:
        """Process one downlink message; the ack data [command id, result] or None."""
        ack = await self._handle(message)
        if ack is not None and self.uplink is not None:
            try:
                self.uplink.send(messages.ACK, ack)
            except Exception as error:  # a full flash must not stop command handling
                self.last_error = error
        return ack

    async def _handle(self, message: bytes) -> list | None:
        try:
            body = cbor.loads(
                mac.verify(self._key, message),
                max_depth=messages.MAX_DEPTH,
                max_items=messages.MAX_ITEMS,
                max_size=messages.MAX_MESSAGE,
            )
            counter = body[messages.KEY_COUNTER] if type(body) is dict else None
            self.window.check(counter if type(counter) is int else -1)
        except (WireError, ValueError, KeyError) as error:
            self._reject(error)  # forged, garbled, replayed: no trustworthy id to answer
            return None
        problem = None
        error = _check(body)
        if error is not None:
            if error.result < 0:
                self._reject(error)
                return None
            problem = error.result  # envelope intact: the opcode or arguments are wrong
        if body[messages.KEY_NODE] != self.node_id:
            self._reject(ValueError(f"message for node {body[messages.KEY_NODE]}"))
            return None
        kind = body[messages.KEY_KIND]
        if kind == messages.UPLINK_ACK:
            self.window.accept(counter)
            if self.on_uplink_ack is not None:
                self.on_uplink_ack(body[messages.KEY_DATA][0], body[messages.KEY_DATA][1])
            return None
        if kind != messages.COMMAND:
            self._reject(ValueError("not a downlink kind"))
            return None
        cid = body[messages.KEY_ID]
        try:
            self.window.accept(counter)
            self._counter.set(self.window.highest)
            return [cid, await self._command(cid, body, problem)]
        except Exception as error:  # a role handler or a full flash: answer, never crash
            self.last_error = error
            return [cid, messages.FAILED]

    async def _command(self, cid: int, body: dict, problem: int | None) -> int:
        if cid in self._recent:
            return messages.DUPLICATE
        op = body[messages.KEY_OP]
        unix = self.clock.unix()
        if unix is None:
            if op != messages.OP_TIME_SYNC:
                return messages.NO_TIME
        elif unix > body[messages.KEY_EXPIRY]:
            return messages.EXPIRED
        if problem is not None:
            return problem
        handler = self._handlers.get(op)
        if handler is None:
            return messages.UNSUPPORTED
        result = await self._run(handler, body[messages.KEY_DATA])
        self._recent.append(cid)
        if len(self._recent) > RECENT:
            del self._recent[0]
        return result

    async def _run(self, handler, args) -> int:
        try:
            result = handler(args)
            if _is_coroutine(result):
                result = await result
        except Exception as error:
            self.last_error = error
            return messages.FAILED
        return messages.OK if result is None else result
