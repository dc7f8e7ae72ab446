"""Signed uplink messages: boot counter, per-boot sequence, node clock, store records.

Every uplink carries (boot, seq): boot is a persisted counter bumped once per boot (one
flash write), seq counts messages of this boot from 0. The gateway authenticates
(boot << 32) | seq through its replay window and de-duplicates on (node, boot, seq).

Messages wait in the store-and-forward queue as records: kind (u8), boot (u32),
seq (u32), then the signed message. The header lets a transport pick the MQTT topic and
match serial uplink-acks without decoding CBOR.

Clock: ts is Unix seconds once a time source (gateway time sync, NTP) set the clock,
seconds since boot before that; tq says which (messages.TQ_*).

A node on MQTT wires the pieces like this:

    boot = next_boot(config.Counter("/state/boot"))
    clock = Clock()
    store = store_forward.Store("/queue")
    uplink = Uplink(cfg.node_id, cfg.key, boot, clock, store)
    downlink = commands.Downlink(cfg.node_id, cfg.key, config.Counter("/state/down"),
                                 clock, uplink)          # + downlink.register(op, handler)
    will, on_connect = mqtt_will(uplink, lambda: birth_data(...))
    client = mqtt.MQTTClient(str(cfg.node_id), host, port, user, password, will=will,
                             on_connect=on_connect,
                             on_message=lambda topic, payload: downlink.handle(payload))
    await client.subscribe(topics.node_filter(cfg.node_id))   # made at every connect
    asyncio.create_task(client.run())
    asyncio.create_task(forward_mqtt(store, client, cfg.node_id))
    uplink.send(messages.TELEMETRY, data)                     # from the role, any time

On a serial link, serial_uplink.SerialLink takes the place of the client, the will
and the forwarder; send the birth with uplink.send() after boot.

Health and birth data, what the node reports about itself, are built here from what the
caller passes in (the gc module or any object with mem_free/mem_alloc, the uptime, queue
figures, link quality): the same code runs on the board, the virtual board and CPython.
heap_peak is the highest gc.mem_alloc() Health.sample() saw; call it where allocation
peaks (after building a message, after a GC-heavy task) and once per main-loop tick.
"""

import asyncio
import struct

from citisense_firmware.compat import const, ticks_diff, ticks_ms
from citisense_protocols import messages, topics

_RECORD = ">BII"
_RECORD_HEADER = const(9)
_MAX_SEQ = const(0xFFFFFFFF)


def next_boot(counter) -> int:
    """Bump the persisted boot counter (config.Counter) and return this boot's number."""
    boot = 0 if counter.value is None else counter.value + 1
    if boot > _MAX_SEQ:
        boot = 0  # 136 years of a reboot a second; the gateway's window must be reset then
    counter.set(boot)
    return boot


def pack_record(kind: int, boot: int, seq: int, message: bytes) -> bytes:
    return struct.pack(_RECORD, kind, boot, seq) + message


def unpack_record(record: bytes) -> tuple:
    """(kind, boot, seq, message) of a store record."""
    kind, boot, seq = struct.unpack(_RECORD, record[:_RECORD_HEADER])
    return kind, boot, seq, record[_RECORD_HEADER:]


class Clock:
    """Uptime that does not wrap, and Unix time once a time source has set it.

    MicroPython ticks wrap every 2**30 ms, and ticks_diff is right only within half of
    that (6.2 days): call any method at least daily (every message and tick does).
    """

    def __init__(self, ticks=ticks_ms) -> None:
        self._ticks = ticks
        self._last = ticks()
        self._uptime_ms = 0
        self._offset_ms = None  # Unix ms minus uptime ms, once set
        self._set_at_ms = 0
        self.quality = messages.TQ_UPTIME

    def uptime_ms(self) -> int:
        now = self._ticks()
        self._uptime_ms += ticks_diff(now, self._last)
        self._last = now
        return self._uptime_ms

    def uptime(self) -> int:
        return self.uptime_ms() // 1000

    def set(self, unix: int, quality: int) -> None:
        """A time source says it is `unix` seconds now (quality TQ_GATEWAY or TQ_NTP)."""
        uptime = self.uptime_ms()
        self._offset_ms = unix * 1000 - uptime
        self._set_at_ms = uptime
        self.quality = quality

    @property
    def valid(self) -> bool:
        return self._offset_ms is not None

    def unix(self) -> int | None:
        """Unix seconds, or None while no time source has set the clock."""
        if self._offset_ms is None:
            return None
        return (self._offset_ms + self.uptime_ms()) // 1000

    def now(self) -> tuple:
        """(ts, tq) for a message: Unix seconds, or seconds since boot with TQ_UPTIME."""
        unix = self.unix()
        if unix is None:
            return self.uptime(), messages.TQ_UPTIME
        return unix, self.quality

    def since_set(self) -> int | None:
        """Seconds since the last time sync (drift grows with it), None if never set."""
        if self._offset_ms is None:
            return None
        return (self.uptime_ms() - self._set_at_ms) // 1000


