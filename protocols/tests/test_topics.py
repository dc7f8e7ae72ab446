"""MQTT topic names: one subtree per node, parsed strictly, on CPython and MicroPython."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_boards.mpvm import MicroPythonVM
from citisense_protocols import messages as m
from citisense_protocols import topics
from citisense_protocols.messages import MessageError

UPLINK_KINDS = [m.BIRTH, m.TELEMETRY, m.EVENT, m.HEALTH, m.ACK, m.WILL]
DOWNLINK_KINDS = [m.COMMAND, m.UPLINK_ACK]
ALL_KINDS = UPLINK_KINDS + DOWNLINK_KINDS
nodes = st.integers(1, m.U32)


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (MQTT 5 §4.7), shared-subscription prefix removed."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    levels = topic.split("/")
    for i, level in enumerate(topic_filter.split("/")):
        if level == "#":
            return True
        if i >= len(levels) or level not in ("+", levels[i]):
            return False
    return len(levels) == len(topic_filter.split("/"))


def test_topics_are_the_documented_names() -> None:
    assert [topics.topic(1042, kind) for kind in ALL_KINDS] == [
        "citisense/v1/1042/up/birth",
        "citisense/v1/1042/up/telemetry",
        "citisense/v1/1042/up/event",
        "citisense/v1/1042/up/health",
        "citisense/v1/1042/up/ack",
        "citisense/v1/1042/up/will",
        "citisense/v1/1042/down/command",
        "citisense/v1/1042/down/ack",
    ]
    assert topics.node_filter(1042) == "citisense/v1/1042/down/#"
    assert topics.gateway_filter() == "$share/gateways/citisense/v1/+/up/#"
    assert topics.gateway_filter("site-a") == "$share/site-a/citisense/v1/+/up/#"


@given(nodes, st.sampled_from(ALL_KINDS))
def test_parse_inverts_topic(node: int, kind: int) -> None:
    name = topics.topic(node, kind)
    assert topics.parse(name) == (node, kind)
    assert topics.parse(name.encode()) == (node, kind)


@given(nodes, nodes, st.sampled_from(ALL_KINDS))
def test_filters_confine_each_party_to_its_topics(node: int, other: int, kind: int) -> None:
    name = topics.topic(node, kind)
    uplink = kind in UPLINK_KINDS
    assert matches(topics.gateway_filter(), name) == uplink
    assert matches(topics.node_filter(node), name) == (not uplink)
    if other != node:
        assert not matches(topics.node_filter(other), name)


@pytest.mark.parametrize("name", [
    "citisense/v1/0/up/telemetry",  # node 0 is never assigned
    "citisense/v1/01042/up/telemetry",  # one node, one spelling
    "citisense/v1/+1042/up/telemetry",
    "citisense/v1/-1/up/telemetry",
    "citisense/v1/4294967296/up/telemetry",
    "citisense/v1/99999999999/up/telemetry",
    "citisense/v1//up/telemetry",
    "citisense/v1/1042/up/command",  # a downlink kind on the uplink side
    "citisense/v1/1042/down/telemetry",
    "citisense/v1/1042/down/uplink-ack",
    "citisense/v1/1042/sideways/telemetry",
    "citisense/v1/1042/up/telemetry/extra",
    "citisense/v1/1042/up",
    "citisense/v2/1042/up/telemetry",
    "other/v1/1042/up/telemetry",
    "citisense/v1/1 042/up/telemetry",
    "citisense/v1/١٠٤٢/up/telemetry",  # Arabic-Indic digits: int() would take them
    "",
])
def test_parse_refuses_foreign_topics(name: str) -> None:
    with pytest.raises(MessageError):
        topics.parse(name)


def test_parse_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(MessageError, match="not UTF-8"):
        topics.parse(b"citisense/v1/\xff/up/will")


@pytest.mark.parametrize("node", [0, -1, m.U32 + 1, True, "7"])
def test_topic_refuses_bad_node_ids(node: object) -> None:
    with pytest.raises(MessageError, match="node id"):
        topics.topic(node, m.TELEMETRY)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="node id"):
        topics.node_filter(node)  # type: ignore[arg-type]


def test_topic_refuses_unknown_kinds() -> None:
    with pytest.raises(MessageError, match="no topic for kind 7"):
        topics.topic(1, 7)


def test_check_binds_the_body_to_its_topic() -> None:
    body = m.uplink(m.TELEMETRY, 1042, 3, 1, 0, 0, [0, 0, None, None, None, 0])
    topics.check("citisense/v1/1042/up/telemetry", body)
    with pytest.raises(MessageError, match="body node does not match topic node 1043"):
        topics.check("citisense/v1/1043/up/telemetry", body)
    with pytest.raises(MessageError, match="body kind does not match topic kind 4"):
        topics.check("citisense/v1/1042/up/health", body)
    ack = m.uplink_ack(1042, 9, 3, 1)
    topics.check(b"citisense/v1/1042/down/ack", ack)


MP_TOPICS = """
import json
from citisense_protocols import topics
from citisense_protocols.messages import MessageError
out = [[topics.topic(n, k) for n in (1, 1042, 4294967295) for k in %r]]
out.append([topics.node_filter(7), topics.gateway_filter()])
for name in %r:
    try:
        out.append(list(topics.parse(name[2:].encode() if name.startswith('b:') else name)))
    except MessageError as e:
        out.append(e.reason)
print(json.dumps(out))
"""


@pytest.mark.micropython
def test_micropython_names_and_parses_topics_like_cpython(mp: MicroPythonVM) -> None:
    names = [topics.topic(n, k) for n in (1, 1042, m.U32) for k in ALL_KINDS] + [
        "citisense/v1/01042/up/telemetry", "citisense/v1/0/up/will",
        "citisense/v1/4294967296/up/will", "citisense/v1/7/down/birth", "citisense/v1/7/up",
        "citisense/v1/7/sideways/will", "b:citisense/v1/7/up/will",
    ]

    def cpython(name: str) -> object:
        try:
            return list(topics.parse(name[2:].encode() if name.startswith("b:") else name))
        except MessageError as error:
            return error.reason

    expected = [[topics.topic(n, k) for n in (1, 1042, m.U32) for k in ALL_KINDS],
                [topics.node_filter(7), topics.gateway_filter()]] + [cpython(n) for n in names]
    assert json.loads(mp.run(MP_TOPICS % (ALL_KINDS, names))) == expected
