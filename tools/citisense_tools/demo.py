"""`citisense demo`: the whole product on embedded defaults, on one machine.

A gateway with its embedded MQTT broker and SQLite store, a fleet of simulated nodes
running the real firmware app under CPython (lighting, parking and air quality on a
simulated street whose clock runs faster than real time), a few virtual ESP32 boards
running the real firmware on the MicroPython VM, installed as a technician does it
(demo_boards.py: build, provision, flash; on a street of their own at real time), and a
status line every few seconds read back from the gateway's store. Everything lives under
--dir, wiped at start so every run begins from a clean registry. Ctrl-C stops it cleanly:
boards, then fleet, then gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from citisense_gateway import config, twin
from citisense_gateway.api.accounts import Accounts
from citisense_gateway.config import GatewayConfig
from citisense_gateway.service import Gateway
from citisense_gateway.store import open_store
from citisense_gateway.store.sql import SqlStore
from citisense_tools import demo_boards
from citisense_tools.board_modules import REPO
from citisense_tools.demo_boards import Bench
from citisense_tools.fleet import Fleet, NodeSpec, provision_nodes

STATUS_EVERY_S = 5.0
ROLES = ("lighting", "parking", "air")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="run gateway, embedded broker and a simulated fleet; Ctrl-C stops"
    )
    parser.add_argument("--nodes", type=int, default=12, help="simulated nodes (default 12)")
    parser.add_argument(
        "--boards", type=int, default=2,
        help="virtual ESP32 boards running the real firmware, at real time (default 2: "
             "parking and air; then lighting)"
    )
    parser.add_argument(
        "--speed", type=float, default=60.0,
        help="street seconds per real second of the simulated fleet (default 60)"
    )
    parser.add_argument(
        "--dir", type=Path, default=REPO / "var" / "demo", help="working folder, wiped at start"
    )
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="stop by itself after this long (0: never)"
    )
    parser.set_defaults(run=run)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def demo_config(directory: Path) -> GatewayConfig:
    """Embedded broker and SQLite under the demo folder, on free loopback ports."""
    return config.load(
        None,
        environ={},
        overrides={
            "gateway.data_dir": str(directory / "gateway"),
            "gateway.log_format": "text",
            "gateway.log_level": "warning",
            "embedded_broker.port": free_port(),
            "metrics.port": free_port(),
            "api.port": free_port(),
        },
    )


async def provision(settings: GatewayConfig, count: int,
                    bench: Bench) -> tuple[list[NodeSpec], str]:
    """Register the fleet, the boards' nodes and a demo admin before the gateway starts
    (its embedded broker takes the nodes' accounts from the registry when it starts).

    The admin's password is random, made for this run and shown once: there is no
    default account, not even in the demo.
    """
    store = open_store(settings.store_url)
    await store.open()
    try:
        specs = await provision_nodes(store, count)
        await bench.provision(store, "127.0.0.1", settings.embedded_broker.port)
        assert isinstance(store, SqlStore)
        accounts = Accounts(store.db)
        await accounts.open()
        password = secrets.token_urlsafe(12)
        await accounts.add_user("admin", password, "admin", by="citisense demo")
        return specs, password
    finally:
        await store.close()


async def status_line(gateway: Gateway, fleet: Fleet, bench: Bench, started: float) -> str:
    """One line: the fleet's and the boards' nodes online (their twins' liveness), what
    the store holds."""
    assert gateway.store is not None
    now = time.time()
    stale_after = gateway.config.liveness.stale_after
    online = {t.node_id for t in await gateway.store.twins()
              if twin.liveness(t, now, stale_after) == twin.ONLINE}
    stored = await gateway.store.count_uplinks()
    refused = await gateway.store.count_quarantined()
    street = time.strftime("%H:%M", time.gmtime(fleet.street.now()))
    line = (f"[{now - started:6.0f} s] street {street} UTC | nodes online "
            f"{sum(s.node_id in online for s in fleet.specs)}/{len(fleet.specs)}")
    if bench.boards:
        line += (f" | boards online {sum(n in online for n in bench.node_ids)}/"
                 f"{len(bench.boards)}{bench.notes()}")
    return line + f" | uplinks stored {stored} | refused {refused}"


async def main(args: argparse.Namespace) -> None:
    # Printed to the stream of the start: opening a board's serial link swaps sys.stdout
    # for a moment (board_link quiets mpremote), from another thread.
    out = sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    demo_boards.check_count(args.boards)
    # Absolute: the store URL made from it would take a relative path as one from /.
    directory: Path = args.dir.resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    settings = demo_config(directory)
    Path(settings.gateway.data_dir).mkdir(parents=True)
    boards = args.boards
    missing = demo_boards.unavailable() if boards else None
    if missing:
        print(f"boards: none started: {missing}")
        boards = 0
    bench = Bench(directory / "boards", boards)
    specs, password = await provision(settings, args.nodes, bench)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    gateway = Gateway(settings)
    await gateway.start()
    broker = f"mqtt://127.0.0.1:{settings.embedded_broker.port}"
    print(f"gateway: embedded broker {broker}, store {settings.store_url}")
    print(f"dashboard: http://127.0.0.1:{gateway.api_port}/  (user admin, password {password})")
    print(f"metrics: http://127.0.0.1:{gateway.metrics_port}/metrics")
    roles = ", ".join(f"{sum(s.role == r for s in specs)} {r}" for r in ROLES)
    print(f"fleet: {len(specs)} simulated nodes ({roles}) at {args.speed:g}x street time")
    if bench.boards:
        ids = ", ".join(str(n) for n in bench.node_ids)
        print(f"boards: {len(bench.boards)} virtual ESP32 ({bench.roles_text()}; nodes {ids}) "
              f"running the real firmware at {demo_boards.SPEED:g}x street time (the "
              "firmware's watchdog runs in street time); booting and flashing them now")
    print("Ctrl-C stops.", flush=True)
    started = time.time()
    fleet = Fleet(specs, broker, directory / "fleet", speed=args.speed)
    try:
        await fleet.start()
        bench.start(say)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
            for news in bench.news():
                say(news)
            say(await status_line(gateway, fleet, bench, started))
            if args.seconds and time.time() - started >= args.seconds:
                stop.set()
    finally:
        say(f"stopping: {'boards, ' if bench.boards else ''}fleet, then gateway (commits "
            "what it holds)")
        await bench.stop()
        await fleet.stop()
        await gateway.stop()
    say(f"stopped cleanly; data kept in {directory}")


def run(args: argparse.Namespace) -> int:
    asyncio.run(main(args))
    return 0
