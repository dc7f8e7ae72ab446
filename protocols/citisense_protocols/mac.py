"""Message authentication: untagged COSE_Mac0 (RFC 9052) with HMAC 256/64 (COSE alg 4).

message = [h'', {}, payload: bstr, tag: bstr .size 8]   (deterministic CBOR)
tag     = HMAC-SHA256(key, ["MAC0", h'', h'', payload])[:8]

The protected header is empty because the algorithm is fixed per key (RFC 9052 §3.1 lets
the context supply it). Only the canonical encoding is accepted, so one body has exactly
one message: what is authenticated is exactly what is on the wire.

HMAC (RFC 2104) is built on hashlib.sha256 because the ESP32 MicroPython build has no
hmac module. Keys are 32 bytes, one per node, provisioned at commissioning: there is no
default key.

The gateway must read the node id from the body before it knows the key: unwrap()
returns (body, tag) after structural checks, check() then authenticates them.
verify() does both for a receiver that already holds its key.
"""

import hashlib

from citisense_protocols import cbor
from citisense_protocols.errors import AuthError, DecodeError

KEY_LENGTH = 32
TAG_LENGTH = 8
# The largest signed message, on every transport: a serial frame (framing.MAX_FRAME) less
# its CRC. Stated here too so that a node on MQTT never loads the serial framing.
MAX_MESSAGE = 508

_BLOCK = 64  # SHA-256 block size
# XOR of a whole block as one big int: an order of magnitude faster than a byte loop on
# MicroPython, which has arbitrary-precision ints on the ESP32.
_IPAD = int.from_bytes(b"\x36" * _BLOCK, "big")
_OPAD = int.from_bytes(b"\x5c" * _BLOCK, "big")
_HEAD = b"\x84\x40\xa0"  # array(4), protected h'', unprotected {}
_MAC0 = b"\x84\x64MAC0\x40\x40"  # ["MAC0", h'', h'', payload] up to the payload
_TAG_HEAD = 0x48  # a byte string of TAG_LENGTH bytes


def _hmac(key: bytes, parts: tuple[bytes | bytearray, ...]) -> bytes:
    """HMAC-SHA256 of the concatenated `parts` (fed one by one: no joined copy)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    padded = int.from_bytes(bytes(key) + bytes(_BLOCK - len(key)), "big")
    inner = hashlib.sha256((padded ^ _IPAD).to_bytes(_BLOCK, "big"))
    for part in parts:
        inner.update(part)
    outer = hashlib.sha256((padded ^ _OPAD).to_bytes(_BLOCK, "big"))
    outer.update(inner.digest())
    return outer.digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) of `data` under a key of any length."""
    return _hmac(key, (data,))


def _tag(key: bytes, body: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"MAC key must be bytes, not {type(key).__name__}")
    if len(key) != KEY_LENGTH:
        raise ValueError(
            f"MAC key must be {KEY_LENGTH} bytes, got {len(key)}: use the node's provisioned key"
        )
    # The HMAC of cbor.dumps(["MAC0", h'', h'', body]), fed in two pieces: the structure
    # up to the body, then the body itself (no copy of it).
    structure = bytearray(_MAC0)
    cbor._head(structure, 2, len(body))  # the body's byte-string head, as dumps() writes it
    return _hmac(key, (structure, body))[:TAG_LENGTH]


def _message(body: bytes, tag: bytes) -> bytes:
    """cbor.dumps([h'', {}, body, tag]), written directly (a tag is TAG_LENGTH bytes)."""
    out = bytearray(_HEAD)
    cbor._head(out, 2, len(body))
    out += body
    out.append(_TAG_HEAD)
    out += tag
    return bytes(out)


def _same(a: bytes, b: bytes) -> bool:
    """Compare in time independent of where the bytes differ (no early exit)."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def sign(key: bytes, body: bytes) -> bytes:
    """The COSE_Mac0 message carrying `body` (CBOR bytes) under `key`."""
    message = _message(body, _tag(key, body))
    if len(message) > MAX_MESSAGE:
        raise ValueError(f"message of {len(message)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return message


def unwrap(message: bytes) -> tuple[bytes, bytes]:
    """(body, tag) of a structurally valid COSE_Mac0; the tag is NOT checked yet."""
    # The fixed head first: foreign structures get a precise reason, noise costs nothing.
    for offset in range(min(3, len(message))):
        if message[offset] != _HEAD[offset]:
            raise DecodeError(
                (
                    "COSE_Mac0 must be a 4-element array",
                    "COSE_Mac0 protected header must be empty (h'')",
                    "COSE_Mac0 unprotected header must be empty ({})",
                )[offset],
                offset,
            )
    # Room for an indefinite-length payload in one chunk, so that it gets a clear reason.
    value = cbor.loads(message, max_depth=2, max_items=8)
    assert isinstance(value, list)  # the head byte 0x84 and loads() guarantee it
    body, tag = value[2], value[3]
    if not isinstance(body, bytes):
        raise DecodeError("COSE_Mac0 payload must be a byte string", 3)
    if not isinstance(tag, bytes) or len(tag) != TAG_LENGTH:
        tag_at = 3 + len(cbor.dumps(body))
        raise DecodeError(f"COSE_Mac0 tag must be a {TAG_LENGTH}-byte string", tag_at)
    canonical = _message(body, tag)
    if canonical != message:
        offset = 0
        while offset < len(canonical) and canonical[offset] == message[offset]:
            offset += 1
        raise DecodeError("COSE_Mac0 not in deterministic encoding", offset)
    return body, tag


def check(key: bytes, body: bytes, tag: bytes) -> None:
    """Raise AuthError unless `tag` authenticates `body` under `key`."""
    if not _same(_tag(key, body), tag):
        raise AuthError("MAC tag mismatch")


def verify(key: bytes, message: bytes) -> bytes:
    """The body of `message` if its MAC verifies under `key`; DecodeError or AuthError if not."""
    body, tag = unwrap(message)
    if not _same(_tag(key, body), tag):
        raise AuthError("MAC tag mismatch", len(message) - TAG_LENGTH)
    return body
