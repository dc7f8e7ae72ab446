"""`citisense demo`: the whole product on embedded defaults, on one machine.

A gateway with its embedded MQTT broker and SQLite store, a fleet of simulated nodes
running the real firmware app under CPython (lighting, parking and air quality on a
simulated street whose clock runs faster than real time), and a status line every few
seconds read back from the gateway's store. Everything lives under --dir, wiped at
start so every run begins from a clean registry. Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shutil
import signal
import socket
import time
from pathlib import Path

from citisense_gateway import config, twin
from citisense_gateway.api.accounts import Accounts
from citisense_gateway.config import GatewayConfig
from citisense_gateway.service import Gateway
from citisense_gateway.store import open_store
from citisense_gateway.store.sql import SqlStore
from citisense_tools.board_modules import REPO
from citisense_tools.fleet import Fleet, NodeSpec, provision_nodes

STATUS_EVERY_S = 5.0
ROLES = ("lighting", "parking", "air")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="run gateway, embedded broker and a simulated fleet; Ctrl-C stops"
    )
    parser.add_argument("--nodes", type=int, default=12, help="simulated nodes (default 12)")
    parser.add_argument(
        "--speed", type=float, default=60.0, help="street seconds per real second (default 60)"
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


async def provision(settings: GatewayConfig, count: int) -> tuple[list[NodeSpec], str]:
    """Register the fleet and a demo admin before the gateway starts.

    The admin's password is random, made for this run and shown once: there is no
    default account, not even in the demo.
    """
    store = open_store(settings.store_url)
    await store.open()
    try:
        specs = await provision_nodes(store, count)
        assert isinstance(store, SqlStore)
        accounts = Accounts(store.db)
        await accounts.open()
        password = secrets.token_urlsafe(12)
        await accounts.add_user("admin", password, "admin", by="citisense demo")
        return specs, password
    finally:
        await store.close()


async def status_line(gateway: Gateway, fleet: Fleet, started: float) -> str:
    assert gateway.store is not None
    counts = await gateway.update_liveness(time.time())
    stored = await gateway.store.count_uplinks()
    refused = await gateway.store.count_quarantined()
    street = time.strftime("%H:%M", time.gmtime(fleet.street.now()))
    return (
        f"[{time.time() - started:6.0f} s] street {street} UTC | nodes online "
        f"{counts[twin.ONLINE]}/{len(fleet.specs)} | uplinks stored {stored} | refused {refused}"
    )


async def main(args: argparse.Namespace) -> None:
    directory: Path = args.dir
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    settings = demo_config(directory)
    Path(settings.gateway.data_dir).mkdir(parents=True)
    specs, password = await provision(settings, args.nodes)

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
    print("Ctrl-C stops.")
    started = time.time()
    fleet = Fleet(specs, broker, directory / "fleet", speed=args.speed)
    await fleet.start()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
            print(await status_line(gateway, fleet, started), flush=True)
            if args.seconds and time.time() - started >= args.seconds:
                stop.set()
    finally:
        print("stopping: fleet, then gateway (commits what it holds)")
        await fleet.stop()
        await gateway.stop()
    print(f"stopped cleanly; data kept in {directory}")


def run(args: argparse.Namespace) -> int:
    asyncio.run(main(args))
    return 0
