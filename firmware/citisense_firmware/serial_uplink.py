"""The node's serial link (RS-485 bus, radio modem, test rig): framed messages both ways.

Out: every queued uplink as one frame (framing.encode_frame: COBS + CRC-32). In: frames
carrying signed downlinks, handed to commands.Downlink, which runs commands and reports
uplink-acks (kind 17: the gateway stored [boot, seq] durably) back here.

A serial line has no broker to acknowledge delivery, so forward() sends a batch and
forgets from the store only the leading run of messages the gateway has acknowledged;
the rest is sent again after `ack_timeout`. Noise on the line costs a resend, never a
message.

reader/writer: anything with `await read(n)`, `write(data)` and `await drain()`: on
an ESP32 asyncio.StreamReader(uart) / asyncio.StreamWriter(uart, {}), on CPython the
streams of pyserial-asyncio or a pty, and UartStream where asyncio cannot poll a UART
(the WebAssembly port behind the virtual board).
"""

import asyncio

from citisense_firmware.uplink import unpack_record
from citisense_protocols.framing import FrameDecoder, encode_frame

READ_CHUNK = 64


class UartStream:
    """Reader and writer over a machine.UART by polling `any()`: for ports whose asyncio
    has no stream support. A UART buffers what arrives between polls."""

    def __init__(self, uart, poll: float = 0.01) -> None:
        self._uart = uart
        self._poll = poll

    async def read(self, n: int) -> bytes:
        while True:
            waiting = self._uart.any()
            if waiting:
                return self._uart.read(min(n, waiting)) or b""
            await asyncio.sleep(self._poll)

    def write(self, data: bytes) -> None:
        self._uart.write(data)

    async def drain(self) -> None:
        await asyncio.sleep(0)


class Rs485Writer:
    """Drives the transceiver only while sending: the bus is shared with other nodes."""

    def __init__(self, uart, enable) -> None:
        self._uart = uart
        self._enable = enable

    def write(self, data: bytes) -> None:
        self._enable.value(1)
        self._uart.write(data)
        self._uart.flush()  # returns once the last bit left: then release the bus
        self._enable.value(0)

    async def drain(self) -> None:
        await asyncio.sleep(0)


class SerialLink:
    def __init__(
        self, reader, writer, downlink, store, batch: int = 4, ack_timeout: float = 2
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._downlink = downlink
        self._store = store
        self.batch = batch
        self.ack_timeout = ack_timeout
        self.decoder = FrameDecoder()  # counts frames and why others were dropped
        self.sent = 0
        self.resends = 0  # batches not fully acknowledged in time
        self._lock = asyncio.Lock()
        self._waiting = []  # [boot, seq, acknowledged] of the batch on the line
        self._acked = asyncio.Event()
        downlink.on_uplink_ack = self._uplink_ack

    async def send(self, message: bytes) -> None:
        """Write one message as one frame."""
        frame = encode_frame(message)
        async with self._lock:
            self._writer.write(frame)
            await self._writer.drain()
        self.sent += 1

    async def receive(self) -> None:
        """Read frames until the line closes; downlinks go to the Downlink."""
        while True:
            data = await self._reader.read(READ_CHUNK)
            if not data:
                return
            for message in self.decoder.feed(data):
                await self._downlink.handle(message)

    def _uplink_ack(self, boot: int, seq: int) -> None:
        for entry in self._waiting:
            if entry[0] == boot and entry[1] == seq:
                entry[2] = True
                self._acked.set()
                return

    def _confirmed(self) -> int:
        count = 0
        for entry in self._waiting:
            if not entry[2]:
                break
            count += 1
        return count

    async def forward(self, idle: float = 1) -> None:
        """Send queued records forever; forget each once the gateway acknowledged it."""
        while True:
            self._store.poll()
            records = self._store.peek(self.batch)
            if not records:
                await asyncio.sleep(idle)
                continue
            await self.forward_batch(records)

    async def forward_batch(self, records: list) -> int:
        """Send `records` (the store's head) and ack the store for the confirmed run."""
        drops = self._store.drops
        self._waiting = []
        for record in records:
            _, boot, seq, message = unpack_record(record)
            self._waiting.append([boot, seq, False])
            await self.send(message)
        while self._confirmed() < len(records):
            self._acked.clear()
            try:
                await asyncio.wait_for(self._acked.wait(), self.ack_timeout)
            except asyncio.TimeoutError:  # noqa: UP041 (MicroPython has no builtin one)
                self.resends += 1
                break
        confirmed = self._confirmed()
        self._waiting = []
        # A full store drops its oldest records, which are the head of this batch.
        done = confirmed - (self._store.drops - drops)
        if done > 0:
            self._store.ack(done)
        return confirmed