class Uplink:
    """Builds this node's signed uplink messages and queues them for a transport."""

    def __init__(self, node_id: int, key: bytes, boot: int, clock: Clock, store=None) -> None:
        self.node_id = node_id
        self._key = key
        self.boot = boot
        self.seq = 0  # of the next message
        self.clock = clock
        self.store = store
        # Set whenever a record is queued: the forwarder sleeps on it instead of polling.
        self.queued = asyncio.Event()

    def build(self, kind: int, data) -> tuple:
        """(seq, signed message) of a new uplink; seq is consumed even if it is never sent."""
        seq = self.seq
        if seq > _MAX_SEQ:
            raise OverflowError("sequence exhausted: reboot for a new boot counter")
        self.seq = seq + 1
        ts, tq = self.clock.now()
        body = messages.uplink(kind, self.node_id, self.boot, seq, ts, tq, data)
        return seq, messages.encode_signed(self._key, body)

    def send(self, kind: int, data) -> int:
        """Sign and queue one message in the store; returns its seq."""
        seq, message = self.build(kind, data)
        self.store.push(pack_record(kind, self.boot, seq, message))
        self.queued.set()
        return seq


async def forward_mqtt(store, client, node_id: int, batch: int = 8, idle: float = 1,
                       wake=None) -> None:
    """Move queued records to the broker, forever: publish a batch at QoS 1, and forget
    it from the store only once the broker acknowledged all of it (MQTTClient.drain).

    With nothing to send it waits `idle` seconds, or less when `wake` (an asyncio.Event,
    e.g. Uplink.queued) is set: a queued ack leaves at once, and an idle node does not
    wake up to poll.
    A node that loses power mid-batch sends the batch again: duplicates, never gaps.
    """
    while True:
        if wake is not None:
            wake.clear()  # before peek: a record queued after it sets it again
        store.poll()
        records = store.peek(batch) if client.connected else None
        if not records:
            if wake is None:
                await asyncio.sleep(idle)
            else:
                try:  # noqa: SIM105 (no contextlib on the board)
                    await asyncio.wait_for(wake.wait(), idle)
                except asyncio.TimeoutError:  # noqa: UP041 (MicroPython has no builtin one)
                    pass
            continue
        drops = store.drops
        for record in records:
            kind, _, _, message = unpack_record(record)
            await client.publish(topics.topic(node_id, kind), message, 1)
        await client.drain()
        # A full store drops its oldest records, which are the head of this batch.
        store.ack(len(records) - (store.drops - drops))


def mqtt_will(uplink: Uplink, birth) -> tuple:
    """(will, on_connect) for MQTTClient(will=..., on_connect=...); `birth` returns the
    birth data.

    SPEC (Counters and replay, Will): the will is signed with the next seq and the birth
    with the one after, so the gateway can accept the delayed will by its birth rather
    than through the replay window. will() builds both with no await in between, so no
    other message takes a seq between them; on_connect() queues that birth once the
    broker has accepted the connection (a refused attempt queues nothing).
    """
    waiting = []

    def will() -> tuple:
        _, message = uplink.build(messages.WILL, None)
        seq, birth_message = uplink.build(messages.BIRTH, birth())
        waiting.clear()
        waiting.append(pack_record(messages.BIRTH, uplink.boot, seq, birth_message))
        return topics.topic(uplink.node_id, messages.WILL), message

    def on_connect() -> None:
        for record in waiting:
            uplink.store.push(record)
        waiting.clear()
        uplink.queued.set()  # the birth, and whatever waited for the connection

    return will, on_connect


# machine.reset_cause() constant names -> messages.RESET_*
_RESET_NAMES = (
    ("PWRON_RESET", messages.RESET_POWER_ON),
    ("HARD_RESET", messages.RESET_EXTERNAL),
    ("WDT_RESET", messages.RESET_WATCHDOG),
    ("DEEPSLEEP_RESET", messages.RESET_DEEP_SLEEP),
    ("SOFT_RESET", messages.RESET_SOFT),
    ("BROWNOUT_RESET", messages.RESET_BROWNOUT),
)
_U32 = 0xFFFFFFFF


def reset_code(cause: int, machine) -> int:
    """The messages.RESET_* code of machine.reset_cause() on this port."""
    for name, code in _RESET_NAMES:
        if getattr(machine, name, None) == cause:
            return code
    return messages.RESET_UNKNOWN


def birth_data(
    fw: str, role: int, board: str, config_digest: bytes, reset: int, loc=None, schedule=None
) -> dict:
    """Data of the birth message (catalogue.BIRTH_FIELDS); loc is config.Config.location."""
    data = {0: fw, 1: role, 2: board, 3: config_digest, 4: reset, 5: loc}
    if schedule is not None:
        data[6] = schedule
    return data


class Health:
    """Collects the health message of a node."""

    def __init__(self, fw: str, reset: int, gc) -> None:
        self.fw = fw
        self.reset = reset
        self._gc = gc
        self.heap_peak = 0
        self.sample()

    def sample(self) -> int:
        """Record the current heap use; returns it."""
        used = self._gc.mem_alloc()
        if used > self.heap_peak:
            self.heap_peak = used
        return used

    def data(self, uptime: int, queue: int, drops: int, rssi=None, link=None) -> dict:
        """Data of a health message (catalogue.HEALTH_FIELDS); rssi in dBm, link in %."""
        self.sample()
        return {
            0: min(self._gc.mem_free(), _U32),
            1: min(self.heap_peak, _U32),
            2: min(uptime, _U32),
            3: self.reset,
            4: min(queue, 65535),
            5: min(drops, _U32),
            6: None if rssi is None else max(-127, min(0, rssi)),
            7: None if link is None else max(0, min(100, link)),
            8: self.fw,
        }
