"""The one error family raised by every decoder of the wire contract.

Hostile bytes must never surface as IndexError, KeyError, RecursionError or
UnicodeError: every decoder catches its own failure modes and raises one of these,
naming the byte offset and the reason.
"""


class WireError(ValueError):
    """Bytes that do not follow the wire contract."""

    def __init__(self, reason: str, offset: int = -1) -> None:
        if offset >= 0:
            super().__init__(f"{reason} at byte {offset}")
        else:
            super().__init__(reason)
        self.reason = reason
        self.offset = offset


class DecodeError(WireError):
    """Malformed or over-limit CBOR."""


class FrameError(WireError):
    """A serial frame that is corrupt, truncated or oversize."""


class AuthError(WireError):
    """A message whose MAC does not verify, or that replays an old counter."""


class MessageError(WireError):
    """A well-formed CBOR body that breaks the message catalogue.

    `result` is the ack result a node answers a command with (BAD_ARGS, UNSUPPORTED);
    -1 when the envelope itself is broken, so there is no trustworthy id to ack.
    """

    def __init__(self, reason: str, result: int = -1) -> None:
        super().__init__(reason)
        self.result = result
