"""The fleet in worker processes: the shared timer, and a worker driven over its pipe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from citisense_gateway.store import open_store
from citisense_protocols import messages
from citisense_tools import fleet, fleet_procs
from citisense_tools.fleet_hal import Ticker


async def test_ticker_wakes_every_sleeper_and_skips_the_cancelled() -> None:
    ticker = Ticker(resolution=0.01, precise=0.0)
    woke: list[int] = []

    async def sleeper(n: int) -> None:
        await ticker.sleep(0.02)
        woke.append(n)

    tasks = [asyncio.create_task(sleeper(n)) for n in range(5)]
    await asyncio.sleep(0)
    tasks[2].cancel()  # a node powered off mid-sleep
    await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(woke) == [0, 1, 3, 4]
    assert tasks[2].cancelled()


def test_nodes_are_dealt_round_robin_so_each_worker_gets_every_role() -> None:
    roles = fleet.role_sequence(20, fleet.DEFAULT_MIX)
    specs = [fleet.NodeSpec(n + 1, role, bytes(32), "pw", 0.0, 0.0)
             for n, role in enumerate(roles)]
    shares = fleet_procs.split(specs, 2)
    assert sorted(s.node_id for share in shares for s in share) == list(range(1, 21))
    assert all({s.role for s in share} == {"lighting", "parking", "air"} for share in shares)


def test_the_open_files_limit_is_raised_at_most_to_the_hard_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert fleet_procs.raise_open_files(soft) == soft  # never lowered
    if hard != resource.RLIM_INFINITY:
        assert fleet_procs.raise_open_files(hard + 1000) == hard


@pytest.mark.broker
async def test_a_worker_runs_its_nodes_and_cuts_their_network(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
    await store.open()
    try:
        specs = await fleet.provision_nodes(store, 3)
    finally:
        await store.close()
    broker = fleet.local_broker(tmp_path / "broker", specs, "gateway", "gateway-password")
    with broker:
        worker = fleet_procs.FleetProcess(specs, f"mqtt://127.0.0.1:{broker.port}",
                                          tmp_path / "fleet", radio=True)
        worker.start()
        try:
            assert await worker.request("wait_connected", 60.0) == 3
            await worker.request("record")
            await worker.request("link", False)
            assert (await worker.request("status"))["connected"] == 0
            await worker.request("link", True)
            assert await worker.request("wait_connected", 60.0) == 3
            recorded = await worker.request("recorded")
            # Each node came back with a new birth, queued to be sent.
            assert sorted(recorded) == [s.node_id for s in specs]
            assert all(any(kind == messages.BIRTH for kind, *_ in records)
                       for records in recorded.values())
            with pytest.raises(RuntimeError, match="no_such_request"):
                await worker.request("no_such_request")
        finally:
            await worker.stop()
