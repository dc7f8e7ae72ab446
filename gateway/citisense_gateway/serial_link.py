"""Serial concentrators (RS-485 buses, radio modems, rigs): framed uplinks in, acks out.

Each port carries COBS/CRC frames (citisense_protocols.framing) from any number of nodes.
Uplinks go through the same ingest pipeline as MQTT; once one is stored, the node gets an
uplink-ack (kind 17) naming its (boot, seq), signed with its key and the next downlink
counter, so it can drop the message from its queue. Commands for a node last heard on a
port are written to that port.
"""

from __future__ import annotations

import asyncio
import logging

import serial_asyncio_fast

from citisense_gateway.ingest import Ingest, Outcome
from citisense_gateway.keyring import KeyRing
from citisense_gateway.metrics import Metrics
from citisense_gateway.store.base import Store
from citisense_protocols import framing, messages

log = logging.getLogger("citisense.serial")


class SerialLink:
    def __init__(self, port: str, baudrate: int, ingest: Ingest, keyring: KeyRing, store: Store,
                 metrics: Metrics) -> None:
        self.port = port
        self.baudrate = baudrate
        self.name = f"serial:{port}"
        self.ingest = ingest
        self.keyring = keyring
        self.store = store
        self.metrics = metrics
        self._writer: asyncio.StreamWriter | None = None
        self._acks: asyncio.Queue[Outcome] = asyncio.Queue()
        self.connected = asyncio.Event()

    async def run(self) -> None:
        acker = asyncio.create_task(self._send_acks())
        delay = 0.5
        try:
            while True:
                try:
                    reader, writer = await serial_asyncio_fast.open_serial_connection(
                        url=self.port, baudrate=self.baudrate)
                except (OSError, ValueError) as err:
                    log.warning("cannot open serial port %s: %s", self.port, err)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                delay = 0.5
                self._writer = writer
                self.connected.set()
                log.info("serial port open", extra={"port": self.port, "baud": self.baudrate})
                try:
                    await self._read(reader)
                except OSError as err:
                    log.warning("serial port %s failed: %s", self.port, err)
                finally:
                    self.connected.clear()
                    self._writer = None
                    writer.close()
        finally:
            acker.cancel()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = framing.FrameDecoder()
        counted = {"bad-cobs": 0, "bad-crc": 0, "oversize": 0}
        while True:
            data = await reader.read(4096)
            if not data:
                raise OSError("port closed")
            for message in decoder.feed(data):
                self.ingest.offer(self, None, message, 0)
            for reason, now in (("bad-cobs", decoder.bad_cobs), ("bad-crc", decoder.bad_crc),
                                ("oversize", decoder.oversize)):
                if now > counted[reason]:
                    self.metrics.serial_frames_dropped.labels(self.port, reason).inc(
                        now - counted[reason])
                    counted[reason] = now

    def acknowledge(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.accepted:
                self._acks.put_nowait(outcome)

    async def _send_acks(self) -> None:
        while True:
            outcome = await self._acks.get()
            try:
                node = await self.keyring.find(outcome.node_id)
                if node is None:
                    continue
                counter = await self.store.next_counter(outcome.node_id)
                body = messages.uplink_ack(outcome.node_id, counter, outcome.boot, outcome.seq)
                await self.write_message(messages.encode_signed(node.key, body))
            except Exception as err:  # the node resends; it is acked when stored again
                log.warning("uplink-ack to node %d on %s failed: %s", outcome.node_id,
                            self.port, err)

    async def write_message(self, message: bytes) -> None:
        if self._writer is None:
            raise OSError(f"serial port {self.port} is not open")
        self._writer.write(framing.encode_frame(message))
        await self._writer.drain()
