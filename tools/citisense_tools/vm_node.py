# mypy: ignore-errors
"""A node app on the MicroPython VM, for citisense_tools.bench_node_memory (MicroPython code).

Runs citisense_firmware.app.Node on a scripted HAL (street time `speed` times faster
than real time, light fading at dusk, a car parking for five minutes in every fifteen,
steady air) and an in-memory MQTT broker that acknowledges what the node publishes,
delivers the signed commands it was given at their street times and is out of reach in
the third street hour (runs longer than that). run() measures the
heap the way a board needs it: every SAMPLE_MS it reads gc.mem_alloc() (live data plus
the garbage made since the last collection, at most about GC_THRESHOLD) and collects,
yielding to the VM's event loop (where the WebAssembly port runs a requested
collection); every LIVE_EVERY samples it also reads the live data right after a
collection. Prints one JSON line at the end; each ack as it is published (ACK_LINE).

    await vm_node.run(role, commands, period_s, speed)
    commands: [[street second, topic, signed message hex], ...]
"""

import asyncio
import gc
import json
import sys
import time
from binascii import hexlify, unhexlify

TICKS_MASK = (1 << 30) - 1
ACK_LINE = "vm_node ack"  # each ack the node publishes, printed: "vm_node ack HEX"
SAMPLE_MS = 40
LIVE_EVERY = 5  # every fifth sample also measures the live data alone
GC_THRESHOLD = 4096  # bytes allocated between collections
COMMAND_SPEED = 20  # street seconds per real second while commands arrive
OUTAGE_S = (7200, 10800)  # street seconds: the radio link is lost in the third hour
START_UNIX = 1767286800  # 2026-01-01 17:00 UTC, dusk in Amsterdam: the lamp acts
PARTS = {
    "lighting": ("lamp", "power", "light", "rtc", "status_led"),
    "parking": ("magnetometer", "indicator", "rtc", "status_led"),
    "air": ("pm", "climate", "no2", "rtc", "status_led"),
}
# The driver modules hal_machine opens for those parts on the boards of boards/.
DRIVERS = {
    "lighting": ("ina219", "pcf8563"),
    "parking": ("qmc5883l", "pcf8563"),
    "air": ("pm_uart", "bme280", "pcf8563"),
}


def board_code(role):
    """Import what a board of `role` runs besides the app: its HAL and the drivers it opens.
    Returns the HAL class."""
    from citisense_firmware.hal_machine import MachineHal

    for driver in DRIVERS[role]:
        __import__("citisense_firmware.drivers." + driver)
    return MachineHal


