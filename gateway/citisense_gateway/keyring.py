"""Node keys and roles from the registry, cached for the ingest and downlink paths.

A node added while the gateway runs (another process wrote the shared database) is
found by a refresh on the first miss; misses refresh at most once per `min_interval`
so a flood of unknown node ids cannot turn into a flood of queries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from citisense_gateway.auth import MacKey
from citisense_gateway.store.base import Store


@dataclass(frozen=True, slots=True)
class NodeKey:
    node_id: int
    role: str
    key: bytes
    mac: MacKey


class KeyRing:
    def __init__(self, store: Store, min_interval: float = 1.0) -> None:
        self._store = store
        self._keys: dict[int, NodeKey] = {}
        self._min_interval = min_interval
        self._refreshed = -1e9
        self.generation = 0  # counts refreshes: whoever cached a key looks again after one

    async def refresh(self) -> None:
        nodes = await self._store.nodes()
        self._keys = {n.node_id: NodeKey(n.node_id, n.role, n.mac_key, MacKey(n.mac_key))
                      for n in nodes}
        self._refreshed = time.monotonic()
        self.generation += 1

    def get(self, node_id: int) -> NodeKey | None:
        return self._keys.get(node_id)

    async def find(self, node_id: int) -> NodeKey | None:
        """The node's key, refreshing the cache on a miss (rate-limited)."""
        found = self._keys.get(node_id)
        if found is None and time.monotonic() - self._refreshed >= self._min_interval:
            await self.refresh()
            found = self._keys.get(node_id)
        return found

    def __len__(self) -> int:
        return len(self._keys)
