"""Store-and-forward: a bounded FIFO of unsent uplink messages that survives a reboot.

Layout in `directory`: segment files `<n>.seg`, append-only, each holding up to
`segment_records` records (length u16, CRC-32 u32 over length + message, message), and
an index (config.DurableRecord: first segment, records of it already sent). `drops`
counts messages lost since boot (health field 5): pushed out by newer ones when full, or
found damaged at run time.
A torn or corrupt record ends its segment: the records before it are kept, the rest
is skipped and counted in `corrupt`. A bad index means "resend everything on flash";
the gateway de-duplicates on (node, boot, seq), so every failure mode is a duplicate,
never a crash.

Flash-write budget. New messages wait in RAM and go to flash only once the oldest of
them has waited `flush_interval` seconds (default 60) unacknowledged, or when they fill
`ram_bytes` (default 1 KiB, about 14 telemetry messages: some 1.3 KiB of heap). While
the uplink works, messages are acknowledged within seconds and the store writes nothing.
While it is down, a flush at most once per interval appends the waiting messages (one
file write per `segment_records` messages), rewrites the index when acks or drops moved
the head, and deletes segments fully sent or dropped; a RAM overflow between flushes
appends only. Measured with a fake clock, 73-byte messages, polled every second (CPython
and MicroPython run the same code): uplink up, one message a minute: 0 writes/hour;
uplink down, one a minute: 60 writes/hour; one every 10 s (the 256-message store fills
and drops): about 90; one a second, far above any role's rate: about 500 (450 with a
2 KiB buffer, which holds 1.3 KiB more heap during an outage). On LittleFS (the ESP32
default) a small append or rewrite costs one or two 4 KiB block erases, and wear
levelling spreads them over the ~500 blocks of the 2 MiB filesystem partition. At 90
writes/hour that is about 0.4 erases per block per hour, so NOR flash rated for 100 000
cycles outlasts 25 years of continuous outage (5 years at one message a second). The
price: a power cut loses at most the last minute of unsent messages. Call flush()
before a planned reboot.
"""

import binascii
import os
import struct

from citisense_firmware.compat import const, ticks_diff, ticks_ms
from citisense_firmware.config import DurableRecord, makedirs, remove

MAX_MESSAGE = const(1024)  # a signed message (<= 508 bytes) plus its record header
_HEAD = ">HI"
_HEAD_SIZE = const(6)
_INDEX = ">II"  # first segment, records of it already sent
_SUFFIX = ".seg"


def _crc(length: bytes, message: bytes) -> int:
    return binascii.crc32(message, binascii.crc32(length)) & 0xFFFFFFFF


def _record(message: bytes) -> bytes:
    length = struct.pack(">H", len(message))
    return length + struct.pack(">I", _crc(length, message)) + message


