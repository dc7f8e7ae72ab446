"""The CBOR codec on CPython: byte-for-byte agreement with cbor2, and every decode error."""

from __future__ import annotations

import math
import struct
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citisense_protocols import cbor
from citisense_protocols.cbor import UNDEFINED, Simple, Tag, dumps, loads
from citisense_protocols.errors import DecodeError, WireError

scalars = (
    st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats()
    | st.floats(width=32)
    | st.floats(width=16)
    | st.text()
    | st.binary()
    | st.booleans()
    | st.none()
)
keys = st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Type-exact equality; floats by bit pattern except that all NaNs are equal."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    return bool(a == b)


# ---- agreement with cbor2 ----


@settings(max_examples=400)
@given(values)
def test_dumps_matches_cbor2_canonical(value: object) -> None:
    assert dumps(value) == cbor2.dumps(value, canonical=True)


@settings(max_examples=400)
@given(values)
def test_loads_reads_what_cbor2_writes(value: object) -> None:
    assert same(loads(cbor2.dumps(value), max_size=1 << 20), value)
    assert same(loads(cbor2.dumps(value, canonical=True), max_size=1 << 20), value)


@settings(max_examples=200)
@given(values)
def test_cbor2_reads_what_dumps_writes(value: object) -> None:
    assert same(cbor2.loads(dumps(value)), value)


@given(st.lists(st.integers() | st.text(), max_size=5).map(tuple))
def test_tuple_encodes_as_array(value: tuple[object, ...]) -> None:
    assert dumps(value) == cbor2.dumps(value, canonical=True) == dumps(list(value))


def test_bytes_like_objects_encode_as_byte_strings() -> None:
    assert dumps(bytearray(b"ab")) == dumps(memoryview(b"ab")) == dumps(b"ab") == b"\x42ab"
    assert loads(bytearray(b"\x42ab")) == loads(memoryview(b"\x42ab")) == b"ab"


def test_map_keys_sort_length_first_like_cbor2() -> None:
    # Bytewise order (RFC 8949 §4.2.1) would put 24 (1818) before -1 (20) and 1000
    # (1903e8) before "a" (6161); cbor2 canonical=True puts the shorter key first.
    for value in ({24: 0, -1: 0}, {"a": 0, 1000: 0}, {"b": 0, "aa": 0, b"": 0, 0.5: 0}):
        assert dumps(value) == cbor2.dumps(value, canonical=True)
    assert dumps({24: 0, -1: 0}).hex() == "a22000181800"


@pytest.mark.parametrize(
    ("value", "hex_"),
    [
        (0.0, "f90000"),
        (-0.0, "f98000"),
        (65504.0, "f97bff"),  # largest f16
        (65505.0, "fa477fe100"),
        (65536.0, "fa47800000"),  # just beyond f16 range
        (2.0**-24, "f90001"),  # smallest f16 subnormal
        (2.0**-25, "fa33000000"),
        (2.0**-14 - 2.0**-24, "f903ff"),  # largest f16 subnormal
        (2049.0, "fa45001000"),  # needs 12 significant bits
        (2.0**-149, "fa00000001"),  # smallest f32 subnormal
        (2.0**-150, "fb3690000000000000"),
        (3.4028234663852886e38, "fa7f7fffff"),
        (3.4028235e38, "fb47efffffe54daff8"),  # beyond f32 max, rounds to it
        (1e-40, "fb37a16c262777579c"),
        (float("inf"), "f97c00"),
        (float("-inf"), "f9fc00"),
        (float("nan"), "f97e00"),
        (-float("nan"), "f97e00"),
        (struct.unpack(">d", bytes.fromhex("7ff0000000000001"))[0], "f97e00"),  # payload dropped
    ],
)
def test_float_takes_shortest_exact_form(value: float, hex_: str) -> None:
    assert dumps(value).hex() == hex_ == cbor2.dumps(value, canonical=True).hex()


@given(st.floats(width=16, allow_nan=False))
def test_every_f16_value_encodes_in_three_bytes(value: float) -> None:
    encoded = dumps(value)
    assert len(encoded) == 3
    assert same(loads(encoded), value)


@given(st.integers(min_value=0, max_value=0xFFFF))
def test_every_f16_bit_pattern_decodes_like_cbor2(bits: int) -> None:
    data = b"\xf9" + bits.to_bytes(2, "big")
    assert same(loads(data), cbor2.loads(data))


