"""Hostile bytes into loads(): only DecodeError escapes, on CPython and on MicroPython.

Inputs are random byte strings and mutations of valid encodings (bit flips, byte
overwrites, truncation, insertion, deletion, duplication, splicing, and inflated length
fields), from a seeded random.Random so every failure reproduces.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from citisense_boards.mpvm import MicroPythonVM
from citisense_protocols.cbor import UNDEFINED, Simple, Tag, dumps, loads
from citisense_protocols.errors import DecodeError

VECTORS_FILE = Path(__file__).with_name("vectors") / "cbor_rfc8949_appendix_a.json"
LARGE_ARGUMENTS = (
    (24, 0xFF),
    (25, 0xFFFF),
    (26, 0x7FFFFFFF),
    (26, 0xFFFFFFFF),
    (27, 1 << 60),
    (27, (1 << 64) - 1),
)


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(12 if depth < 4 else 8)
    if kind == 0:
        return rng.randrange(-(2**70), 2**70) >> rng.randrange(71)
    if kind == 1:
        return struct.unpack(">d", rng.randbytes(8))[0]
    if kind == 2:
        return rng.choice([0.5, -0.0, 65504.0, 1e-7, 3.0e38, float("inf"), float("nan")])
    if kind == 3:
        return "".join(
            chr(rng.choice((0x41, 0xE9, 0x6C34, 0x10151))) for _ in range(rng.randrange(6))
        )
    if kind == 4:
        return rng.randbytes(rng.randrange(6))
    if kind == 5:
        return rng.choice([True, False, None, UNDEFINED, Simple(rng.randrange(20))])
    if kind == 6:
        return rng.randrange(24)
    if kind == 7:
        return rng.choice([2**64, -(2**64) - 1, 2**64 - 1, -(2**64)])
    if kind == 8:
        return Tag(rng.choice((0, 1, 32, 55799, 2**40)), random_value(rng, depth + 1))
    if kind == 9:
        return {
            rng.choice((rng.randrange(-30, 30), "k" * rng.randrange(4))): random_value(
                rng, depth + 1
            )
            for _ in range(rng.randrange(5))
        }
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(6))]


def seed_corpus(rng: random.Random) -> list[bytes]:
    vectors = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    corpus = [bytes.fromhex(v["hex"]) for v in vectors]
    corpus += [dumps(random_value(rng)) for _ in range(300)]
    # Seeds at the limits, so mutations probe both sides of them.
    corpus += [
        b"\x81" * 16 + b"\x00",
        b"\xd8\x20" * 16 + b"\x00",
        b"\x9f" + b"\x00" * 511 + b"\xff",
    ]
    return corpus


def _inflate_length(rng: random.Random, data: bytearray) -> None:
    """Give one head a huge argument (of 1, 2, 4 or 8 bytes) in place of its own."""
    at = rng.randrange(len(data))
    ai, value = rng.choice(LARGE_ARGUMENTS)
    data[at] = (data[at] & 0xE0) | ai
    data[at + 1 : at + 1] = value.to_bytes(1 << (ai - 24), "big")


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(8)
        if not out:
            out.extend(rng.randbytes(rng.randrange(1, 8)))
        elif op == 0:
            at = rng.randrange(len(out))
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif op == 2:
            del out[rng.randrange(len(out)) :]
        elif op == 3:
            at = rng.randrange(len(out) + 1)
            out[at:at] = rng.randbytes(rng.randrange(1, 8))
        elif op == 4:
            at = rng.randrange(len(out))
            del out[at : at + rng.randrange(1, 8)]
        elif op == 5:
            at = rng.randrange(len(out))
            out[at:at] = out[at : at + rng.randrange(1, 16)]
        elif op == 6:
            other = rng.choice(corpus)
            out[rng.randrange(len(out)) :] = other[rng.randrange(len(other) + 1) :]
        else:
            _inflate_length(rng, out)
    return bytes(out)


def hostile_inputs(seed: int, count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    corpus = seed_corpus(rng)
    for _ in range(count):
        if rng.randrange(8) == 0:
            yield rng.randbytes(rng.randrange(24))
        else:
            yield mutate(rng, rng.choice(corpus), corpus)


def outcome(data: bytes) -> str:
    """What loads() makes of data: re-encoded value or the error, as one comparable line."""
    try:
        value = loads(data)
    except DecodeError as error:
        assert error.reason
        assert 0 <= error.offset <= len(data)
        return f"err {error.offset} {error.reason}"
    return "ok " + dumps(value).hex()


def test_100k_hostile_inputs_raise_only_decode_error() -> None:
    decoded = 0
    for data in hostile_inputs(seed=20250601, count=100_000):
        try:
            result = outcome(data)
        except Exception as error:  # report the input that escaped
            raise AssertionError(f"loads({data.hex()}) raised {error!r}") from error
        if result.startswith("ok "):
            decoded += 1
            # Whatever we accept, we can re-encode, and our encoding decodes again.
            assert outcome(bytes.fromhex(result[3:])) == result
    # The mutations must leave some inputs valid, or the fuzz only tests the first byte.
    assert 5_000 < decoded < 95_000


def test_outcome_lines_are_decisive() -> None:
    assert outcome(bytes.fromhex("9b1000000000000000")) == (
        "err 0 truncated: container of 1152921504606846976 items"
    )
    assert outcome(bytes.fromhex("5f42010243030405ff")) == "ok 450102030405"


@pytest.mark.micropython
def test_hostile_inputs_behave_like_cpython_on_micropython(mp: MicroPythonVM) -> None:
    inputs = list(hostile_inputs(seed=7, count=1500))
    # Length-prefixed records streamed from a file: the VM heap is ESP32-sized.
    mp.put("/hostile.bin", b"".join(struct.pack(">H", len(d)) + d for d in inputs))
    output = mp.run(
        "import struct\n"
        "from citisense_protocols.cbor import dumps, loads\n"
        "from citisense_protocols.errors import DecodeError\n"
        "with open('/hostile.bin', 'rb') as f:\n"
        "    while True:\n"
        "        head = f.read(2)\n"
        "        if not head:\n"
        "            break\n"
        "        data = f.read(struct.unpack('>H', head)[0])\n"
        "        try:\n"
        "            print('ok ' + dumps(loads(data)).hex())\n"
        "        except DecodeError as e:\n"
        "            print('err %d %s' % (e.offset, e.reason))\n"
    )
    lines = output.splitlines()
    assert len(lines) == len(inputs)
    mismatches = [
        (data.hex(), got, want)
        for data, got in zip(inputs, lines, strict=True)
        if got != (want := outcome(data))
    ]
    assert mismatches == []
