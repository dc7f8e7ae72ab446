"""Desired state pushed to nodes: schedule and configuration assignment, drift, rollout.

The twin holds what each node should run (desired) and what it said it runs (reported:
the birth's schedule version and config hash, a schedule command's ack). When they
differ after a birth (a node replaced, reflashed, reset to defaults) or at a periodic
sweep, the desired schedule or settings are pushed again. A push the node refused
(`failed`) is not repeated: that needs an operator.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from citisense_gateway import twin as twins
from citisense_gateway.commands import CommandError, Commands, args_from_json
from citisense_gateway.schedules import wire_of
from citisense_gateway.store.base import Command, IngestBatch, NotFound, Store
from citisense_protocols import messages

log = logging.getLogger("citisense.reconcile")
GATEWAY_USER = "gateway"


@dataclass(frozen=True)
class RolloutEntry:
    node_id: int
    desired: int | None
    reported: int | None
    state: str  # running | pending | sent | failed | expired | unknown


class Reconciler:
    def __init__(self, store: Store, commands: Commands,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.commands = commands
        self.clock = clock

    async def _lighting(self, node_ids: list[int]) -> None:
        for node_id in node_ids:
            node = await self.store.get_node(node_id)
            if node.role != "lighting":
                raise CommandError(f"node {node_id} is a {node.role} node: schedules are for "
                                   "lighting nodes")

    async def assign_schedule(self, name: str, node_ids: list[int], user: str,
                              version: int | None = None) -> list[Command]:
        """Make schedule `name` (latest version unless given) desired on the nodes, push it."""
        if not node_ids:
            raise CommandError("no nodes to assign the schedule to")
        rec = await self.store.get_schedule(name, version)
        await self._lighting(node_ids)
        await self.store.set_desired_schedule(node_ids, rec.name, rec.version)
        await self.store.audit(user, "schedule.assign", rec.name,
                               {"version": rec.version, "nodes": node_ids})
        return await self.commands.issue(node_ids, messages.OP_SCHEDULE, wire_of(rec), user=user,
                                         note=f"schedule {rec.name} v{rec.version}")

    async def assign_config(self, settings: dict[str, object], node_ids: list[int], user: str
                            ) -> list[Command]:
        commands = await self.commands.issue(node_ids, messages.OP_SET_CONFIG, settings,
                                             user=user, note="configuration")
        await self.store.set_desired_config(node_ids, json.dumps(settings, sort_keys=True))
        return commands

    async def rollout(self, name: str) -> list[RolloutEntry]:
        """Per node assigned schedule `name`: which version it runs and where its push is."""
        entries = []
        for t in await self.store.twins():
            if t.desired_schedule != name:
                continue
            state = "running" if t.reported_schedule == t.desired_version else "unknown"
            if state != "running":
                last = await self._last_schedule_command(t.node_id)
                if last is not None:
                    state = last.state
            entries.append(RolloutEntry(t.node_id, t.desired_version, t.reported_schedule, state))
        return entries

    async def _last_schedule_command(self, node_id: int) -> Command | None:
        for command in await self.store.commands(node_id, limit=50):
            if command.opcode == messages.OP_SCHEDULE:
                return command
        return None

    async def observe(self, batch: IngestBatch) -> None:
        """After an ingest commit: confirmations in acks, drift in births."""
        for ack in batch.acks:
            if ack.state != "acked":
                continue
            try:
                command = await self.store.get_command(ack.command_id)
            except NotFound:
                continue
            if command.opcode == messages.OP_SCHEDULE:
                version = args_from_json(command.opcode, command.args)[0]
                await self.store.set_reported_schedule(ack.node_id, version)
            elif command.opcode == messages.OP_SET_CONFIG:
                await self.store.confirm_config(ack.node_id, "")  # hash comes with next birth
        for update in batch.twins.values():
            if update.birth_seq is not None:
                await self.check(update.node_id)

    async def check(self, node_id: int) -> None:
        try:
            t = await self.store.twin(node_id)
        except NotFound:
            return
        if t.desired_config is not None and t.confirmed_config == "":
            await self.store.confirm_config(node_id, t.config_hash)
        elif twins.config_drift(t) and t.desired_config is not None:
            log.info("node %d config drifted; pushing settings again", node_id)
            await self.commands.issue([node_id], messages.OP_SET_CONFIG,
                                      json.loads(t.desired_config), user=GATEWAY_USER,
                                      note="config drift")
        if twins.schedule_drift(t) and t.desired_schedule and t.desired_version:
            last = await self._last_schedule_command(node_id)
            if (last is not None and last.state == "failed"
                    and args_from_json(last.opcode, last.args)[0] == t.desired_version):
                return  # the node refused this version: an operator must look
            log.info("node %d runs schedule version %s, wants %s; pushing", node_id,
                     t.reported_schedule, t.desired_version)
            rec = await self.store.get_schedule(t.desired_schedule, t.desired_version)
            await self.commands.issue([node_id], messages.OP_SCHEDULE, wire_of(rec),
                                      user=GATEWAY_USER,
                                      note=f"schedule {rec.name} v{rec.version} (drift)")

    async def sweep(self) -> None:
        for t in await self.store.twins():
            if twins.schedule_drift(t) or twins.config_drift(t):
                await self.check(t.node_id)
