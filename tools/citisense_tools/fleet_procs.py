"""A fleet spread over worker processes, each driven from the parent over a pipe.

One CPython process runs a few thousand simulated nodes; a city's worth needs several.
Each worker runs fleet.Fleet for its share of the nodes on its own copy of the street
(every copy's clock anchored at the same instant, so they all show the same time) and
answers the parent's requests between its nodes' work:

    workers = [FleetProcess(share, broker, folder, radio=True) for share in split(specs, 2)]
    for worker in workers:
        worker.start()
    await asyncio.gather(*(w.request("wait_connected", 120.0) for w in workers))
    await workers[0].request("link", False)         # its nodes' network goes down
    ...
    await asyncio.gather(*(w.stop() for w in workers))

Requests (see Worker): status, wait_connected, link, record, recorded, lag; stop().
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import importlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from citisense_boards.street import Street, StreetClock
from citisense_tools.fleet import Fleet, NodeSpec

_uplink: Any = importlib.import_module("citisense_firmware.uplink")

# Descriptors a node costs its process: its socket (and a spare, for a reconnection).
FILES_PER_NODE = 2
SPARE_FILES = 256
LAG_PROBE_S = 0.05
LAG_SAMPLES = 100_000


def raise_open_files(needed: int) -> int:
    """Raise this process's soft limit on open files towards `needed` (never above the hard
    limit, which only root may raise); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def process_usage() -> dict[str, float]:
    """CPU seconds and peak resident memory of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "max_rss_mib": peak_rss_mib("self")}


def peak_rss_mib(pid: int | str) -> float:
    """Peak resident memory of a process (since its exec: ru_maxrss would also count the
    process that spawned it)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def tune_collector() -> None:
    """Garbage collection for a process full of nodes, once they have booted.

    Their boot-time objects live for good: frozen, the collector never walks them again.
    Every sleeping node holds a few young objects (its coroutine, future, timer), tens of
    thousands at any time, which outlive the young collections and pile into the old
    generation; at the default thresholds that brings a full collection every fraction
    of a second, each stalling all the process's nodes. Fewer, larger young collections
    (which still free the little cyclic garbage the nodes make) and rare full ones: with
    5000 nodes on this 2-core machine the 99th percentile of the event loop's lag fell
    from 210-310 ms to about 70 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Radio:
    """The street's network, for a process that runs nothing but nodes: while it is down,
    every node's live connection is cut and every new one fails at once, as with the
    access point gone.

    The nodes' MQTT client (firmware mqtt.py) connects with asyncio.open_connection, so
    the gate sits there, for this whole process. Unlike fleet.Radio (a relay, for a fleet
    sharing its process with others) it costs the nodes' messages no extra hop through
    the event loop, no extra sockets and no CPU.
    """

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.up = True
        self._open = asyncio.open_connection

    def install(self) -> None:
        asyncio.open_connection = self._gated

    async def _gated(self, *args: Any, **kwargs: Any) -> Any:
        if not self.up:
            raise OSError(errno.ENETUNREACH, "the street's network is down")
        return await self._open(*args, **kwargs)

    def set_up(self, up: bool) -> None:
        self.up = up
        self.fleet.street.wifi.up = up
        if up:
            return
        for spec in self.fleet.specs:
            node = self.fleet.node(spec.node_id)
            client = None if node is None else node.client
            writer = None if client is None else client._writer  # the node's socket
            if writer is not None:
                writer.transport.abort()  # the node and the broker both see it cut


class Worker:
    """The worker side: one Fleet and the requests the parent may make of it."""

    def __init__(self, fleet: Fleet, radio: Radio | None = None) -> None:
        self.fleet = fleet
        self.radio = radio
        self._recorded: dict[int, list[tuple[int, int, int, float]]] | None = None
        self._lags: list[float] = []

    async def watch_lag(self) -> None:
        """How late the event loop runs what is due: a node's message waits that long."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            self._lags.append(loop.time() - due)
            del self._lags[:-LAG_SAMPLES]

    def lag(self) -> dict[str, float]:
        """Event loop lag (ms) since the last call: median, 99th percentile, worst."""
        lags, self._lags = sorted(self._lags), []
        if not lags:
            return {}
        return {"p50_ms": round(lags[len(lags) // 2] * 1000, 1),
                "p99_ms": round(lags[int(len(lags) * 0.99)] * 1000, 1),
                "max_ms": round(lags[-1] * 1000, 1)}

    def _nodes(self) -> list[Any]:
        return [self.fleet.node(spec.node_id) for spec in self.fleet.specs]

    def connected(self) -> int:
        return sum(1 for node in self._nodes()
                   if node is not None and node.client is not None and node.client.connected)

    def status(self) -> dict[str, Any]:
        """Nodes, connected ones, their queues, boots and crashes, and this process's use."""
        nodes = self._nodes()
        stores = [node.store for node in nodes if node is not None and hasattr(node, "store")]
        slots = [spec.node_id for spec in self.fleet.specs]
        return {"nodes": len(nodes), "connected": self.connected(),
                "queued": sum(store.depth for store in stores),
                "drops": sum(store.drops for store in stores),
                "boots": sum(self.fleet.boots(node_id) for node_id in slots),
                "pid": os.getpid(), **process_usage()}

    async def wait_connected(self, timeout: float) -> int:
        """Wait until every node is connected (or `timeout` s); how many are."""
        deadline = time.monotonic() + timeout
        while self.connected() < len(self.fleet.specs) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        tune_collector()
        return self.connected()

    def link(self, up: bool) -> None:
        if self.radio is None:
            self.fleet.set_link(up)
        else:
            self.radio.set_up(up)

    def record(self) -> None:
        """From now on, note (kind, boot, seq, time) of every record each node queues.

        Wraps each running node's queue; nodes keep running (a restart would make a new
        queue, unrecorded: status() counts boots, so a caller can tell).
        """
        recorded: dict[int, list[tuple[int, int, int, float]]] = {}
        self._recorded = recorded
        for spec in self.fleet.specs:
            queue = self.fleet.node(spec.node_id).store
            original = queue.push

            def push(record: bytes, original: Any = original, node_id: int = spec.node_id
                     ) -> None:
                kind, boot, seq, _ = _uplink.unpack_record(record)
                recorded.setdefault(node_id, []).append((kind, boot, seq, time.time()))
                original(record)

            queue.push = push

    def recorded(self) -> dict[int, list[tuple[int, int, int, float]]]:
        """What record() noted since the last call (and forgets it)."""
        if self._recorded is None:
            return {}
        noted = dict(self._recorded)
        self._recorded.clear()
        return noted


def _serve(conn: multiprocessing.connection.Connection, specs: list[NodeSpec], broker: str,
           directory: str, speed: float, seed: int, anchor: tuple[float, float], radio: bool,
           traffic: bool, boot_rate: float | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, flushing the queues
    raise_open_files(FILES_PER_NODE * len(specs) + SPARE_FILES)
    # Every process's street clock shows the same time: anchored at one shared instant.
    street_start, real_start = anchor
    street = Street(clock=StreetClock(start=street_start + (time.time() - real_start) * speed,
                                      speed=speed), seed=seed)
    fleet = Fleet(specs, broker, Path(directory), street=street, seed=seed, traffic=traffic,
                  boot_rate=boot_rate)
    gate = Radio(fleet) if radio else None
    if gate is not None:
        gate.install()
    asyncio.run(_main(conn, Worker(fleet, gate)))


async def _main(conn: multiprocessing.connection.Connection, worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, tuple[Any, ...]] | None] = asyncio.Queue()

    def readable() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except (EOFError, OSError):  # the parent is gone
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(None)

    fleet = worker.fleet
    await fleet.start()
    probe = asyncio.create_task(worker.watch_lag())
    loop.add_reader(conn.fileno(), readable)
    try:
        while (request := await inbox.get()) is not None:
            name, args = request
            if name == "stop":
                break
            try:
                result = getattr(worker, name)(*args)
                if asyncio.iscoroutine(result):
                    result = await result
                conn.send((True, result))
            except Exception as err:
                conn.send((False, f"{type(err).__name__}: {err}"))
    finally:
        probe.cancel()
        await fleet.stop()
    with contextlib.suppress(OSError):
        conn.send((True, None))


class FleetProcess:
    """The parent's handle on one worker process."""

    def __init__(self, specs: Sequence[NodeSpec], broker: str, directory: Path, *,
                 speed: float = 1.0, seed: int = 0, anchor: tuple[float, float] | None = None,
                 radio: bool = False, traffic: bool = True, boot_rate: float | None = None
                 ) -> None:
        now = time.time()
        self.specs = list(specs)
        self._conn, child = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(child, self.specs, broker, str(directory), speed, seed,
                                 anchor or (now, now), radio, traffic, boot_rate), daemon=True)
        self._child = child
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self) -> None:
        self._process.start()
        self._child.close()

    async def request(self, name: str, *args: Any) -> Any:
        """Ask the worker (Worker.<name>(*args)) and wait for its answer."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            self._conn.send((name, args))
            ok, result = await loop.run_in_executor(None, self._conn.recv)
        if not ok:
            raise RuntimeError(f"fleet worker {self.pid}: {name}: {result}")
        return result

    async def stop(self, timeout: float = 60.0) -> None:
        """Stop the nodes cleanly (no wills, queues flushed) and end the process."""
        if self._process.is_alive():
            with contextlib.suppress(OSError, EOFError):
                async with self._lock:
                    self._conn.send(("stop", ()))
                    await asyncio.wait_for(
                        asyncio.get_running_loop().run_in_executor(None, self._conn.recv),
                        timeout)
        await asyncio.get_running_loop().run_in_executor(None, self._process.join, 10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._conn.close()


def split(specs: Sequence[NodeSpec], processes: int) -> list[list[NodeSpec]]:
    """Nodes dealt over `processes` workers role by role, so that each gets its share of
    every role (plain round robin would follow the street's repeating role pattern)."""
    shares: list[list[NodeSpec]] = [[] for _ in range(processes)]
    by_role = sorted(specs, key=lambda spec: spec.role)  # stable: street order within a role
    for index, spec in enumerate(by_role):
        shares[index % processes].append(spec)
    return [sorted(share, key=lambda spec: spec.node_id) for share in shares]