@pytest.mark.parametrize(
    ("value", "hex_"),
    [
        (2**64 - 1, "1bffffffffffffffff"),
        (2**64, "c249010000000000000000"),
        (-(2**64), "3bffffffffffffffff"),
        (-(2**64) - 1, "c349010000000000000000"),
        (2**128, "c25101" + "00" * 16),
    ],
)
def test_integers_beyond_64_bits_are_bignums(value: int, hex_: str) -> None:
    assert dumps(value).hex() == hex_
    assert loads(bytes.fromhex(hex_)) == value


@pytest.mark.parametrize(
    ("hex_", "value"),
    [
        ("c240", 0),  # empty magnitude
        ("c34100", -1),
        ("c2420001", 1),  # leading zeros are well-formed
        ("c25f4101420203ff", 0x10203),  # indefinite byte string content
    ],
)
def test_bignum_forms_decode_to_int(hex_: str, value: int) -> None:
    assert loads(bytes.fromhex(hex_)) == value


def test_tags_simple_values_and_undefined_round_trip() -> None:
    value = [Tag(1, 1363896240), Tag(0xFFFFFFFFFFFFFFFF, [Simple(0)]), Simple(255), UNDEFINED]
    encoded = dumps(value)
    assert encoded.hex() == "84c11a514b67b0dbffffffffffffffff81e0f8fff7"
    assert loads(encoded) == value
    assert loads(b"\xf7") is UNDEFINED
    assert loads(bytes.fromhex("a1c10102")) == {Tag(1, 1): 2}  # a tag is a valid map key


@pytest.mark.parametrize("n", [20, 23, 24, 31, 256, -1])
def test_simple_rejects_assigned_and_reserved_values(n: int) -> None:
    with pytest.raises(ValueError):
        Simple(n)


@pytest.mark.parametrize("value", [{1, 2}, object(), 1j, {"a": frozenset()}])
def test_dumps_rejects_unsupported_types(value: object) -> None:
    with pytest.raises(TypeError):
        dumps(value)


def test_dumps_refuses_nesting_loads_would_reject() -> None:
    deepest: list[Any] = []
    for _ in range(cbor.MAX_DEPTH - 1):
        deepest = [deepest]
    assert loads(dumps(deepest)) == deepest
    with pytest.raises(ValueError, match="nesting deeper than 16"):
        dumps([deepest])
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError):
        dumps(cyclic)


# ---- decode errors: each names its reason and byte offset ----

BAD_INPUTS = [
    # truncation
    ("", "truncated", 0),
    ("18", "truncated", 0),
    ("1bffffff", "truncated", 0),
    ("62ff", "truncated", 0),
    ("8301", "truncated", 0),
    ("a1", "truncated", 0),
    ("82011900", "truncated", 2),
    ("9f01", "truncated", 0),
    ("5f4101", "truncated", 0),
    ("c1", "truncated", 1),
    ("fa0000", "truncated", 0),
    # declared lengths far beyond the input fail before allocating
    ("5b1000000000000000", "truncated", 0),
    ("7bffffffffffffffff", "truncated", 0),
    ("9b1000000000000000", "truncated", 0),
    ("bbffffffffffffffff", "truncated", 0),
    ("9a7fffffff00", "truncated", 0),
    # trailing data
    ("0000", "trailing bytes", 1),
    ("80ff", "trailing bytes", 1),
    # reserved additional information, for every major type
    *(
        (f"{major << 5 | ai:02x}", f"reserved additional information {ai}", 0)
        for major in range(8)
        for ai in (28, 29, 30)
    ),
    ("82001c", "reserved additional information 28", 2),
    # indefinite length where none is allowed; break outside an indefinite item
    ("1f", "indefinite length for major type 0", 0),
    ("3f", "indefinite length for major type 1", 0),
    ("df", "indefinite length for major type 6", 0),
    ("ff", "break outside", 0),
    ("8200ff", "break outside", 2),
    ("bf01ff", "break outside", 2),  # break where a value is due
    # chunks of indefinite strings
    ("5f6161ff", "wrong chunk type", 1),
    ("7f4161ff", "wrong chunk type", 1),
    ("5f5f4101ffff", "wrong chunk type", 1),
    ("7f01ff", "wrong chunk type", 1),
    # invalid UTF-8
    ("61ff", "invalid UTF-8", 0),
    ("61c3", "invalid UTF-8", 0),
    ("62c080", "invalid UTF-8", 0),  # overlong NUL
    ("63eda080", "invalid UTF-8", 0),  # surrogate
    ("64f4908080", "invalid UTF-8", 0),  # above U+10FFFF
    ("8263e6b0b462e6b0", "invalid UTF-8", 5),
    ("7f61c361bcff", "invalid UTF-8", 1),  # a chunk must not split a character
    # simple values and bignums
    ("f81f", "simple value 31 in two-byte form", 0),
    ("c263616263", "bignum content is not a byte string", 0),
    # map keys
    ("a1800102", "map key is an array or map", 1),
    ("a1a00102", "map key is an array or map", 1),
    ("a1c18001", "map key holds an array or map", 1),
    ("a2010201f5", "duplicate map key", 3),
    ("a26161016161f5", "duplicate map key", 4),
    ("a201f5f93c00f4", "duplicate map key", 3),  # 1 and 1.0 are one Python key
    ("bf0102010203ff", "duplicate map key", 3),
]


