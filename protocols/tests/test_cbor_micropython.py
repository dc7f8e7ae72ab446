"""The CBOR codec on the real MicroPython VM, checked against cbor2 and CPython.

Expected bytes come from cbor2 (canonical=True) or from our codec on CPython; the VM
prints one line per case, so a mismatch names the case that differs.
"""

from __future__ import annotations

import random
import struct

import cbor2
import pytest

from citisense_boards.mpvm import MicroPythonVM
from citisense_protocols import cbor
from citisense_protocols.cbor import dumps, loads
from citisense_protocols.errors import DecodeError

pytestmark = pytest.mark.micropython

PRELUDE = (
    "import struct\n"
    "from citisense_protocols.cbor import dumps, loads, Tag, Simple, UNDEFINED\n"
    "from citisense_protocols.errors import DecodeError\n"
)

NODE = 2**32 - 1
SEQ = 2**32 - 1
T = 1767225600  # 2026-01-01T00:00:00Z


def _envelope(kind: int, data: object) -> dict[int, object]:
    return {0: 1, 1: kind, 2: NODE, 3: 65535, 4: SEQ, 5: T, 6: 2, 7: data}


# Typical contract messages (CONTRACT.md), at their worst-case field sizes.
MESSAGES: list[object] = [
    _envelope(2, [100, 1, 1234, 123456789, 65000, 0]),  # lighting telemetry
    _envelope(2, [1, 2, -53210, 97, 0]),  # parking telemetry
    _envelope(2, [123, 456, 789, -1250, 812, 10132, 1 | 2]),  # air telemetry: frost, warm-up, damp
    _envelope(1, ["1.4.2", "lighting", "esp32-devkitc-v4", bytes(range(32)), 3]),  # birth
    _envelope(3, [2, "lamp fault", {0: 1, 1: 4}]),  # event
    _envelope(4, [45_000, 86_400 * 90, -67, 3, 0]),  # health
    _envelope(5, [0xFFFFFFFF, 0]),  # ack
    {0: 1, 1: 16, 2: NODE, 8: 7, 9: T + 3600, 10: 2**40, 11: 1, 7: [30, 900]},  # dim override
    {
        0: 1,
        1: 16,
        2: 17,
        8: 8,
        9: T + 86_400,
        10: 9,
        11: 2,
        7: [3, [[m * 30, (m * 7) % 101] for m in range(48)]],
    },  # schedule
    {0: 1, 1: 17, 2: 17, 10: 10, 7: [65535, SEQ]},  # uplink-ack
    {
        0: 1,
        1: 16,
        2: 17,
        8: 9,
        9: T,
        10: 11,
        11: 7,
        7: {"tz": "Europe/Amsterdam", "lat": 523676, "lon": 49041},
    },
]


def _lines(mp: MicroPythonVM, code: str) -> list[str]:
    return mp.run(PRELUDE + code).splitlines()


def _outcome(data: bytes, **limits: int) -> str:
    try:
        return "ok " + dumps(loads(data, **limits)).hex()
    except DecodeError as error:
        return f"err {error.offset} {error.reason}"


MP_OUTCOME = (
    "def outcome(data, **limits):\n"
    "    try:\n"
    "        return 'ok ' + dumps(loads(data, **limits)).hex()\n"
    "    except DecodeError as e:\n"
    "        return 'err %d %s' % (e.offset, e.reason)\n"
)


def test_contract_messages_match_cbor2_on_micropython(mp: MicroPythonVM) -> None:
    # Built from their Python literal on the VM, and decoded from cbor2's own (not
    # canonical) encoding: both must give cbor2's canonical bytes.
    wire = [cbor2.dumps(m) for m in MESSAGES]
    code = "".join(
        f"print(dumps({m!r}).hex(), dumps(loads(bytes.fromhex('{w.hex()}'))).hex())\n"
        for m, w in zip(MESSAGES, wire, strict=True)
    )
    expected = [cbor2.dumps(m, canonical=True).hex() for m in MESSAGES]
    assert [line.split() for line in _lines(mp, code)] == [[e, e] for e in expected]


