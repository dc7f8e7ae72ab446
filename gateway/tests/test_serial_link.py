"""A serial concentrator on a pseudo-terminal: framed uplinks in (through noise), one signed
uplink-ack per stored message out, and commands to a node last heard on the port."""

from __future__ import annotations

import asyncio
import os
import select
import tty
from pathlib import Path

from gwkit import eventually, gateway_overrides, opened, provision
from test_gateway_broker import metric

from citisense_gateway import config
from citisense_gateway.service import Gateway
from citisense_gateway.simnode import SimNode
from citisense_protocols import framing, messages


class Wire:
    """The node side of the serial line (the pty master)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.decoder = framing.FrameDecoder()
        self.received: list[bytes] = []

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    async def read(self, want: int, timeout: float = 10.0) -> list[bytes]:
        """Wait until `want` messages in all arrived; returns them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.received) < want and loop.time() < deadline:
            ready = await asyncio.to_thread(select.select, [self.fd], [], [], 0.05)
            if ready[0]:
                self.received += self.decoder.feed(os.read(self.fd, 4096))
        assert len(self.received) >= want, f"{len(self.received)} of {want} frames"
        return self.received


def acks_of(node: SimNode, frames: list[bytes]) -> list[tuple[int, int, int]]:
    """(counter, boot, seq) of each uplink-ack among the frames, checked with the node's key."""
    result = []
    for frame in frames:
        body = messages.decode_signed(node.key, frame)
        if body[messages.KEY_KIND] == messages.UPLINK_ACK:
            boot, seq = body[messages.KEY_DATA]  # type: ignore[misc]
            result.append((body[messages.KEY_COUNTER], boot, seq))
    return result  # type: ignore[return-value]


def test_serial_uplinks_acks_and_commands(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'gw.db'}"
    master, slave = os.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)

    async def scenario() -> None:
        async with opened(store_url) as store:
            fleet = await provision(store, [(401, "air")])
            node = fleet.nodes[401]
            # No broker configured: the embedded one, as on a fresh machine.
            gateway = Gateway(config.load(environ={}, overrides=gateway_overrides(
                tmp_path, store_url, None, **{"serial.ports": port})))
            await gateway.start()
            wire = Wire(master)
            try:
                await asyncio.wait_for(gateway.serial[0].connected.wait(), 10)
                birth = node.birth()
                reading = node.telemetry()
                corrupt = bytearray(framing.encode_frame(node.telemetry()))
                corrupt[5] ^= 0x40  # a bit error on the line: bad CRC
                wire.send(b"\x13\x37noise" + b"\x00")  # garbage up to a delimiter
                wire.send(framing.encode_frame(birth))
                wire.send(bytes(corrupt))
                wire.send(framing.encode_frame(reading)[:7])  # split across reads
                wire.send(framing.encode_frame(reading)[7:])
                wire.send(framing.encode_frame(reading))  # the node retries: no ack seen
                frames = await wire.read(3)
                acks = acks_of(node, frames)
                assert [(boot, seq) for _, boot, seq in acks] == [(1, 0), (1, 1), (1, 1)]
                counters = [c for c, _, _ in acks]
                assert counters == sorted(set(counters))  # fresh counter per downlink
                assert len(await store.uplinks(401)) == 2
                assert (await store.twin(401)).via == f"serial:{port}"
                dropped = metric(gateway.metrics_port or 0, "citisense_serial_frames_dropped_total")
                assert dropped >= 1

                # A command for a node heard on the serial port goes out on that port.
                issued = await gateway.commands.issue([401], messages.OP_RECALIBRATE, 2,
                                                      user="tech")
                frames = await wire.read(4)
                reply = node.handle(frames[3])
                assert reply is not None and node.commands[0][messages.KEY_OP] == 5
                wire.send(framing.encode_frame(reply))

                async def acked() -> bool:
                    return (await store.get_command(issued[0].command_id)).state == "acked"

                await eventually(acked)
            finally:
                await gateway.stop()

    try:
        asyncio.run(scenario())
    finally:
        os.close(master)
        os.close(slave)
