"""The gateway's fast COSE_Mac0 path accepts and refuses exactly what the contract does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_gateway import auth
from citisense_protocols import mac
from citisense_protocols.errors import DecodeError

keys = st.binary(min_size=32, max_size=32)
bodies = st.binary(max_size=600)


@given(keys, bodies)
def test_same_tag_and_body_as_the_contract(key: bytes, body: bytes) -> None:
    message = mac.sign(key, body)
    assert auth.unwrap(message) == mac.unwrap(message) == (body, message[-8:])
    assert auth.MacKey(key).tag(body) == message[-8:]
    assert auth.MacKey(key).check(body, message[-8:])


def _outcome(fn: object, message: bytes) -> object:
    assert callable(fn)
    try:
        return fn(message)
    except DecodeError:
        return "refused"


@given(keys, bodies, st.lists(st.tuples(st.integers(0, 700), st.integers(0, 255)), max_size=3),
       st.integers(-3, 3))
def test_mutated_messages_get_the_contract_verdict(key: bytes, body: bytes,
                                                   flips: list[tuple[int, int]],
                                                   trim: int) -> None:
    message = bytearray(mac.sign(key, body))
    for pos, value in flips:
        if pos < len(message):
            message[pos] = value
    data = bytes(message[: len(message) + trim] if trim < 0 else message + bytes(trim))
    assert _outcome(auth.unwrap, data) == _outcome(mac.unwrap, data)
    # open(): the body exactly when the contract unwraps it and the key made its tag.
    verdict = _outcome(mac.unwrap, data)
    expected = verdict if verdict == "refused" or not isinstance(verdict, tuple) else (
        verdict[0] if auth.MacKey(key).check(*verdict) else None)
    assert _outcome(auth.MacKey(key).open, data) == expected


@given(st.binary(max_size=80))
def test_random_bytes_get_the_contract_verdict(data: bytes) -> None:
    assert _outcome(auth.unwrap, b"\x84\x40\xa0" + data) == _outcome(mac.unwrap,
                                                                     b"\x84\x40\xa0" + data)


def test_wrong_key_or_tag_fails_the_check() -> None:
    key = bytes(range(32))
    message = mac.sign(key, b"\xa0")
    body, tag = auth.unwrap(message)
    assert not auth.MacKey(bytes(32)).check(body, tag)
    assert not auth.MacKey(key).check(body, bytes(8))
    assert auth.MacKey(key).open(message) == b"\xa0"
    assert auth.MacKey(bytes(32)).open(message) is None
    assert auth.MacKey(key).open(message[:-1] + bytes([message[-1] ^ 1])) is None
    with pytest.raises(ValueError, match="32 bytes"):
        auth.MacKey(b"short")
