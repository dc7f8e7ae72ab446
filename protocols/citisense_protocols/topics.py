"""MQTT topic names: one subtree per node, so broker ACLs can confine a node to its own.

    citisense/v1/<node>/up/<birth|telemetry|event|health|ack|will>   node -> gateway
    citisense/v1/<node>/down/<command|ack>                          gateway -> node

<node> is the node id in decimal without leading zeros (1..4294967295). Gateways share
the uplink through an MQTT 5 shared subscription. Runs on MicroPython and CPython.
"""

from citisense_protocols import messages
from citisense_protocols.errors import MessageError

PREFIX = "citisense/v1/"
UP = "up"
DOWN = "down"
# Topic leaf -> kind, per direction (down/ack carries the uplink-ack).
UPLINK_LEAVES = {
    "birth": messages.BIRTH,
    "telemetry": messages.TELEMETRY,
    "event": messages.EVENT,
    "health": messages.HEALTH,
    "ack": messages.ACK,
    "will": messages.WILL,
}
DOWNLINK_LEAVES = {"command": messages.COMMAND, "ack": messages.UPLINK_ACK}
GATEWAY_GROUP = "gateways"


def topic(node: int, kind: int) -> str:
    """The topic a message of `kind` to or from `node` is published on."""
    _check_node(node)
    for leaves, direction in ((UPLINK_LEAVES, UP), (DOWNLINK_LEAVES, DOWN)):
        for leaf, leaf_kind in leaves.items():
            if leaf_kind == kind:
                return f"{PREFIX}{node}/{direction}/{leaf}"
    raise MessageError(f"no topic for kind {kind}")


def node_filter(node: int) -> str:
    """What a node subscribes to: every downlink topic of its own subtree."""
    _check_node(node)
    return f"{PREFIX}{node}/{DOWN}/#"


def gateway_filter(group: str = GATEWAY_GROUP) -> str:
    """The shared subscription by which gateways of `group` split the uplink of all nodes."""
    return f"$share/{group}/{PREFIX}+/{UP}/#"


def parse(name: str | bytes) -> tuple[int, int]:
    """(node, kind) of a citisense topic; MessageError for any other topic."""
    if isinstance(name, bytes):  # MicroPython MQTT clients hand topics over as bytes
        try:
            name = name.decode()
        except UnicodeError:
            raise MessageError("topic is not UTF-8") from None
    parts = name.split("/")
    if len(parts) != 5 or parts[0] + "/" + parts[1] + "/" != PREFIX:
        raise MessageError(f"topic must be {PREFIX}<node>/<up|down>/<kind>")
    node = _parse_node(parts[2])
    if parts[3] == UP:
        leaves = UPLINK_LEAVES
    elif parts[3] == DOWN:
        leaves = DOWNLINK_LEAVES
    else:
        raise MessageError("topic direction must be up or down")
    kind = leaves.get(parts[4])
    if kind is None:
        raise MessageError(f"unknown {parts[3]} topic kind")
    return node, kind


def check(name: str | bytes, body: dict[int, object]) -> None:
    """MessageError unless `body` belongs on topic `name` (its node and kind).

    A node's key authenticates the body, the broker ACL the topic: a receiver needs both
    to agree, or a node could publish into another node's subtree or under another kind.
    """
    node, kind = parse(name)
    if body.get(messages.KEY_NODE) != node:
        raise MessageError(f"body node does not match topic node {node}")
    if body.get(messages.KEY_KIND) != kind:
        raise MessageError(f"body kind does not match topic kind {kind}")


def _check_node(node: int) -> None:
    if type(node) is not int or not 1 <= node <= messages.U32:
        raise MessageError("node id must be an integer in 1..4294967295")


def _parse_node(text: str) -> int:
    # Decimal digits only, no sign or leading zero: one node, one topic spelling.
    if not 1 <= len(text) <= 10 or text[0] == "0" or not all("0" <= c <= "9" for c in text):
        raise MessageError("topic node must be a decimal id in 1..4294967295")
    node = int(text)
    if node > messages.U32:
        raise MessageError("topic node must be a decimal id in 1..4294967295")
    return node
