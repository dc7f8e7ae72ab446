"""COSE_Mac0 with HMAC 256/64: RFC 4231, shared vectors, tampering, hostile input."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_boards.mpvm import MicroPythonVM
from citisense_protocols import mac
from citisense_protocols.errors import AuthError, DecodeError, WireError

VECTORS_PATH = Path(__file__).parent / "vectors" / "mac.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
COSE = VECTORS["cose_mac0"]
TELEMETRY = next(v for v in COSE if v["name"].startswith("lighting telemetry"))
TEST_KEY = bytes.fromhex(TELEMETRY["key"])  # test-only, from the vectors file

keys = st.binary(min_size=32, max_size=32)
bodies = st.binary(max_size=600)


def reference_message(key: bytes, body: bytes) -> bytes:
    """COSE_Mac0 built independently with Python's hmac module and cbor2."""
    structure = cbor2.dumps(["MAC0", b"", b"", body])
    tag = hmac.new(key, structure, hashlib.sha256).digest()[:8]
    return bytes(cbor2.dumps([b"", {}, body, tag]))


def outcome(key: bytes, message: bytes) -> list[Any]:
    """What verify() makes of `message`: ["ok"] or [error class, reason, offset]."""
    try:
        mac.verify(key, message)
    except WireError as error:
        return [type(error).__name__, error.reason, error.offset]
    return ["ok"]


def tampered(message: bytes) -> list[bytes]:
    """Every single-byte corruption (xor 0xFF) and every truncation of `message`."""
    flips = [
        message[:i] + bytes([message[i] ^ 0xFF]) + message[i + 1 :] for i in range(len(message))
    ]
    return flips + [message[:i] for i in range(len(message))]


# Valid CBOR that is not the one canonical COSE_Mac0 of its contents.
def malformed_cases() -> list[tuple[str, bytes, str, str, int]]:
    body = bytes.fromhex(TELEMETRY["body"])
    tag = bytes.fromhex(TELEMETRY["tag"])
    size = len(body)  # 47: a one-byte length after 0x58
    good = bytes.fromhex(TELEMETRY["message"])
    return [
        ("tagged COSE_Mac0 (tag 17)", b"\xd1" + good, "DecodeError", "4-element array", 0),
        ("array head in long form", b"\x98\x04" + good[1:], "DecodeError", "4-element array", 0),
        ("3-element array", cbor2.dumps([b"", {}, body]), "DecodeError", "4-element array", 0),
        (
            "alg in protected header",
            cbor2.dumps([cbor2.dumps({1: 4}), {}, body, tag]),
            "DecodeError",
            "protected header must be empty",
            1,
        ),
        (
            "kid in unprotected header",
            cbor2.dumps([b"", {4: b"n1"}, body, tag]),
            "DecodeError",
            "unprotected header must be empty",
            2,
        ),
        (
            "text payload",
            cbor2.dumps([b"", {}, "text", tag]),
            "DecodeError",
            "payload must be a byte string",
            3,
        ),
        (
            "16-byte tag",
            cbor2.dumps([b"", {}, body, tag * 2]),
            "DecodeError",
            "tag must be a 8-byte string",
            3 + 2 + size,
        ),
        (
            "payload length in long form",
            good[:3] + b"\x59\x00" + good[4:],
            "DecodeError",
            "deterministic encoding",
            3,
        ),
        (
            "indefinite-length payload",
            good[:3] + b"\x5f\x58" + good[4 : 5 + size] + b"\xff" + good[5 + size :],
            "DecodeError",
            "deterministic encoding",
            3,
        ),
        ("trailing byte", good + b"\x00", "DecodeError", "trailing bytes", len(good)),
        ("empty", b"", "DecodeError", "truncated", 0),
        (
            "bad tag",
            good[:-1] + bytes([good[-1] ^ 1]),
            "AuthError",
            "MAC tag mismatch",
            len(good) - 8,
        ),
    ]


MALFORMED = malformed_cases()


# --- HMAC-SHA256 --------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["rfc4231"], ids=lambda c: "case" + c["case"])
def test_hmac_sha256_matches_rfc4231(case: dict[str, str]) -> None:
    digest = mac.hmac_sha256(bytes.fromhex(case["key"]), bytes.fromhex(case["data"]))
    assert digest.hex().startswith(case["mac"])  # case 5 lists a 128-bit truncation


@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_sha256_matches_stdlib_for_any_key_length(key: bytes, data: bytes) -> None:
    assert mac.hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()


