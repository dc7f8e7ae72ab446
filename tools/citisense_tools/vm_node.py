# mypy: ignore-errors
"""A node app on the MicroPython VM, for citisense_tools.bench_node_memory (MicroPython code).

Runs citisense_firmware.app.Node on a scripted HAL (street time `speed` times faster
than real time, light fading at dusk, a car parking for five minutes in every fifteen,
steady air) and an in-memory MQTT broker that acknowledges what the node publishes and
delivers the signed commands it was given at their street times. run() measures the
heap the way a board needs it: every SAMPLE_MS it reads gc.mem_alloc() (live data plus
the garbage made since the last collection) and collects, yielding to the VM's event
loop (where the WebAssembly port runs a requested collection); every LIVE_EVERY samples
it also reads the live data right after a collection. Each such yield leaves about 30
bytes behind in this VM (not on a board): measured first and subtracted. Prints one
JSON line.

    await vm_node.run(role, commands, period_s, speed)
    commands: [[street second, topic, signed message hex], ...]
"""

import asyncio
import gc
import json
import sys
import time
from binascii import hexlify, unhexlify

import micropython

TICKS_MASK = (1 << 30) - 1
SAMPLE_MS = 40
LIVE_EVERY = 5  # every fifth sample also measures the live data alone
START_UNIX = 1767286800  # 2026-01-01 17:00 UTC, dusk in Amsterdam: the lamp acts
PARTS = {
    "lighting": ("lamp", "power", "light", "status_led"),
    "parking": ("magnetometer", "indicator", "status_led"),
    "air": ("pm", "climate", "no2", "status_led"),
}


