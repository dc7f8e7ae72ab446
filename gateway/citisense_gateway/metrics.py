"""Prometheus metrics of one gateway instance, served at /metrics.

Each instance has its own registry (tests run several gateways in one process). Hot-path
counts are added once per committed batch, not per message.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from citisense_gateway.twin import STATUSES
from citisense_gateway.uplink import REASONS

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "citisense_ingest_received", "Uplink payloads received, per transport",
            ["transport"], registry=r)
        self.stored = Counter(
            "citisense_ingest_stored", "Uplink messages stored (decoded, verified, durable)",
            ["kind"], registry=r)
        self.duplicates = Counter(
            "citisense_ingest_duplicates",
            "Uplinks received again after being stored (redeliveries, retries), not stored twice",
            registry=r)
        self.late = Counter(
            "citisense_ingest_late",
            "Uplinks stored though older than the replay window: redelivered after newer "
            "ones of their node were stored (by another ingest worker or instance), never "
            "stored before, and within retention", registry=r)
        self.rejected = Counter(
            "citisense_ingest_rejected",
            "Uplinks refused and quarantined, by reason (malformed and invalid are decode "
            "errors, bad-mac MAC errors)", ["reason"], registry=r)
        for reason in REASONS:
            self.rejected.labels(reason)
        self.batches = Histogram(
            "citisense_ingest_batch_size", "Messages per committed batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000), registry=r)
        self.commit_lag = Histogram(
            "citisense_ingest_lag_seconds",
            "From receipt of the oldest message of a batch to its durable commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.node_lag = Gauge(
            "citisense_ingest_node_lag_seconds",
            "Receipt time minus the node's own timestamp, last message with real time",
            registry=r)
        self.store_errors = Counter(
            "citisense_store_errors", "Failed store transactions (retried)", registry=r)
        self.mqtt_connected = Gauge(
            "citisense_mqtt_connected", "1 while the ingest MQTT session is up", registry=r)
        self.serial_frames_dropped = Counter(
            "citisense_serial_frames_dropped", "Serial frames dropped, by port and reason",
            ["port", "reason"], registry=r)
        self.nodes = Gauge(
            "citisense_nodes", "Registered nodes by liveness", ["status"], registry=r)
        for status in STATUSES:
            self.nodes.labels(status)
        self.commands = Counter(
            "citisense_commands", "Commands by final state", ["state"], registry=r)
        self.command_sends = Counter(
            "citisense_command_sends", "Command transmissions, retries included", registry=r)
        self.command_latency = Histogram(
            "citisense_command_latency_seconds", "From a command's first send to its ack",
            buckets=LATENCY_BUCKETS, registry=r)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on a daemon thread; returns the bound port (port 0: any free one)."""
        server, _thread = start_http_server(port, host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def stop(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