def scripted_hal(MachineHal):
    """The scripted board: the board's own MachineHal with the hardware calls scripted.
    Made here so that importing this harness does not import the firmware (the heap
    baseline is taken before the app is loaded)."""

    class VmHal(MachineHal):
        def __init__(self, role, speed):
            MachineHal.__init__(self, {})
            self.parts = PARTS[role]
            self.speed = speed
            self._t0 = time.ticks_ms()
            self._street0 = 0  # street ms at _t0
            self.level = 0
            self.outputs = 0
            self.fed = 0

        def street_ms(self):
            return self._street0 + time.ticks_diff(time.ticks_ms(), self._t0) * self.speed

        def set_speed(self, speed):
            self._street0 = self.street_ms()
            self._t0 = time.ticks_ms()
            self.speed = speed

        def ticks_ms(self):
            return self.street_ms() & TICKS_MASK

        async def sleep_ms(self, ms):
            await asyncio.sleep_ms(max(1, ms // self.speed))

        def unix(self):
            return START_UNIX + self.street_ms() // 1000

        def rtc_time(self):
            return None  # power-on: the node takes its time from the network

        def set_rtc(self, unix):
            pass

        async def network_time(self, host):
            return self.unix()

        def reset_cause(self):
            return 1  # messages.RESET_POWER_ON

        def watchdog_start(self, timeout_ms):
            pass

        def watchdog_feed(self):
            self.fed += 1

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

        def indicator(self, show):
            pass

        def pm_power(self, on):
            pass

        def pm_reading(self):
            return 8.0 + self.street_ms() % 3, 15.0

        def climate(self):
            return 12.5, 80.0, 1013.2

        def no2_volts(self):
            return 0.62, None

        def status_led(self, on):
            pass

        async def network_up(self, wifi):
            return True

        def rssi(self):
            return -60

    return VmHal


class Broker:
    """What the node's MQTT client sees of a broker: acks, grants, pongs, commands; and
    none of it during the outage (street seconds [start, end)): the connection breaks and
    no new one opens, so the node's queue fills as on a street whose radio link is lost."""

    def __init__(self, hal, commands, outage):
        self.hal = hal
        self.commands = commands
        self.outage = outage
        self.inbox = b""
        self.buffer = b""
        self.ready = asyncio.Event()
        self.published = {}
        self.subscribed = False
        self.connections = 0

    def down(self):
        return self.outage[0] <= self.hal.street_ms() // 1000 < self.outage[1]

    async def open_connection(self, host, port):
        if self.down():
            raise OSError("link down")
        self.inbox = self.buffer = b""
        self.subscribed = False
        self.connections += 1
        return self, self

    def _feed(self, data):
        self.buffer += data
        self.ready.set()

    async def readexactly(self, n):
        while len(self.buffer) < n:
            if self.down():
                raise OSError("link down")
            self.ready.clear()
            await self.ready.wait()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    async def cut(self):
        """Break the connection when the outage starts (the reader is waiting for data)."""
        while not self.down():
            await asyncio.sleep_ms(5)
        self.ready.set()

    def write(self, data):
        if self.down():
            raise OSError("link down")
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
            if leaf == "ack":  # printed at once: what the harness keeps is not the node's heap
                print(ACK_LINE, hexlify(body[4 + n:]).decode())
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


async def run(role, commands, period_s, speed):
    """Figures are the node app's alone: taken relative to the heap before the app is
    imported (this harness, the VM's own objects, and a ROMFS image if one is mounted).

    The VM collects after every GC_THRESHOLD bytes allocated (at its next suspension), so
    a reading is live data plus at most about that much garbage: the heap a board needs
    if its collector runs as the heap fills. The host must collect its JS garbage often
    (MicroPythonVM js_gc_ms): each suspension leaves a few bytes referenced from JS."""
    # C modules on a board, not the app's: os is Python in this VM, machine a stub.
    import os  # noqa: F401

    import machine  # noqa: F401

    gc.threshold(GC_THRESHOLD)
    await _pause()
    base = gc.mem_alloc()

    def heap():
        return gc.mem_alloc() - base

    from citisense_firmware import app

    machine_hal = board_code(role)
    await _pause()
    before = gc.mem_alloc()
    scripted = scripted_hal(machine_hal)
    await _pause()
    base += gc.mem_alloc() - before  # the scripted HAL's class is the harness's, not a board's
    # Slowly while the commands arrive (a large schedule is held for seconds only), then
    # at `speed`: the samples (SAMPLE_MS real time apart) must not step over a command.
    hal = scripted(role, min(speed, COMMAND_SPEED))
    commands_until = (max(at for at, _, _ in commands) + 60) * 1000 if commands else 0
    broker = Broker(hal, commands, OUTAGE_S if period_s > OUTAGE_S[1] else (0, 0))
    asyncio.open_connection = broker.open_connection
    node = app.Node(hal, "/node", "bench", role)
    node.boot(node._load_config())
    await node.prepared_tick()
    await _pause()
    booted = peak = peak_live = heap()
    samples = 0
    delivery = asyncio.create_task(broker.deliver())
    cut = asyncio.create_task(broker.cut())
    node._start()
    while hal.street_ms() < period_s * 1000:
        if hal.speed != speed and hal.street_ms() > commands_until:
            hal.set_speed(speed)
        peak = max(peak, heap())  # live data and the garbage since the last collection
        samples += 1
        if samples % LIVE_EVERY:
            await _pause(SAMPLE_MS)
        else:
            await _pause()
            peak_live = max(peak_live, heap())
            await asyncio.sleep_ms(SAMPLE_MS)
    node._cancel()
    delivery.cancel()
    cut.cancel()
    await _pause()
    settled = heap()
    modules = sorted(name for name in sys.modules if name.startswith("citisense"))
    print(json.dumps({
        "booted": booted, "peak": peak, "peak_live": peak_live, "settled": settled,
        "samples": samples,
        "modules": modules, "published": broker.published,
        "outputs": hal.outputs, "fed": hal.fed, "street_s": hal.street_ms() // 1000,
        "connections": broker.connections,
    }))