def test_floats_take_shortest_form_like_cbor2_on_micropython(mp: MicroPythonVM) -> None:
    rng = random.Random(1)
    values = [
        0.0,
        -0.0,
        1.5,
        65504.0,
        65505.0,
        2.0**-24,
        2.0**-25,
        2.0**-149,
        2.0**-150,
        3.4028234663852886e38,
        3.4028235e38,
        1e300,
        0.1,
        float("inf"),
        -float("inf"),
        float("nan"),
    ]
    values += [struct.unpack(">d", rng.randbytes(8))[0] for _ in range(100)]
    values += [struct.unpack(">f", rng.randbytes(4))[0] for _ in range(100)]
    values += [struct.unpack(">e", rng.randbytes(2))[0] for _ in range(100)]
    bits = b"".join(struct.pack(">d", v) for v in values)
    code = (
        f"bits = bytes.fromhex('{bits.hex()}')\n"
        "for i in range(0, len(bits), 8):\n"
        "    e = dumps(struct.unpack_from('>d', bits, i)[0])\n"
        "    print(e.hex(), struct.pack('>d', loads(e)).hex())\n"
    )
    expected = [
        [cbor2.dumps(v, canonical=True).hex(), struct.pack(">d", loads(dumps(v))).hex()]
        for v in values
    ]
    assert [line.split() for line in _lines(mp, code)] == expected


def test_bignums_match_cbor2_on_micropython(mp: MicroPythonVM) -> None:
    rng = random.Random(2)
    ints = [2**64 - 1, 2**64, -(2**64), -(2**64) - 1, 2**128, -(2**128) - 1, 2**30, 2**31, -(2**31)]
    ints += [rng.randrange(-(2**520), 2**520) >> rng.randrange(520) for _ in range(60)]
    code = "".join(
        f"n = {n}\nprint(dumps(n).hex(), loads(bytes.fromhex('{cbor2.dumps(n).hex()}')) == n)\n"
        for n in ints
    )
    assert [line.split() for line in _lines(mp, code)] == [
        [cbor2.dumps(n, canonical=True).hex(), "True"] for n in ints
    ]


LIMIT_CASES: list[tuple[str, dict[str, int]]] = [
    ("81" * 16 + "00", {}),
    ("81" * 17 + "00", {}),
    ("d820" * 17 + "00", {}),
    ("c1c1c100", {"max_depth": 2}),
    ("9901ff" + "00" * 511, {}),
    ("990200" + "00" * 512, {}),
    ("9f" + "00" * 512 + "ff", {}),
    ("bf01020304ff", {"max_items": 3}),
    ("590ffd" + "78" * 4093, {}),
    ("590ffe" + "78" * 4094, {}),
    ("590ffe" + "78" * 4094, {"max_size": 5000}),
    ("5b1000000000000000", {}),
    ("7bffffffffffffffff", {}),
    ("9b1000000000000000", {}),
    ("bbffffffffffffffff", {}),
    ("9a7fffffff00", {}),
]
MALFORMED = [
    "",
    "18",
    "1bffffff",
    "8301",
    "82011900",
    "9f01",
    "5f4101",
    "c1",
    "fa0000",
    "0000",
    "80ff",
    "1c",
    "5d",
    "be",
    "fe",
    "1f",
    "3f",
    "df",
    "ff",
    "8200ff",
    "bf01ff",
    "5f6161ff",
    "7f4161ff",
    "5f5f4101ffff",
    "f81f",
    "c263616263",
    "a1800102",
    "a1a00102",
    "a1c18001",
    "a2010201f5",
    "a201f5f93c00f4",
    "bf0102010203ff",
]


def test_limits_and_malformed_input_fail_like_cpython_on_micropython(mp: MicroPythonVM) -> None:
    cases = LIMIT_CASES + [(h, {}) for h in MALFORMED]
    code = MP_OUTCOME + "".join(
        f"print(outcome(bytes.fromhex('{h}'), **{limits!r}))\n" for h, limits in cases
    )
    expected = [_outcome(bytes.fromhex(h), **limits) for h, limits in cases]
    assert all(e.startswith("err ") for e in expected[len(LIMIT_CASES) :])
    assert sum(e.startswith("err ") for e in expected[: len(LIMIT_CASES)]) == 12
    assert _lines(mp, code) == expected


UTF8_TEXTS = [
    # valid, non-ASCII: must decode to the same string
    "c3a9",
    "e6b0b4",
    "f0908591",
    "f48fbfbf",
    "ee8080",
    "ed9fbf",
    "efbfbf",
    "c280",
    # invalid: surrogates, overlongs, beyond U+10FFFF, stray or missing continuation bytes
    "eda080",
    "edbfbf",
    "c080",
    "c1bf",
    "e08080",
    "e09fbf",
    "f0808080",
    "f08fbfbf",
    "f4908080",
    "f5808080",
    "ff",
    "80",
    "e6b0",
    "e6b061",
    "c3a9ff",
]