# --- COSE_Mac0 ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", COSE, ids=lambda v: v["name"])
def test_cose_vectors_match_sign_verify_and_reference(vector: dict[str, str]) -> None:
    key, body, message = (bytes.fromhex(vector[k]) for k in ("key", "body", "message"))
    assert reference_message(key, body) == message
    assert mac.sign(key, body) == message
    assert mac.verify(key, message) == body
    assert mac.unwrap(message) == (body, bytes.fromhex(vector["tag"]))


@given(keys, bodies)
def test_sign_equals_hmac_and_cbor2_reference_for_any_body(key: bytes, body: bytes) -> None:
    message = mac.sign(key, body)
    assert message == reference_message(key, body)
    assert mac.verify(key, message) == body
    overhead = 13 if len(body) < 24 else 14 if len(body) < 256 else 15
    assert len(message) - len(body) == overhead


def test_worst_case_telemetry_fits_64_bytes_with_mac() -> None:
    assert len(bytes.fromhex(TELEMETRY["message"])) <= 64


@given(keys, keys, bodies)
def test_message_under_another_key_is_rejected(key: bytes, other: bytes, body: bytes) -> None:
    message = mac.sign(key, body)
    if other != key:
        with pytest.raises(AuthError, match="MAC tag mismatch"):
            mac.verify(other, message)


def test_gateway_reads_body_before_authenticating_it() -> None:
    message = bytes.fromhex(TELEMETRY["message"])
    body, tag = mac.unwrap(message)
    node = cbor2.loads(body)[2]
    key_for_node = {node: TEST_KEY}[node]
    mac.check(key_for_node, body, tag)
    with pytest.raises(AuthError):
        mac.check(bytes(32), body, tag)
    with pytest.raises(AuthError):
        mac.check(key_for_node, body + b"\x00", tag)


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(31), bytes(33), bytes(64)], ids=len)
def test_keys_other_than_32_bytes_are_refused(key: bytes) -> None:
    message = bytes.fromhex(TELEMETRY["message"])
    for call in (
        lambda: mac.sign(key, b"\xa0"),
        lambda: mac.verify(key, message),
        lambda: mac.check(key, b"\xa0", bytes(8)),
    ):
        with pytest.raises(ValueError, match=f"MAC key must be 32 bytes, got {len(key)}"):
            call()


def test_text_key_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="MAC key must be bytes, not str"):
        mac.sign("0" * 32, b"")  # type: ignore[arg-type]


def test_every_tampered_or_truncated_message_is_rejected() -> None:
    for vector in COSE:
        key, message = bytes.fromhex(vector["key"]), bytes.fromhex(vector["message"])
        for bad in tampered(message):
            result = outcome(key, bad)
            assert result[0] in ("DecodeError", "AuthError"), bad.hex()


@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c[0])
def test_non_canonical_or_foreign_structures_are_rejected(
    case: tuple[str, bytes, str, str, int],
) -> None:
    _, message, kind, reason, offset = case
    result = outcome(TEST_KEY, message)
    assert (result[0], result[2]) == (kind, offset)
    assert reason in result[1]


# --- fuzz: hostile bytes raise WireError subclasses and nothing else ----------------


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits: bit flips, inserts, deletes, truncation, byte swaps."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(out) + 1)
        edit = rng.randrange(5)
        if edit == 0 and where < len(out):
            out[where] ^= 1 << rng.randrange(8)
        elif edit == 1:
            out[where:where] = rng.randbytes(rng.randint(1, 3))
        elif edit == 2:
            del out[where : where + rng.randint(1, 3)]
        elif edit == 3:
            del out[where:]
        elif where < len(out):
            out[where] = rng.choice((0x40, 0x58, 0x5F, 0x84, 0x9F, 0xA0, 0xBF, 0xFF))
    return bytes(out)


