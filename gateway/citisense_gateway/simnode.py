"""A small CPython node speaking the wire contract, for tests and the ingest benchmark.

It signs uplinks with citisense_protocols exactly as the firmware does, answers commands
(tag, counter window, envelope, expiry, then execute and ack; a repeated id is answered
`duplicate`) and keeps the state a command changes (schedule version, dim override,
reservation). It is a test double, not the firmware: the firmware runs on the virtual
board.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from citisense_gateway import mqtt_wire
from citisense_gateway.mqtt_client import MqttConnection, MqttSettings
from citisense_protocols import cbor, messages, topics
from citisense_protocols.errors import WireError
from citisense_protocols.replay import ReplayWindow

ROLES = {"lighting": messages.LIGHTING, "parking": messages.PARKING, "air": messages.AIR}
SAMPLE = {
    "lighting": [80, 0, 412, 123456, 3, 0],
    "parking": [1, 1, -1234, 97, 0],
    "air": [123, 201, 345, 1875, 654, 10132, 0],
}


class SimNode:
    def __init__(self, node_id: int, key: bytes, role: str = "lighting", boot: int = 1) -> None:
        self.node_id = node_id
        self.key = key
        self.role = role
        self.boot = boot
        self.seq = 0
        self.schedule_version = 0
        self.dim: tuple[int, int] | None = None
        self.reserved: tuple[int, int] | None = None
        self.config_hash = b"\x01" * 8  # of the settings in force (birth `cfg`)
        self.done: set[int] = set()  # command ids executed
        self.window = ReplayWindow()
        self.commands: list[dict[int, Any]] = []  # every command accepted, in order
        self.refused = 0
        self.conn: MqttConnection | None = None

    # -- uplink messages --------------------------------------------------------------------
    def message(self, kind: int, data: object, ts: int | None = None, tq: int = messages.TQ_NTP
                ) -> bytes:
        body = messages.uplink(kind, self.node_id, self.boot, self.seq,
                               int(time.time()) if ts is None else ts, tq, data)
        self.seq += 1
        return messages.encode_signed(self.key, body)

    def telemetry(self, data: list[int | None] | None = None) -> bytes:
        return self.message(messages.TELEMETRY, data or SAMPLE[self.role])

    def birth(self) -> bytes:
        data: dict[int, Any] = {0: "1.0.0", 1: ROLES[self.role], 2: "sim", 3: self.config_hash,
                                4: 1, 5: None}
        if self.role == "lighting":
            data[6] = self.schedule_version
        return self.message(messages.BIRTH, data)

    def ack(self, command_id: int, result: int) -> bytes:
        return self.message(messages.ACK, [command_id, result])

    # -- MQTT -----------------------------------------------------------------------------------
    async def connect(self, host: str, port: int, password: str, version: int = mqtt_wire.MQTT_5
                      ) -> None:
        settings = MqttSettings(host, port, f"node-{self.node_id}", username=str(self.node_id),
                                password=password, version=version, session_expiry=3600,
                                clean_start=False)
        self.conn = await MqttConnection.connect(settings, self._on_command)
        granted = await self.conn.subscribe([(topics.node_filter(self.node_id), 1)])
        if granted[0] >= 0x80:
            raise RuntimeError(f"node {self.node_id} may not subscribe to its commands")

    async def publish(self, kind: int, message: bytes) -> int:
        assert self.conn is not None
        return await self.conn.publish(topics.topic(self.node_id, kind), message)

    async def send_birth(self) -> int:
        return await self.publish(messages.BIRTH, self.birth())

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.disconnect()

    def _on_command(self, conn: MqttConnection, packets: list[mqtt_wire.Publish]) -> None:
        for packet in packets:
            conn.ack([packet.packet_id] if packet.packet_id else [])
            reply = self.handle(packet.payload)
            if reply is not None:
                asyncio.get_running_loop().create_task(
                    conn.publish(topics.topic(self.node_id, messages.ACK), reply))

    def handle(self, message: bytes) -> bytes | None:
        """Check and run one downlink message; the ack to send back, if any."""
        try:
            body: dict[int, Any] = messages.decode_signed(self.key, message)
            if body[messages.KEY_NODE] != self.node_id or body[messages.KEY_KIND] != \
                    messages.COMMAND:
                raise WireError("not a command for this node")
            self.window.accept(body[messages.KEY_COUNTER])
        except WireError:
            self.refused += 1
            return None
        command_id = body[messages.KEY_ID]
        if command_id in self.done:
            return self.ack(command_id, messages.DUPLICATE)
        if body[messages.KEY_EXPIRY] < time.time():
            return self.ack(command_id, messages.EXPIRED)
        self.done.add(command_id)
        self.commands.append(body)
        op, args = body[messages.KEY_OP], body[messages.KEY_DATA]
        if op == messages.OP_SCHEDULE:
            if args[0] <= self.schedule_version:
                return self.ack(command_id, messages.STALE)
            self.schedule_version = args[0]
        elif op == messages.OP_DIM:
            self.dim = (args[0], args[1])
        elif op == messages.OP_RESERVE:
            self.reserved = (args[0], args[1])
        elif op == messages.OP_RELEASE:
            self.reserved = None
        elif op == messages.OP_SET_CONFIG:
            self.config_hash = hashlib.sha256(cbor.dumps(args)).digest()[:8]
        return self.ack(command_id, messages.OK)