def vm_hal(role, speed):
    """The scripted board; its class is made here so that importing this harness does not
    import the firmware (the heap baseline is taken before the app is loaded)."""
    from citisense_firmware.hal import Hal

    class VmHal(Hal):
        def __init__(self, role, speed):
            self.parts = PARTS[role]
            self.speed = speed
            self._t0 = time.ticks_ms()
            self.level = 0
            self.outputs = 0
            self.fed = 0

        def street_ms(self):
            return time.ticks_diff(time.ticks_ms(), self._t0) * self.speed

        def ticks_ms(self):
            return self.street_ms() & TICKS_MASK

        async def sleep_ms(self, ms):
            await asyncio.sleep_ms(max(1, ms // self.speed))

        def unix(self):
            return START_UNIX + self.street_ms() // 1000

        async def network_time(self, host):
            return self.unix()

        def watchdog_feed(self):
            self.fed += 1

        def memory(self):
            return gc

        def lamp_output(self, level):
            self.level = level
            self.outputs += 1

        def lamp_feedback(self):
            return 10 + 990 * self.level // 100, 0

        def ambient_lux(self):
            # Light fading out over the first street half hour: dusk.
            return max(0, 200 - self.street_ms() // 9000)

        def magnetic_field(self):
            parked = 300 <= (self.street_ms() // 1000) % 900 < 600
            return (16000, 2000, -44000 + (30000 if parked else 0) + self.street_ms() % 7)

        def pm_reading(self):
            return 8.0 + self.street_ms() % 3, 15.0

        def climate(self):
            return 12.5, 80.0, 1013.2

        def no2_volts(self):
            return 0.62, None

    return VmHal(role, speed)


class Broker:
    """What the node's MQTT client sees of a broker: acks, grants, pongs, commands."""

    def __init__(self, hal, commands):
        self.hal = hal
        self.commands = commands
        self.inbox = b""
        self.buffer = b""
        self.ready = asyncio.Event()
        self.published = {}
        self.acks = []
        self.subscribed = False

    def _feed(self, data):
        self.buffer += data
        self.ready.set()

    async def readexactly(self, n):
        while len(self.buffer) < n:
            self.ready.clear()
            await self.ready.wait()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def write(self, data):
        self.inbox += data
        while True:
            size, shift, at = 0, 0, 1
            while at < len(self.inbox):
                byte = self.inbox[at]
                size |= (byte & 0x7F) << shift
                shift += 7
                at += 1
                if not byte & 0x80:
                    break
            else:
                return
            if len(self.inbox) < at + size:
                return
            first, body = self.inbox[0], self.inbox[at:at + size]
            self.inbox = self.inbox[at + size:]
            self._packet(first, body)

    def _packet(self, first, body):
        kind = first & 0xF0
        if kind == 0x10:
            self._feed(b"\x20\x02\x00\x00")
        elif kind == 0x80:
            self.subscribed = True
            self._feed(b"\x90\x03" + body[:2] + b"\x01")
        elif kind == 0x30:
            n = body[0] << 8 | body[1]
            leaf = body[2:2 + n].decode().split("/")[-1]
            self.published[leaf] = self.published.get(leaf, 0) + 1
            if leaf == "ack":
                self.acks.append(hexlify(body[4 + n:]).decode())
            if first & 0x06:
                self._feed(b"\x40\x02" + body[2 + n:4 + n])
        elif kind == 0xC0:
            self._feed(b"\xd0\x00")

    async def drain(self):
        pass

    def close(self):
        pass

    async def deliver(self):
        for pid, (at, topic, payload) in enumerate(self.commands, 1):
            while not self.subscribed or self.hal.street_ms() < at * 1000:
                await asyncio.sleep_ms(5)
            topic = topic.encode()
            body = bytes([len(topic) >> 8, len(topic) & 0xFF]) + topic + bytes([0, pid])
            body += unhexlify(payload)
            self._feed(bytes([0x32]) + _length(len(body)) + body)


def _length(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        out += bytes([byte | 0x80 if n else byte])
        if not n:
            return out


async def _pause(ms=1):
    """Collect, then suspend the coroutine the VM host awaits: the port collects there."""
    gc.collect()
    await asyncio.sleep_ms(ms)


async def _leak_per_pause(pauses=50):
    """Bytes the VM keeps per suspension of the awaited coroutine (a WebAssembly-port
    artefact, about 30): measured with nothing running, subtracted from every reading."""
    await _pause()
    start = gc.mem_alloc()
    for _ in range(pauses):
        await _pause()
    return (gc.mem_alloc() - start) / pauses


async def run(role, commands, period_s, speed):
    """Figures are the node app's alone: taken relative to the heap before the app is
    imported (this harness, the VM's own objects, and a ROMFS image if one is mounted).
    qstr_info() is printed before the import and at the end (interned names and strings)."""
    leak = await _leak_per_pause()
    await _pause()
    base = gc.mem_alloc()
    pauses = 1
    micropython.qstr_info()

    def heap():
        return int(gc.mem_alloc() - base - leak * pauses)

    from citisense_firmware import app

    hal = vm_hal(role, speed)
    broker = Broker(hal, commands)

    async def open_connection(host, port):
        return broker, broker

    asyncio.open_connection = open_connection
    node = app.Node(hal, "/node", "bench", role)
    node.boot(node._load_config())
    await node.prepared_tick()
    await _pause()
    pauses += 1
    booted = peak = peak_live = heap()
    samples = 0
    delivery = asyncio.create_task(broker.deliver())
    node._start()
    while hal.street_ms() < period_s * 1000:
        peak = max(peak, heap())  # live data and the garbage since the last collection
        samples += 1
        if samples % LIVE_EVERY:
            await _pause(SAMPLE_MS)
        else:
            await _pause()
            pauses += 1
            peak_live = max(peak_live, heap())
            await asyncio.sleep_ms(SAMPLE_MS)
        pauses += 1
    node._cancel()
    delivery.cancel()
    await _pause()
    pauses += 1
    settled = heap()
    micropython.qstr_info()
    modules = sorted(name for name in sys.modules if name.startswith("citisense"))
    print(json.dumps({
        "booted": booted, "peak": peak, "peak_live": peak_live, "settled": settled,
        "samples": samples, "leak_per_pause": leak, "pauses": pauses,
        "modules": modules, "published": broker.published, "acks": broker.acks,
        "outputs": hal.outputs, "fed": hal.fed, "street_s": hal.street_ms() // 1000,
    }))