def test_text_must_be_strict_utf8_on_micropython(mp: MicroPythonVM) -> None:
    # MicroPython's own UTF-8 decoder lets surrogates and overlongs through; the codec
    # must still reject exactly what CPython rejects.
    cases = []
    for raw in UTF8_TEXTS:
        text = bytes([0x60 + len(raw) // 2]) + bytes.fromhex(raw)
        cases += [text, b"\x82\x61a" + text, b"\x7f" + text + b"\xff"]
    code = MP_OUTCOME + "".join(f"print(outcome(bytes.fromhex('{c.hex()}')))\n" for c in cases)
    expected = [_outcome(c) for c in cases]
    assert sum(e.startswith("ok ") for e in expected) == 8 * 3
    assert _lines(mp, code) == expected


TAGGED = (
    "[Tag(1, 1363896240), Tag(2**64 - 1, [Simple(0)]), Simple(255), UNDEFINED, {Tag(32, 'x'): 1}]"
)


def test_tags_simple_values_and_bytes_like_on_micropython(mp: MicroPythonVM) -> None:
    code = (
        f"v = {TAGGED}\n"
        "e = dumps(v)\n"
        "print(e.hex(), loads(e) == v, loads(b'\\xf7') is UNDEFINED)\n"
        "print(dumps(bytearray(b'ab')).hex(), dumps(memoryview(b'ab')).hex())\n"
        "print(dumps((1, 'a')).hex())\n"
        "print(loads(bytearray(b'\\x42ab')), loads(memoryview(b'\\x42ab')))\n"
        "print(repr(loads(bytes.fromhex('d9d9f7c11a514b67b0'))))\n"
    )
    tagged = dumps(eval(TAGGED, dict(vars(cbor))))
    assert tagged.hex() == "85c11a514b67b0dbffffffffffffffff81e0f8fff7a1d820617801"
    assert _lines(mp, code) == [
        f"{tagged.hex()} True True",
        "426162 426162",
        "82016161",
        "b'ab' b'ab'",
        "Tag(55799, Tag(1, 1363896240))",
    ]


def test_encoder_rejects_what_it_cannot_encode_on_micropython(mp: MicroPythonVM) -> None:
    code = (
        "cyclic = []\n"
        "cyclic.append(cyclic)\n"
        "for make in (lambda: dumps({1, 2}), lambda: dumps(object()), lambda: dumps(cyclic),\n"
        "             lambda: Simple(20), lambda: Simple(256)):\n"
        "    try:\n"
        "        make()\n"
        "        print('accepted')\n"
        "    except (TypeError, ValueError) as e:\n"
        "        print(type(e).__name__)\n"
    )
    assert _lines(mp, code) == ["TypeError", "TypeError", "ValueError", "ValueError", "ValueError"]


def test_limit_sized_messages_fit_the_esp32_heap_on_micropython(mp: MicroPythonVM) -> None:
    # Arrays of the items costliest on the heap, as many as the item and size limits
    # admit. The VM heap grows, so measure allocations (garbage included) with the
    # collector off.
    worst = {
        "80": 1,
        "a0": 1,
        "a100f6": 3,
        "63616263": 1,
        "4161": 1,
        "f93c00": 1,
        "1bffffffffffffffff": 1,
        "f0": 1,
        "c100": 2,
    }
    messages = []
    for item, items_each in worst.items():
        count = min((cbor.MAX_ITEMS - 1) // items_each, (cbor.MAX_SIZE - 3) * 2 // len(item))
        messages.append(b"\x99" + struct.pack(">H", count) + bytes.fromhex(item) * count)
    code = (
        "import gc\n"
        f"for data in {messages!r}:\n"
        "    gc.collect()\n"
        "    gc.disable()\n"
        "    before = gc.mem_alloc()\n"
        "    value = loads(data)\n"
        "    print(gc.mem_alloc() - before)\n"
        "    gc.enable()\n"
    )
    allocated = [int(line) for line in _lines(mp, code)]
    assert len(allocated) == len(worst)
    assert max(allocated) < 48 * 1024