@pytest.mark.parametrize(("hex_", "reason", "offset"), BAD_INPUTS)
def test_bad_input_raises_decode_error_with_reason_and_offset(
    hex_: str, reason: str, offset: int
) -> None:
    with pytest.raises(DecodeError) as caught:
        loads(bytes.fromhex(hex_))
    assert reason in caught.value.reason
    assert caught.value.offset == offset
    assert f"at byte {offset}" in str(caught.value)
    assert isinstance(caught.value, WireError)


def _nested(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


def test_depth_limit_is_exact() -> None:
    assert loads(_nested(16)) is not None
    with pytest.raises(DecodeError, match="nesting deeper than 16 at byte 16"):
        loads(_nested(17))
    with pytest.raises(DecodeError, match="nesting deeper than 2 at byte 2"):
        loads(bytes.fromhex("c1c1c100"), max_depth=2)  # tags nest too
    with pytest.raises(DecodeError, match="nesting deeper than 0"):
        loads(b"\x9f\xff", max_depth=0)
    assert loads(b"\x00", max_depth=0) == 0


def test_item_limit_is_exact() -> None:
    at_limit = b"\x99\x01\xff" + b"\x00" * 511  # 1 array + 511 items
    assert loads(at_limit) == [0] * 511
    over = b"\x99\x02\x00" + b"\x00" * 512
    with pytest.raises(DecodeError, match="more than 512 data items at byte 0"):
        loads(over)
    indefinite = b"\x9f" + b"\x00" * 512 + b"\xff"
    with pytest.raises(DecodeError, match="more than 512 data items at byte 512"):
        loads(indefinite)
    assert loads(over, max_items=513) == [0] * 512
    with pytest.raises(DecodeError, match="more than 3 data items at byte 3"):
        loads(bytes.fromhex("bf01020304ff"), max_items=3)


def test_size_limit_is_exact() -> None:
    at_limit = b"\x59\x0f\xfd" + b"x" * 4093
    assert len(at_limit) == 4096
    assert loads(at_limit) == b"x" * 4093
    over = b"\x59\x0f\xfe" + b"x" * 4094
    with pytest.raises(DecodeError, match="message of 4097 bytes exceeds the 4096-byte limit"):
        loads(over)
    assert loads(over, max_size=5000) == b"x" * 4094


UTF8_PIECES = [
    *(
        chr(c).encode("utf-8", "surrogatepass")
        for c in (
            0x41,
            0x80,
            0x7FF,
            0x800,
            0xD7FF,
            0xD800,
            0xDFFF,
            0xE000,
            0xFFFF,
            0x10000,
            0x10FFFF,
        )
    ),
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x9f\xbf",
    b"\xf0\x8f\xbf\xbf",  # overlong
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\x80",
    b"\xff",  # beyond U+10FFFF, stray
]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(UTF8_PIECES) | st.binary(max_size=3), max_size=6).map(b"".join))
def test_utf8_validator_agrees_with_cpython(raw: bytes) -> None:
    # CPython's codec is already strict, so loads() only runs this validator on
    # MicroPython; prove here that it accepts exactly what CPython accepts.
    try:
        raw.decode("utf-8")
        strict = True
    except UnicodeDecodeError:
        strict = False
    assert cbor._valid_utf8(raw) is strict