def fuzz_inputs(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    seeds = [bytes.fromhex(v["message"]) for v in COSE]
    inputs = []
    for i in range(count):
        if i % 2:
            original = rng.choice(seeds)
            mutated = mutate(rng, original)
            while mutated == original:  # an edit may restore the original byte
                mutated = mutate(rng, original)
            inputs.append(mutated)
        else:
            inputs.append(rng.randbytes(rng.choice((rng.randrange(16), rng.randrange(300)))))
    return inputs


def test_fuzz_verify_raises_only_wire_errors_with_reason_and_offset() -> None:
    accepted = 0
    kinds: set[str] = set()
    for data in fuzz_inputs(seed=11, count=100_000):
        try:
            mac.verify(TEST_KEY, data)
        except WireError as error:
            assert isinstance(error, (DecodeError, AuthError))
            assert error.reason
            assert 0 <= error.offset <= len(data)
            kinds.add(type(error).__name__)
        else:
            accepted += 1
    assert accepted == 0  # no mutation forges a tag
    assert kinds == {"DecodeError", "AuthError"}


def test_fuzz_unwrap_returns_only_canonical_structures() -> None:
    unwrapped = 0
    for data in fuzz_inputs(seed=12, count=100_000):
        try:
            body, tag = mac.unwrap(data)
        except DecodeError as error:
            assert error.reason
            assert 0 <= error.offset <= len(data)
        else:
            unwrapped += 1
            assert cbor2.dumps([b"", {}, body, tag]) == data
    assert unwrapped > 0  # tag and payload corruptions stay structurally valid


# --- the same vectors and rejections on the real MicroPython VM ---------------------

MP_VECTORS = """
import json, binascii
from citisense_protocols import mac
v = json.load(open('/vectors/mac.json'))
h = binascii.unhexlify
x = lambda b: binascii.hexlify(b).decode()
rfc = [x(mac.hmac_sha256(h(c['key']), h(c['data']))) for c in v['rfc4231']]
cose = []
for c in v['cose_mac0']:
    key, body, message = h(c['key']), h(c['body']), h(c['message'])
    b, t = mac.unwrap(message)
    cose.append([x(mac.sign(key, body)), x(mac.verify(key, message)), x(b), x(t)])
print(json.dumps({'rfc': rfc, 'cose': cose}))
"""


@pytest.mark.micropython
def test_micropython_matches_rfc4231_and_cose_vectors_byte_for_byte(mp: MicroPythonVM) -> None:
    mp.put("/vectors/mac.json", VECTORS_PATH.read_bytes())
    got = json.loads(mp.run(MP_VECTORS))
    assert [d[: len(c["mac"])] for d, c in zip(got["rfc"], VECTORS["rfc4231"], strict=True)] == [
        c["mac"] for c in VECTORS["rfc4231"]
    ]
    assert got["cose"] == [[v["message"], v["body"], v["body"], v["tag"]] for v in COSE]


MP_OUTCOMES = """
import json, binascii
from citisense_protocols import mac
from citisense_protocols.errors import WireError
key = binascii.unhexlify(%r)
out = []
for line in open('/vectors/messages.txt'):
    try:
        mac.verify(key, binascii.unhexlify(line.strip()))
        out.append(['ok'])
    except WireError as e:
        out.append([type(e).__name__, e.reason, e.offset])
print(json.dumps(out))
"""


def run_outcomes_on_micropython(mp: MicroPythonVM, key: bytes, messages: list[bytes]) -> Any:
    mp.put("/vectors/messages.txt", "\n".join(m.hex() for m in messages).encode() + b"\n")
    return json.loads(mp.run(MP_OUTCOMES % key.hex()))


@pytest.mark.micropython
def test_micropython_rejects_each_tampered_and_truncated_message_like_cpython(
    mp: MicroPythonVM,
) -> None:
    messages = tampered(bytes.fromhex(TELEMETRY["message"]))
    expected = [outcome(TEST_KEY, m) for m in messages]
    assert all(result[0] != "ok" for result in expected)
    assert run_outcomes_on_micropython(mp, TEST_KEY, messages) == expected


@pytest.mark.micropython
def test_micropython_rejects_foreign_structures_like_cpython(mp: MicroPythonVM) -> None:
    messages = [case[1] for case in MALFORMED] + fuzz_inputs(seed=13, count=300)
    expected = [outcome(TEST_KEY, m) for m in messages]
    assert run_outcomes_on_micropython(mp, TEST_KEY, messages) == expected


MP_KEYS = """
from citisense_protocols import mac
for key in (b'', bytes(31), bytes(33), '0' * 32):
    try:
        mac.sign(key, b'')
    except (TypeError, ValueError) as e:
        print(type(e).__name__, e)
"""


@pytest.mark.micropython
def test_micropython_refuses_keys_other_than_32_bytes(mp: MicroPythonVM) -> None:
    assert mp.run(MP_KEYS).splitlines() == [
        "ValueError MAC key must be 32 bytes, got 0: use the node's provisioned key",
        "ValueError MAC key must be 32 bytes, got 31: use the node's provisioned key",
        "ValueError MAC key must be 32 bytes, got 33: use the node's provisioned key",
        "TypeError MAC key must be bytes, not str",
    ]
