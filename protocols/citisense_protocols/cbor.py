"""CBOR (RFC 8949) for the wire contract: a deterministic encoder and a bounded decoder.

dumps() writes the deterministic form of RFC 8949 §4.2: shortest integer and length heads,
definite lengths only, the shortest of f16/f32/f64 that holds a float exactly (NaN as
f97e00), integers outside 64 bits as bignums (tags 2/3), and map keys sorted
*length-first* (RFC 8949 §4.2.3, the RFC 7049 §3.9 "canonical" order): shorter encoded key
first, equal lengths bytewise. That is what cbor2 6.x does with canonical=True, which the
gateway uses and our tests compare against byte for byte. For the contract's small
integer keys (0..23, one byte each) both RFC 8949 orders coincide.

loads() accepts all well-formed CBOR (indefinite lengths, every tag, simple values,
f16/f32/f64) and raises only DecodeError, naming the byte offset, on anything else.
Every data item consumes at least one input byte and declared lengths are checked against
the bytes left before anything is allocated, so work is bounded by the input length.

Runs on MicroPython (ESP32) and CPython. Where MicroPython floats are single precision,
f64 values decode rounded to f32 and dumps() never needs more than f32.
"""

import math
import struct

from citisense_protocols.errors import DecodeError

# Decoder limits sized for an ESP32 without PSRAM. The deepest contract message (COSE
# array > envelope map > data array > schedule entries) nests 5 levels; 16 leaves room
# while bounding the recursion. On MicroPython a decoded item costs up to ~85 bytes of
# heap (a string or an int beyond 30 bits, with its garbage), so 512 items stay under
# ~45 KiB; a 48-entry schedule is ~150 items. 4 KiB is eight maximal serial frames.
MAX_DEPTH = 16
MAX_ITEMS = 512
MAX_SIZE = 4096

_UINT64_END = 0x10000000000000000


class Tag:
    """A tagged data item; loads() returns every tag but bignums (2, 3) as one."""

    def __init__(self, tag: int, value: object) -> None:
        self.tag = tag
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tag) and other.tag == self.tag and other.value == self.value

    # MicroPython makes a class with __eq__ unhashable unless it defines __hash__.
    def __hash__(self) -> int:
        return hash((self.tag, self.value))

    def __repr__(self) -> str:
        return f"Tag({self.tag}, {self.value!r})"


class Simple:
    """An unassigned simple value (0..19, 32..255); false/true/null/undefined are not."""

    def __init__(self, value: int) -> None:
        if not (0 <= value < 20 or 32 <= value < 256):
            raise ValueError(f"simple value {value} is reserved or assigned")
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Simple) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Simple({self.value})"


class _Undefined:
    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


def _strict_utf8_codec() -> bool:
    # MicroPython's decoder accepts surrogates and overlong forms, which RFC 8949 forbids.
    try:
        b"\xed\xa0\x80".decode("utf-8")
    except UnicodeError:
        return True
    return False


_STRICT_UTF8 = _strict_utf8_codec()


def _valid_utf8(b: bytes) -> bool:
    """Strict UTF-8 (RFC 3629): no overlongs, surrogates or code points above U+10FFFF."""
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        lo = 0x80
        hi = 0xBF
        if 0xC2 <= c <= 0xDF:
            k = 1
        elif 0xE0 <= c <= 0xEF:
            k = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        elif 0xF0 <= c <= 0xF4:
            k = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            return False
        if i + k >= n or not lo <= b[i + 1] <= hi:
            return False
        for j in range(i + 2, i + k + 1):
            if b[j] & 0xC0 != 0x80:
                return False
        i += k + 1
    return True


# ---- encoder ----


def dumps(obj: object) -> bytes:
    """Encode obj deterministically; TypeError for unsupported types, ValueError if too deep."""
    out = bytearray()
    _encode(out, obj, 0)
    return bytes(out)


def _head(out: bytearray, major: int, n: int) -> None:
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.extend(struct.pack(">BH", mt | 25, n))
    elif n < 0x100000000:
        out.extend(struct.pack(">BI", mt | 26, n))
    else:
        out.extend(struct.pack(">BQ", mt | 27, n))


def _bignum(out: bytearray, tag: int, n: int) -> None:
    # MicroPython ints have no bit_length(); the hex length gives the byte count.
    size = (len(f"{n:x}") + 1) // 2
    out.append(0xC0 | tag)
    _head(out, 2, size)
    out.extend(n.to_bytes(size, "big"))


