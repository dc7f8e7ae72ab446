"""RFC 8949 Appendix A examples, decoded and re-encoded on CPython and on the MicroPython VM.

The vectors file gives each example's hex, its diagnostic notation, an expected value in a
JSON form both VMs rebuild (floats as f64 bit patterns, so nothing depends on float
parsing), and whether the hex is in deterministic form (then dumps() must reproduce it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from citisense_boards.mpvm import MicroPythonVM
from citisense_protocols import cbor

VECTORS_FILE = Path(__file__).with_name("vectors") / "cbor_rfc8949_appendix_a.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))

# Runs unchanged on CPython and MicroPython: rebuilds an expected value and compares
# strictly (type-exact, floats by bit pattern so -0.0 differs from 0.0, NaN equals NaN).
VALUE_SUPPORT = """
import struct
from citisense_protocols.cbor import Tag, Simple, UNDEFINED

def rebuild(e):
    if not isinstance(e, list):
        return e
    kind = e[0]
    if kind == "float":
        return struct.unpack(">d", bytes.fromhex(e[1]))[0]
    if kind == "bytes":
        return bytes.fromhex(e[1])
    if kind == "array":
        return [rebuild(x) for x in e[1]]
    if kind == "map":
        return {rebuild(k): rebuild(v) for k, v in e[1]}
    if kind == "tag":
        return Tag(e[1], rebuild(e[2]))
    if kind == "simple":
        return Simple(e[1])
    if kind == "undefined":
        return UNDEFINED
    raise ValueError(kind)

def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (a != a and b != b) or struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and same(v, b[k]) for k, v in a.items())
    if isinstance(a, Tag):
        return a.tag == b.tag and same(a.value, b.value)
    return a == b
"""

_support: dict[str, Any] = {}
exec(VALUE_SUPPORT, _support)  # the same source the MicroPython tests send to the VM
rebuild = _support["rebuild"]
same = _support["same"]


def _vector_id(v: dict[str, Any]) -> str:
    return f"{v['hex']}={v['diag']}"


def test_vectors_file_covers_appendix_a() -> None:
    assert len(VECTORS) == 81
    assert sum(v["deterministic"] for v in VECTORS) == 64


@pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
def test_vector_decodes_to_expected_value(vector: dict[str, Any]) -> None:
    decoded = cbor.loads(bytes.fromhex(vector["hex"]))
    assert same(decoded, rebuild(vector["value"]))


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["deterministic"]], ids=_vector_id)
def test_deterministic_vector_encodes_to_same_bytes(vector: dict[str, Any]) -> None:
    assert cbor.dumps(rebuild(vector["value"])).hex() == vector["hex"]


def _run_on_vm(mp: MicroPythonVM, loop: str) -> list[str]:
    mp.put("/vectors.json", VECTORS_FILE.read_bytes())
    code = VALUE_SUPPORT + (
        "import json\n"
        "from citisense_protocols.cbor import dumps, loads\n"
        "with open('/vectors.json') as f:\n"
        "    vectors = json.load(f)\n"
        "failures = []\n"
        "for v in vectors:\n" + loop + "print(json.dumps(failures))\n"
    )
    result: list[str] = json.loads(mp.run(code))
    return result


@pytest.mark.micropython
def test_vectors_decode_on_micropython(mp: MicroPythonVM) -> None:
    failures = _run_on_vm(
        mp,
        "    if not same(loads(bytes.fromhex(v['hex'])), rebuild(v['value'])):\n"
        "        failures.append(v['hex'])\n",
    )
    assert failures == []


@pytest.mark.micropython
def test_vectors_encode_on_micropython(mp: MicroPythonVM) -> None:
    failures = _run_on_vm(
        mp,
        "    if v['deterministic'] and dumps(rebuild(v['value'])).hex() != v['hex']:\n"
        "        failures.append(v['hex'])\n",
    )
    assert failures == []
