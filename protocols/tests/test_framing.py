"""Serial framing: COBS + CRC-32, streaming resynchronisation, bounded memory."""

from __future__ import annotations

import itertools
import json
import random
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_boards.mpvm import MicroPythonVM
from citisense_protocols.errors import FrameError
from citisense_protocols.framing import (
    BAD_COBS,
    BAD_CRC,
    MAX_MESSAGE,
    OVERSIZE,
    FrameDecoder,
    cobs_decode,
    cobs_encode,
    decode_frame,
    encode_frame,
)

VECTORS_PATH = Path(__file__).parent / "vectors" / "framing.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
REASON_PREFIXES = (BAD_COBS, BAD_CRC, OVERSIZE)

messages = st.binary(max_size=MAX_MESSAGE)
noise = st.binary(max_size=80)


def feed_in_pieces(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for start, stop in itertools.pairwise(bounds):
        out += decoder.feed(stream[start:stop])
    return out


def counts(decoder: FrameDecoder) -> dict[str, int]:
    return {
        "frames": decoder.frames,
        "bad_cobs": decoder.bad_cobs,
        "bad_crc": decoder.bad_crc,
        "oversize": decoder.oversize,
    }


# --- published and shared vectors -------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["cobs"], ids=lambda v: v["data"][:12] or "empty")
def test_cobs_matches_published_examples(vector: dict[str, str]) -> None:
    data, encoded = bytes.fromhex(vector["data"]), bytes.fromhex(vector["encoded"])
    assert cobs_encode(data) == encoded
    assert cobs_decode(encoded) == data


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: str(len(v["message"]) // 2))
def test_frame_vectors_carry_message_and_zlib_crc(vector: dict[str, str]) -> None:
    message, frame = bytes.fromhex(vector["message"]), bytes.fromhex(vector["frame"])
    assert encode_frame(message) == frame
    assert frame.index(0) == len(frame) - 1
    body = cobs_decode(frame[:-1])
    assert body == message + zlib.crc32(message).to_bytes(4, "little")
    assert decode_frame(frame) == message
    assert decode_frame(frame[:-1]) == message


@pytest.mark.parametrize("vector", VECTORS["errors"], ids=lambda v: v["reason"])
def test_corrupt_frames_name_reason_and_offset(vector: dict[str, Any]) -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(bytes.fromhex(vector["frame"]))
    assert (caught.value.reason, caught.value.offset) == (vector["reason"], vector["offset"])


def test_stream_vector_recovers_intact_frames_and_counts_drops() -> None:
    vector = VECTORS["stream"]
    decoder = FrameDecoder()
    assert decoder.feed(bytes.fromhex(vector["bytes"])) == [
        bytes.fromhex(m) for m in vector["messages"]
    ]
    assert counts(decoder) == vector["counts"]
    assert decoder.dropped == 4
    assert decoder.last_error is not None and decoder.last_error.reason == OVERSIZE


def test_message_longer_than_limit_is_refused() -> None:
    assert decode_frame(encode_frame(bytes(MAX_MESSAGE))) == bytes(MAX_MESSAGE)
    with pytest.raises(FrameError, match="oversize"):
        encode_frame(bytes(MAX_MESSAGE + 1))


# --- properties ---------------------------------------------------------------------


@given(messages)
def test_any_message_round_trips_with_bounded_overhead(message: bytes) -> None:
    frame = encode_frame(message)
    assert frame.index(0) == len(frame) - 1
    # CRC, delimiter, first COBS code byte, and one more per full 254-byte run
    assert len(frame) <= len(message) + 4 + 1 + 1 + (len(message) + 4) // 254
    assert decode_frame(frame) == message
    assert FrameDecoder().feed(frame) == [message]


@given(st.lists(st.tuples(noise, messages), max_size=8), st.lists(st.integers(0, 10_000)))
def test_stream_resyncs_after_noise_and_survives_any_split(
    parts: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    # Noise ends at a 0x00 (as a line idle after noise does): every frame after it is intact.
    stream = b"".join(junk + b"\x00" + encode_frame(message) for junk, message in parts)
    expected = [message for _, message in parts]
    whole = FrameDecoder()
    assert whole.feed(stream) == expected
    assert whole.frames == len(expected)
    assert whole.dropped <= sum(junk.count(0) + 1 for junk, _ in parts if junk)
    pieces = FrameDecoder()
    assert feed_in_pieces(pieces, stream, cuts) == expected
    assert counts(pieces) == counts(whole)


def test_byte_by_byte_feed_equals_bulk_feed() -> None:
    stream = bytes.fromhex(VECTORS["stream"]["bytes"])
    single = FrameDecoder()
    got = [m for i in range(len(stream)) for m in single.feed(stream[i : i + 1])]
    assert got == FrameDecoder().feed(stream)
    assert counts(single) == VECTORS["stream"]["counts"]


def test_endless_garbage_without_delimiter_keeps_memory_bounded() -> None:
    rng = random.Random(7)
    decoder = FrameDecoder()
    chunk = bytes(rng.randrange(1, 256) for _ in range(4096))
    tracemalloc.start()
    try:
        decoder.feed(chunk)
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(250):  # 1 MB without a single 0x00
            assert decoder.feed(chunk) == []
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert grown < 2048
    assert decoder.oversize == 1  # one frame, counted once, however long it runs
    assert decoder.feed(b"\x00" + encode_frame(b"after")) == [b"after"]


# --- fuzz: hostile bytes raise FrameError and nothing else --------------------------


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits: bit flips, inserts, deletes, truncation, zeroing."""
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
            out[where] = 0
    return bytes(out)


def fuzz_inputs(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    seeds = [bytes.fromhex(v["frame"]) for v in VECTORS["frames"]]
    inputs = []
    for i in range(count):
        if i % 2:
            inputs.append(mutate(rng, rng.choice(seeds)))
        else:
            inputs.append(rng.randbytes(rng.choice((rng.randrange(8), rng.randrange(600)))))
    return inputs


def test_fuzz_decode_frame_raises_only_frame_errors_with_reason_and_offset() -> None:
    decoded = 0
    for data in fuzz_inputs(seed=1, count=100_000):
        try:
            message = decode_frame(data)
        except FrameError as error:
            assert error.reason.startswith(REASON_PREFIXES)
            assert -1 <= error.offset <= len(data)
            assert (error.offset == -1) == (error.reason == BAD_CRC)
        else:
            decoded += 1
            assert len(message) <= MAX_MESSAGE
    assert decoded > 0  # the mutations include harmless ones (e.g. a dropped delimiter)


def test_fuzz_stream_decoder_never_raises_and_still_recovers() -> None:
    rng = random.Random(2)
    decoder = FrameDecoder()
    inputs = fuzz_inputs(seed=3, count=100_000)
    for data in inputs:
        for message in decoder.feed(data):
            assert len(message) <= MAX_MESSAGE
    assert decoder.dropped > 0
    probe = rng.randbytes(40)
    assert decoder.feed(b"\x00" + encode_frame(probe)) == [probe]
    assert decoder.last_error is not None
    assert decoder.last_error.reason.startswith(REASON_PREFIXES)


# --- the same vectors on the real MicroPython VM ------------------------------------

MP_VECTORS = """
import json, binascii
from citisense_protocols.framing import cobs_encode, cobs_decode, encode_frame, decode_frame
from citisense_protocols.errors import FrameError
v = json.load(open('/vectors/framing.json'))
h = binascii.unhexlify
out = {'cobs': [], 'frames': [], 'errors': []}
for c in v['cobs']:
    out['cobs'].append([binascii.hexlify(cobs_encode(h(c['data']))).decode(),
                        binascii.hexlify(cobs_decode(h(c['encoded']))).decode()])
for f in v['frames']:
    out['frames'].append([binascii.hexlify(encode_frame(h(f['message']))).decode(),
                          binascii.hexlify(decode_frame(h(f['frame']))).decode()])
for e in v['errors']:
    try:
        decode_frame(h(e['frame']))
        out['errors'].append(None)
    except FrameError as err:
        out['errors'].append([err.reason, err.offset])
print(json.dumps(out))
"""


@pytest.mark.micropython
def test_micropython_produces_identical_frame_bytes_and_errors(mp: MicroPythonVM) -> None:
    mp.put("/vectors/framing.json", VECTORS_PATH.read_bytes())
    got = json.loads(mp.run(MP_VECTORS))
    assert got["cobs"] == [[c["encoded"], c["data"]] for c in VECTORS["cobs"]]
    assert got["frames"] == [[f["frame"], f["message"]] for f in VECTORS["frames"]]
    assert got["errors"] == [[e["reason"], e["offset"]] for e in VECTORS["errors"]]


MP_RANDOM = """
import json, binascii
from citisense_protocols.framing import encode_frame, decode_frame
out = []
for message, frame in json.load(open('/vectors/random.json')):
    message, frame = binascii.unhexlify(message), binascii.unhexlify(frame)
    out.append([binascii.hexlify(encode_frame(message)).decode(), decode_frame(frame) == message])
print(json.dumps(out))
"""


@pytest.mark.micropython
def test_micropython_frames_random_messages_like_cpython(mp: MicroPythonVM) -> None:
    rng = random.Random(9)
    sizes = [rng.choice((rng.randrange(300), MAX_MESSAGE - rng.randrange(8))) for _ in range(150)]
    # zeros and runs of 254+ non-zero bytes are where COBS implementations go wrong
    zero_rates = [rng.choice((0.0, 0.004, 0.3)) for _ in sizes]
    samples = [
        bytes(0 if rng.random() < rate else rng.randrange(1, 256) for _ in range(n))
        for n, rate in zip(sizes, zero_rates, strict=True)
    ]
    frames = [encode_frame(m) for m in samples]
    pairs = [[m.hex(), f.hex()] for m, f in zip(samples, frames, strict=True)]
    mp.put("/vectors/random.json", json.dumps(pairs).encode())
    assert json.loads(mp.run(MP_RANDOM)) == [[f.hex(), True] for f in frames]


MP_STREAM = """
import json, binascii
from citisense_protocols.framing import FrameDecoder
s = json.load(open('/vectors/framing.json'))['stream']
stream = binascii.unhexlify(s['bytes'])
out = {}
for name, step in (('bulk', len(stream)), ('bytewise', 1), ('chunks', 7)):
    d = FrameDecoder()
    got = []
    for i in range(0, len(stream), step):
        got += d.feed(stream[i:i + step])
    out[name] = [[binascii.hexlify(m).decode() for m in got],
                 {'frames': d.frames, 'bad_cobs': d.bad_cobs, 'bad_crc': d.bad_crc,
                  'oversize': d.oversize}]
print(json.dumps(out))
"""


@pytest.mark.micropython
def test_micropython_stream_decoder_resyncs_with_any_feed_size(mp: MicroPythonVM) -> None:
    mp.put("/vectors/framing.json", VECTORS_PATH.read_bytes())
    got = json.loads(mp.run(MP_STREAM))
    expected = [VECTORS["stream"]["messages"], VECTORS["stream"]["counts"]]
    assert got == {"bulk": expected, "bytewise": expected, "chunks": expected}


MP_GARBAGE_SETUP = """
import gc
from citisense_protocols.framing import FrameDecoder, encode_frame
d = FrameDecoder()
junk = bytes(range(1, 256)) * 16
d.feed(junk)
"""
MP_HEAP = "gc.collect(); print(gc.mem_alloc())"


@pytest.mark.micropython
def test_micropython_garbage_without_delimiter_keeps_heap_bounded(mp: MicroPythonVM) -> None:
    # The VM's GC frees only between runs (conservative stack scan), hence one run per step.
    mp.run(MP_GARBAGE_SETUP)
    before = int(mp.run(MP_HEAP))
    mp.run("for _ in range(100): d.feed(junk)")  # 408 KB without a single 0x00
    grown = int(mp.run(MP_HEAP)) - before
    assert grown < 16 * 1024  # a buffer that kept the noise would hold 408 KB
    recovered = mp.run("print(d.oversize, d.feed(b'\\x00' + encode_frame(b'after')))")
    assert recovered.split(None, 1) == ["1", "[b'after']\n"]
