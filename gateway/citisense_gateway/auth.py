"""COSE_Mac0 HMAC 256/64 for the gateway's hot path, equal to citisense_protocols.mac.

citisense_protocols.mac runs on a 240 MHz ESP32 and on CPython alike, so it recomputes
the HMAC pads for each message and checks the COSE array by decoding it (about 60 us per
message on CPython). The gateway checks tens of thousands of messages a second: here the
pads are hashed once per node key, and the one canonical COSE layout is matched byte by
byte. Anything the fast path refuses is handed to citisense_protocols.mac, which either
raises the precise error or, should the two ever disagree, has the last word.
tests/test_auth.py checks both agree on valid, mutated and random messages.

The ingest lane goes one step further for telemetry (uplink.Shape): a pattern built by
usual_pattern matches the whole message, layout and body at once, and verify_usual then
only hashes and compares.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from citisense_protocols import mac

_HEAD = b"\x84\x40\xa0"  # array(4), protected h'', unprotected {}
_TAG_HEAD = 0x48  # bstr of 8 bytes
_MAC0 = b"\x84\x64MAC0\x40\x40"  # ["MAC0", h'', h'', ... of MAC_structure


def _bstr_head(length: int) -> bytes:
    if length < 24:
        return bytes((0x40 + length,))
    if length < 0x100:
        return bytes((0x58, length))
    if length < 0x10000:
        return bytes((0x59, length >> 8, length & 0xFF))
    return b"\x5a" + length.to_bytes(4, "big")


def _span(message: bytes) -> tuple[int, int]:
    """(start, stop) of the body in a canonical COSE_Mac0; (-1, 0) if not canonical."""
    if len(message) >= 13 and message[:3] == _HEAD:
        head = message[3]
        if 0x40 <= head <= 0x57:
            start, size = 4, head - 0x40
        elif head == 0x58:
            start, size = 5, message[4]
            if size < 24:
                return -1, 0
        elif head == 0x59:
            start, size = 6, (message[4] << 8) | message[5]
            if size < 0x100:
                return -1, 0
        else:
            return -1, 0
        stop = start + size
        if stop + 9 == len(message) and message[stop] == _TAG_HEAD:
            return start, stop
    return -1, 0


def unwrap(message: bytes) -> tuple[bytes, bytes]:
    """(body, tag) of a canonical COSE_Mac0, as mac.unwrap; raises its DecodeError."""
    start, stop = _span(message)
    if start < 0:
        return mac.unwrap(message)
    return message[start:stop], message[stop + 1 :]


# The usual layout: a body of 24 to 255 bytes, so a two-byte bstr head.
USUAL_HEAD = 5  # bytes before the body
USUAL_TAIL = 9  # bytes after it: the tag's head and the tag


def usual_pattern(body_size: int, body: bytes) -> bytes:
    """A regular expression (bytes) of the COSE_Mac0 messages in the usual canonical layout
    whose body of body_size bytes (24 to 255) matches `body`: with MacKey.verify_usual, what
    MacKey.open takes, their body checked by the same match."""
    assert 24 <= body_size <= 0xFF
    head = _HEAD + bytes((0x58, body_size))
    tag = re.escape(bytes((_TAG_HEAD,))) + b"(?s:.{%d})" % mac.TAG_LENGTH
    return re.escape(head) + b"(?:" + body + b")" + tag


class MacKey:
    """One node's key with its HMAC pads hashed once."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) != mac.KEY_LENGTH:
            raise ValueError(f"MAC key must be {mac.KEY_LENGTH} bytes, got {len(key)}")
        padded = bytes(key) + bytes(64 - len(key))
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded) + _MAC0)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def tag(self, body: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(_bstr_head(len(body)))
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[: mac.TAG_LENGTH]

    def check(self, body: bytes, tag: bytes) -> bool:
        return hmac.compare_digest(self.tag(body), tag)

    def verify_usual(self, message: bytes) -> bool:
        """This key made the tag of `message`, which a usual_pattern matched."""
        inner = self._inner.copy()
        inner.update(message[3:-USUAL_TAIL])
        outer = self._outer.copy()
        outer.update(inner.digest())
        return hmac.compare_digest(outer.digest()[: mac.TAG_LENGTH], message[-mac.TAG_LENGTH :])

    def open(self, message: bytes) -> bytes | None:
        """The body of `message` if this key made its tag, else None; DecodeError if malformed.

        In the canonical layout the body's bstr head in the message is the one the
        MAC_structure holds, so head and body are hashed straight from the message.
        """
        size = len(message) - 14  # the usual layout: a body of 24 to 255 bytes
        if (24 <= size < 0x100 and message[4] == size and message[3] == 0x58
                and message[-9] == _TAG_HEAD and message[:3] == _HEAD):
            start, stop = 5, 5 + size
        else:
            start, stop = _span(message)
            if start < 0:
                body, tag = mac.unwrap(message)
                return body if self.check(body, tag) else None
        inner = self._inner.copy()
        inner.update(message[3:stop])
        outer = self._outer.copy()
        outer.update(inner.digest())
        if hmac.compare_digest(outer.digest()[: mac.TAG_LENGTH], message[stop + 1 :]):
            return message[start:stop]
        return None