def _half_bits(bits: int) -> int:
    """The f16 bit pattern holding the f32 `bits` exactly, or -1 if there is none."""
    sign = (bits >> 16) & 0x8000
    exp = (bits >> 23) & 0xFF
    mant = bits & 0x7FFFFF
    if exp == 0xFF:  # infinity (NaN is handled before)
        return sign | 0x7C00
    if exp == 0:
        return sign if mant == 0 else -1
    if exp > 142:  # beyond f16 range
        return -1
    if exp >= 113:  # f16 normal: the low 13 mantissa bits must be zero
        return -1 if mant & 0x1FFF else sign | (exp - 112) << 10 | mant >> 13
    if exp < 103:  # below the smallest f16 subnormal
        return -1
    full = mant | 0x800000
    shift = 126 - exp
    if full & ((1 << shift) - 1):
        return -1
    return sign | full >> shift


def _float(out: bytearray, x: float) -> None:
    if x != x:
        out.extend(b"\xf9\x7e\x00")
        return
    try:
        f32 = struct.pack(">f", x)
    except OverflowError:  # CPython, beyond f32 range (MicroPython packs inf instead)
        f32 = b""
    if f32 and struct.unpack(">f", f32)[0] == x:
        half = _half_bits(struct.unpack(">I", f32)[0])
        if half >= 0:
            out.extend(struct.pack(">BH", 0xF9, half))
        else:
            out.append(0xFA)
            out.extend(f32)
    else:
        out.append(0xFB)
        out.extend(struct.pack(">d", x))


def _key_order(pair: tuple[bytearray, object]) -> tuple[int, bytearray]:
    return (len(pair[0]), pair[0])


def _small_int_keys(d: dict[object, object]) -> bool:
    # The contract's maps use keys 0..23: one-byte heads whose order is numeric, so the
    # board sorts them without encoding each key into a buffer of its own.
    for k in d:  # noqa: SIM110 - all() over a generator is twice as slow on MicroPython
        if type(k) is not int or not 0 <= k < 24:
            return False
    return True


def _encode(out: bytearray, obj: object, depth: int) -> None:
    if obj is False:
        out.append(0xF4)
    elif obj is True:
        out.append(0xF5)
    elif obj is None:
        out.append(0xF6)
    elif isinstance(obj, int):
        if obj >= 0:
            if obj < _UINT64_END:
                _head(out, 0, obj)
            else:
                _bignum(out, 2, obj)
        elif obj >= -_UINT64_END:
            _head(out, 1, -1 - obj)
        else:
            _bignum(out, 3, -1 - obj)
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        b = bytes(obj)
        _head(out, 2, len(b))
        out.extend(b)
    elif isinstance(obj, float):
        _float(out, obj)
    elif isinstance(obj, (list, tuple, dict, Tag)):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        if isinstance(obj, Tag):
            _head(out, 6, obj.tag)
            _encode(out, obj.value, depth + 1)
        elif isinstance(obj, dict):
            _head(out, 5, len(obj))
            if _small_int_keys(obj):
                for k in sorted(obj):
                    out.append(k)
                    _encode(out, obj[k], depth + 1)
                return
            pairs = []
            for k, v in obj.items():
                kb = bytearray()
                _encode(kb, k, depth + 1)
                pairs.append((kb, v))
            pairs.sort(key=_key_order)
            for key, v in pairs:
                out.extend(key)
                _encode(out, v, depth + 1)
        else:
            _head(out, 4, len(obj))
            for v in obj:
                _encode(out, v, depth + 1)
    elif isinstance(obj, Simple):
        _head(out, 7, obj.value)
    elif obj is UNDEFINED:
        out.append(0xF7)
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as CBOR")


# ---- decoder ----