class Store:
    """Bounded FIFO of messages (bytes); when full, push() drops the oldest and counts it."""

    def __init__(
        self,
        directory: str,
        capacity: int = 256,
        segment_records: int = 32,
        flush_interval: int = 60,
        ram_bytes: int = 1024,
        clock=ticks_ms,
    ) -> None:
        if capacity < 1 or segment_records < 1:
            raise ValueError("capacity and segment_records must be positive")
        self._dir = directory
        self.capacity = capacity
        self._segment_records = segment_records
        self._interval_ms = flush_interval * 1000
        self._ram_bytes = ram_bytes
        self._clock = clock
        self.drops = 0
        self.corrupt = 0  # segments or index found damaged
        self.write_errors = 0
        self.writes = 0  # segment writes and deletions (index writes: see `flash_writes`)
        self._segments = []  # [number, records] of segments on flash, oldest first
        self._head = 0  # records of _segments[0] already acknowledged
        self._pending = []  # pushed, not on flash yet, oldest first
        self._pending_bytes = 0
        self._pending_since = 0  # ticks when the oldest pending message started waiting
        self._last_flush = clock()
        self._garbage = []  # fully acknowledged segments to delete at the next flush
        self._writable = -1  # the one segment this session may append to
        self._dirty = False  # index out of date
        makedirs(directory)
        self._index = DurableRecord(directory + "/index")
        self._load()

    @property
    def flash_writes(self) -> int:
        return self.writes + self._index.writes

    def _path(self, number: int) -> str:
        return f"{self._dir}/{number}{_SUFFIX}"

    # -- loading ------------------------------------------------------------------

    def _load(self) -> None:
        first, head = 0, 0
        raw = self._index.load()
        if raw is not None and len(raw) == 8:
            first, head = struct.unpack(_INDEX, raw)
        elif raw is not None:
            self.corrupt += 1
        numbers = []
        for name in os.listdir(self._dir):
            if name.endswith(_SUFFIX) and name[: -len(_SUFFIX)].isdigit():
                numbers.append(int(name[: -len(_SUFFIX)]))
        numbers.sort()
        self._next = max(first, numbers[-1] + 1 if numbers else 0)
        for number in numbers:
            records = 0 if number < first else self._scan(number)
            if records:
                self._segments.append([number, records])
            else:
                remove(self._path(number))
        if self._segments and self._segments[0][0] == first:
            self._head = min(head, self._segments[0][1])
        excess = self.depth - self.capacity
        if excess > 0:  # capacity lowered by a config change: keep the newest
            self._discard(excess)
            self.drops += excess
        self._normalise()

    def _scan(self, number: int) -> int:
        """Count the intact records of a segment, stopping at the first damaged one."""
        records = 0
        try:
            with open(self._path(number), "rb") as f:
                while self._read(f) is not None:
                    records += 1
                if f.read(1):
                    self.corrupt += 1
        except OSError:
            self.corrupt += 1
        return records

    def _read(self, f) -> bytes | None:
        head = f.read(_HEAD_SIZE)
        if len(head) < _HEAD_SIZE:
            return None
        length, crc = struct.unpack(_HEAD, head)
        message = f.read(length)
        if len(message) != length or crc != _crc(head[:2], message):
            return None
        return message

    # -- queue --------------------------------------------------------------------

    @property
    def depth(self) -> int:
        on_flash = 0
        for segment in self._segments:
            on_flash += segment[1]
        return on_flash - self._head + len(self._pending)

    def push(self, message: bytes) -> None:
        if len(message) > MAX_MESSAGE:
            raise ValueError(f"message longer than {MAX_MESSAGE} bytes")
        if self.depth >= self.capacity:
            self._discard(1)
            self.drops += 1
        if not self._pending:
            self._pending_since = self._clock()
        self._pending.append(bytes(message))
        self._pending_bytes += len(message)
        if self._pending_bytes >= self._ram_bytes:
            # RAM is full: messages go to flash now; the index waits for the next flush.
            while self._pending and self._append():
                pass

    def peek(self, count: int) -> list:
        """Up to `count` oldest messages, oldest first; they stay queued until ack()."""
        out = []
        index = 0
        while index < len(self._segments) and len(out) < count:
            number, records = self._segments[index]
            skip = self._head if index == 0 else 0
            want = min(records - skip, count - len(out))
            got = self._read_segment(number, skip, want)
            out.extend(got)
            if len(got) < want:
                self._truncate(index, skip + len(got))
            if index < len(self._segments) and self._segments[index][0] == number:
                index += 1  # else the damaged segment was dropped: same index, next segment
        for message in self._pending:
            if len(out) >= count:
                break
            out.append(message)
        return out

    def _read_segment(self, number: int, skip: int, count: int) -> list:
        out = []
        try:
            with open(self._path(number), "rb") as f:
                for _ in range(skip):
                    if self._read(f) is None:
                        return out
                while len(out) < count:
                    message = self._read(f)
                    if message is None:
                        break
                    out.append(message)
        except OSError:
            pass
        return out

    def _truncate(self, index: int, records: int) -> None:
        """A segment went bad since it was scanned: forget its records from `records` on."""
        self.corrupt += 1
        self.drops += self._segments[index][1] - records
        self._segments[index][1] = records
        if self._segments[index][0] == self._writable:
            self._writable = -1  # appending after damaged bytes would hide the new records
        if index == 0 and self._head >= records:
            self._head = records
            self._normalise()
        elif records == 0:
            self._garbage.append(self._segments.pop(index)[0])

    def ack(self, count: int) -> None:
        """The `count` oldest messages were delivered: forget them."""
        if count > 0:
            self._discard(min(count, self.depth))

    def _discard(self, count: int) -> None:
        while count and self._segments:
            taken = min(count, self._segments[0][1] - self._head)
            self._head += taken
            count -= taken
            self._dirty = True
            self._normalise()
        if count:
            for message in self._pending[:count]:
                self._pending_bytes -= len(message)
            del self._pending[:count]
            # Conservative: the survivors restart their wait (their push times are not kept).
            self._pending_since = self._clock()

    def _normalise(self) -> None:
        """Retire fully acknowledged segments at the head."""
        while self._segments and self._head >= self._segments[0][1]:
            self._garbage.append(self._segments.pop(0)[0])
            self._head = 0

    # -- flash --------------------------------------------------------------------

    def poll(self) -> None:
        """Call every few seconds: flushes at most once per flush interval."""
        now = self._clock()
        if ticks_diff(now, self._last_flush) < self._interval_ms:
            return
        if self._dirty or self._garbage or (
            self._pending and ticks_diff(now, self._pending_since) >= self._interval_ms
        ):
            self.flush()

    def flush(self) -> None:
        """Write pending messages and the index now (planned reboot, shutdown)."""
        while self._pending and self._append():
            pass
        if self._dirty or self._garbage:
            first = self._segments[0][0] if self._segments else self._next
            self._index.save(struct.pack(_INDEX, first, self._head))
            self._dirty = False
            # After the index moved past them, so a power cut in between only resends.
            for number in self._garbage:
                remove(self._path(number))
                self.writes += 1
            self._garbage = []
        self._last_flush = self._clock()

    def _append(self) -> bool:
        """Append pending messages to the writable segment or a new one; False on error."""
        tail = self._segments[-1] if self._segments else None
        if tail is None or tail[0] != self._writable or tail[1] >= self._segment_records:
            tail = [self._next, 0]
            self._next += 1
        batch = self._pending[: self._segment_records - tail[1]]
        data = bytearray()
        for message in batch:
            data += _record(message)
        try:
            with open(self._path(tail[0]), "ab") as f:
                f.write(data)
        except OSError:
            # Part of the batch may be on flash: never append there again; after a reboot
            # those records are sent twice, which the gateway de-duplicates.
            self.write_errors += 1
            self._writable = -1
            return False
        self.writes += 1
        if tail[1] == 0:
            self._segments.append(tail)
        tail[1] += len(batch)
        self._writable = tail[0]
        del self._pending[: len(batch)]
        for message in batch:
            self._pending_bytes -= len(message)
        return True

    def close(self) -> None:
        self.flush()
