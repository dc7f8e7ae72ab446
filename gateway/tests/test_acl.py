"""Broker files from the registry: Mosquitto-compatible hashes, one subtree per node."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_gateway import acl


def test_hashes_are_mosquitto_hashes(tmp_path: Path) -> None:
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(tmp_path / "pw"), "u", "pa ss"],
                   check=True, capture_output=True)
    theirs = (tmp_path / "pw").read_text().strip().split(":", 1)[1]
    assert acl.verify_password("pa ss", theirs)
    assert not acl.verify_password("pass", theirs)
    ours = acl.hash_password("pa ss")
    assert ours.startswith(f"$7${acl.ITERATIONS}$") and acl.verify_password("pa ss", ours)
    assert not acl.verify_password("x", "$6$garbage")


def test_each_node_gets_exactly_its_subtree() -> None:
    accounts = [acl.gateway_account("gateway", "$7$1$a$b"), acl.node_account(1042, "$7$1$c$d")]
    text = acl.acl_file(accounts)
    assert "user 1042\ntopic read citisense/v1/1042/down/#\ntopic write citisense/v1/1042/up/#" \
        in text
    assert "user gateway\ntopic read citisense/v1/+/up/#\ntopic write citisense/v1/+/down/#" \
        in text
    assert acl.password_file(accounts) == "gateway:$7$1$a$b\n1042:$7$1$c$d\n"
    node = accounts[1]
    assert acl.allowed(node, "citisense/v1/1042/up/telemetry", write=True)
    assert not acl.allowed(node, "citisense/v1/1043/up/telemetry", write=True)
    assert not acl.allowed(node, "citisense/v1/1042/down/command", write=True)
    assert acl.allowed(node, "citisense/v1/1042/down/#", write=False)
    assert not acl.allowed(node, "citisense/v1/+/down/#", write=False)
    assert not acl.allowed(node, "#", write=False)


@pytest.mark.parametrize("user", ["", "a b", "x:y", "+", "#", "a/b", "%u", "x\ny"])
def test_unsafe_user_names_are_refused(user: str) -> None:
    with pytest.raises(acl.AclError):
        acl.acl_file([acl.Account(user, "$7$1$a$b", (), ())])


@given(st.lists(st.sampled_from(["a", "b", "+"]), min_size=1, max_size=4),
       st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=4))
def test_filter_matching_follows_mqtt(filter_parts: list[str], topic_parts: list[str]) -> None:
    expected = len(filter_parts) == len(topic_parts) and all(
        f in ("+", t) for f, t in zip(filter_parts, topic_parts, strict=True))
    assert acl.matches("/".join(filter_parts), "/".join(topic_parts)) == expected
    assert acl.matches("/".join(filter_parts[:1]) + "/#", "/".join(topic_parts)) == (
        filter_parts[0] in ("+", topic_parts[0]))