def loads(
    data: bytes | bytearray | memoryview,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    max_size: int = MAX_SIZE,
) -> object:
    """Decode exactly one CBOR data item; DecodeError (offset, reason) for anything else.

    max_depth bounds nesting of arrays, maps and tags (and so the recursion), max_items
    the data items in total (keys, values and string chunks each count), max_size the input.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > max_size:
        raise DecodeError(
            f"message of {len(data)} bytes exceeds the {max_size}-byte limit", max_size
        )
    dec = _Decoder(data, max_depth, max_items)
    value = dec.item(0)
    if dec.pos != len(data):
        raise DecodeError("trailing bytes after the data item", dec.pos)
    return value


def _half(h: int) -> float:
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        x = math.ldexp(mant, -24)  # subnormal
    elif exp == 31:
        x = float("nan") if mant else float("inf")
    else:
        x = math.ldexp(mant + 1024, exp - 25)
    return -x if h & 0x8000 else x


class _Decoder:
    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.max_items = max_items
        self.items_left = max_items

    def item(self, depth: int) -> object:
        data = self.data
        start = pos = self.pos
        end = len(data)
        if pos >= end:
            raise DecodeError("truncated: a data item is missing", pos)
        self.items_left -= 1
        if self.items_left < 0:
            raise DecodeError(f"more than {self.max_items} data items", pos)
        ib = data[pos]
        pos += 1
        major = ib >> 5
        ai = ib & 31
        if ai < 24:
            arg = ai
        elif ai < 28:
            size = 1 << (ai - 24)
            if pos + size > end:
                raise DecodeError(f"truncated: the head needs {size} more bytes", start)
            # No unpack tuple (garbage on the board) for the common 1- and 2-byte forms.
            if ai == 24:
                arg = data[pos]
            elif ai == 25:
                arg = data[pos] << 8 | data[pos + 1]
            else:
                arg = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        elif ai == 31:
            self.pos = pos
            return self._indefinite(major, start, depth)
        else:
            raise DecodeError(f"reserved additional information {ai}", start)
        self.pos = pos

        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major <= 3:
            if arg > end - pos:
                raise DecodeError(f"truncated: string of {arg} bytes", start)
            self.pos = pos + arg
            raw = data[pos : pos + arg]
            return raw if major == 2 else self._text(raw, start)
        if major == 7:
            return self._simple_or_float(ai, arg, start)
        if depth >= self.max_depth:
            raise DecodeError(f"nesting deeper than {self.max_depth}", start)
        if major == 6:
            return self._tag(arg, start, depth)
        count = arg if major == 4 else 2 * arg
        if count > end - pos:  # every item needs at least one byte
            raise DecodeError(f"truncated: container of {count} items", start)
        if count > self.items_left:
            raise DecodeError(f"more than {self.max_items} data items", start)
        if major == 4:
            items = []
            for _ in range(arg):
                items.append(self.item(depth + 1))
            return items
        result: dict[object, object] = {}
        for _ in range(arg):
            self._map_entry(result, depth)
        return result

    def _text(self, raw: bytes, start: int) -> str:
        try:
            text = raw.decode("utf-8")
        except UnicodeError:
            raise DecodeError("invalid UTF-8 in text string", start) from None
        # A str shorter than its bytes is non-ASCII: check what a lax codec let through.
        if not _STRICT_UTF8 and len(text) != len(raw) and not _valid_utf8(raw):
            raise DecodeError("invalid UTF-8 in text string", start)
        return text

    def _simple_or_float(self, ai: int, arg: int, start: int) -> object:
        if ai < 20:
            return Simple(ai)
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 23:
            return UNDEFINED
        if ai == 24:
            if arg < 32:
                raise DecodeError(f"simple value {arg} in two-byte form", start)
            return Simple(arg)
        if ai == 25:
            return _half(arg)
        return struct.unpack_from(">f" if ai == 26 else ">d", self.data, start + 1)[0]

    def _tag(self, tag: int, start: int, depth: int) -> object:
        value = self.item(depth + 1)
        if tag != 2 and tag != 3:
            return Tag(tag, value)
        if not isinstance(value, bytes):
            raise DecodeError("bignum content is not a byte string", start)
        n = int.from_bytes(value, "big")
        return n if tag == 2 else -1 - n

    def _map_entry(self, result: dict[object, object], depth: int) -> None:
        key_at = self.pos
        key = self.item(depth + 1)
        if isinstance(key, (list, dict)):
            raise DecodeError("map key is an array or map", key_at)
        try:
            hash(key)  # explicitly: MicroPython does not hash when probing an empty dict
        except TypeError:  # a tag holding an array or map
            raise DecodeError("map key holds an array or map", key_at) from None
        if key in result:
            raise DecodeError("duplicate map key", key_at)
        result[key] = self.item(depth + 1)

    def _at_break(self, start: int) -> bool:
        pos = self.pos
        if pos >= len(self.data):
            raise DecodeError("truncated: indefinite-length item without break", start)
        if self.data[pos] == 0xFF:
            self.pos = pos + 1
            return True
        return False

    def _indefinite(self, major: int, start: int, depth: int) -> object:
        if major == 2 or major == 3:
            raws: list[bytes] = []
            texts: list[str] = []  # each chunk must be valid UTF-8 on its own
            while not self._at_break(start):
                ib = self.data[self.pos]
                if ib >> 5 != major or ib & 31 == 31:
                    raise DecodeError("wrong chunk type in indefinite-length string", self.pos)
                chunk = self.item(depth)
                if isinstance(chunk, str):
                    texts.append(chunk)
                elif isinstance(chunk, bytes):
                    raws.append(chunk)
            return b"".join(raws) if major == 2 else "".join(texts)
        if major == 7:
            raise DecodeError("break outside an indefinite-length item", start)
        if major < 4 or major == 6:
            raise DecodeError(f"indefinite length for major type {major}", start)
        if depth >= self.max_depth:
            raise DecodeError(f"nesting deeper than {self.max_depth}", start)
        if major == 4:
            items = []
            while not self._at_break(start):
                items.append(self.item(depth + 1))
            return items
        result: dict[object, object] = {}
        while not self._at_break(start):
            self._map_entry(result, depth)
        return result
