"""Device twin logic (pure): what uplinks teach about a node, liveness, drift.

Liveness: a birth makes a node online, an accepted will offline; a node whose last
message is older than `stale_after` is stale (silent, but no will either: a dead link, a
broker restart, a node stuck before it could send).
Drift: the schedule version or configuration a node reports differs from the desired one;
the gateway then pushes the desired one again.
"""

from __future__ import annotations

from typing import Any

from citisense_gateway.store.base import Twin, TwinUpdate
from citisense_gateway.uplink import data_json
from citisense_protocols import messages

ONLINE = "online"
OFFLINE = "offline"
STALE = "stale"
NEVER_SEEN = "never-seen"
STATUSES = (ONLINE, OFFLINE, STALE, NEVER_SEEN)


def learn(update: TwinUpdate | None, body: dict[int, Any], received_at: float,
          via: str) -> TwinUpdate:
    """Fold one accepted uplink into the batch's update for its node (arrival order)."""
    node = body[messages.KEY_NODE]
    if update is None:
        update = TwinUpdate(node_id=node, last_seen=received_at, via=via)
    else:
        if received_at > update.last_seen:
            update.last_seen = received_at
        update.via = via
    kind = body[messages.KEY_KIND]
    data = body[messages.KEY_DATA]
    update.online = kind != messages.WILL
    if kind == messages.BIRTH:
        update.boot = body[messages.KEY_BOOT]
        update.birth_seq = body[messages.KEY_SEQ]
        update.firmware = data[0]
        update.board = data[2]
        update.config_hash = data[3].hex()
        update.reset_cause = data[4]
        update.schedule_version = data.get(6)
    elif kind == messages.HEALTH:
        update.health = data_json(data)
        update.firmware = data[8]
    elif kind == messages.TELEMETRY and len(data) == 5:  # parking
        update.bay_state = data[0]
        update.indicator = data[1]
    elif kind == messages.EVENT and data[0] in (messages.EV_BAY_OCCUPIED, messages.EV_BAY_FREE):
        update.bay_state = 1 if data[0] == messages.EV_BAY_OCCUPIED else 0
    return update


def liveness(twin: Twin, now: float, stale_after: float) -> str:
    if twin.last_seen is None:
        return NEVER_SEEN
    if not twin.online:
        return OFFLINE
    if now - twin.last_seen > stale_after:
        return STALE
    return ONLINE


def schedule_drift(twin: Twin) -> bool:
    """The node runs another schedule version than the one assigned to it."""
    return twin.desired_version is not None and twin.reported_schedule != twin.desired_version


def config_drift(twin: Twin) -> bool:
    """The node's configuration hash changed since it confirmed the desired settings."""
    return (
        twin.desired_config is not None
        and twin.confirmed_config is not None
        and twin.config_hash != twin.confirmed_config
    )
