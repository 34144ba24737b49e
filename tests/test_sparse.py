"""Sparse encoding: round trips, the choice of the smallest mode, bad payloads, and the same bytes
from real MicroPython."""
import importlib.util
import random

import pytest
from hypothesis import given, strategies as st

from conftest import ROOT, run_micropython
from ugate.shared import sparse


def enc(act):
    out = bytearray(sparse.size(len(act)))
    return bytes(out[:sparse.encode(act, len(act), out)])


def acts(signed=True):
    value = st.integers(-128, 127) if signed else st.integers(1, 127)
    return st.integers(0, 2000).flatmap(lambda n: st.lists(
        st.one_of(st.just(0), st.just(0), st.just(0), value), min_size=n, max_size=n)).map(
        lambda v: bytes(x & 0xFF for x in v))


@given(st.one_of(acts(), acts(signed=False)))
def test_roundtrip(act):
    p = enc(act)
    assert sparse.decode(p) == act and len(p) <= sparse.size(len(act))


def sizes(act):
    n, nnz = len(act), sum(1 for b in act if b)
    gaps, prev = 0, -1
    for i, b in enumerate(act):
        if b:
            gaps += (i - prev - 1) // 255 + 1
            prev = i
    return {sparse.DENSE: n, sparse.BITMAP: (n + 7) // 8 + nnz, sparse.DELTA: gaps + nnz}


@given(acts())
def test_smallest_mode(act):
    p = enc(act)
    best = min(sizes(act).values())
    assert len(p) - sparse.HEADER <= best
    if any(b > 127 for b in act):   # a negative value: no RICE
        assert p[0] in sizes(act) and len(p) - sparse.HEADER == best


def test_modes_and_escape():
    assert enc(bytes(range(100, 228)))[0] == sparse.DENSE   # no zeros
    assert enc(bytes([0x80, 0, 0, 0, 0x81, 0, 0, 0] * 8))[0] == sparse.BITMAP   # negative: no RICE
    long_gap = bytes(600) + b"\xff" + bytes(10) + b"\x90"
    p = enc(long_gap)
    assert p[0] == sparse.DELTA and p[5:9] == b"\xff\xff\x5a\x0a"   # 600 = 255 + 255 + 90
    p = enc(bytes(300) + b"\x05" + bytes(300) + b"\x03")
    assert p[0] & 3 == sparse.RICE and len(p) == 5 + 4   # 28 bits; DELTA would take 6 bytes
    assert enc(b"") == b"\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("p, msg", [
    (b"\x01\x08", "shorter than the header"),
    (b"\x05\x08\x00\x01\x00\x01\x05", "offset 0: mode byte 0x05"),
    (b"\x01\x08\x00\x09\x00" + bytes(10), "offset 3: 9 nonzero of 8"),
    (b"\x01\x08\x00\x01\x00\x03\x05", "offset 5: more set bits than nnz=1"),
    (b"\x01\x08\x00\x02\x00\x01\x05\x06", "bitmap has 1 set bits, header says nnz=2"),
    (b"\x02\x08\x00\x01\x00\x09\x05", "offset 5: index 9 past n=8"),
    (b"\x02\x08\x00\x01\x00\x01\x00", "offset 6: a zero among the nonzero values"),
    (b"\x03\x08\x00\x02\x00\xff", "Rice bits run past the end"),
    (b"\x03\x08\x00\x01\x00\x00\x00", "offset 6: 1 bytes after the Rice bits"),
])
def test_bad_payloads(p, msg):
    with pytest.raises(ValueError, match=msg):
        sparse.decode(p)


def test_micropython_same_bytes():
    rng = random.Random(2)
    cases = []
    for n, zeros in [(0, 1), (1, 0), (784, 0.97), (784, 0.9), (784, 0.5), (784, 0.99), (1500, 0.995), (100, 0.0)]:
        for signed in (False, True):
            cases.append(bytes(0 if rng.random() < zeros else rng.randrange(1, 128) if not signed else rng.randrange(1, 256)
                               for _ in range(n)))
    want = [enc(c).hex() for c in cases]
    code = f"""
import binascii, sparse
out = bytearray(sparse.size(1500))
for a in {cases!r}:
    n = sparse.encode(a, len(a), out)
    print(binascii.hexlify(out[:n]).decode(), sparse.decode(out[:n]) == a)
"""
    lines = run_micropython(code, [ROOT / "shared/sparse.py"]).splitlines()
    assert [ln.split(" ") for ln in lines] == [[h, "True"] for h in want]


def test_near_entropy_bound():
    # bench/wire.py's synthetic activations at the bundled models' sparsity (97% zeros of 784)
    spec = importlib.util.spec_from_file_location("bench_wire", ROOT / "bench/wire.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.measure(bench.synthetic(0.97, count=100))
    assert r["payload"] < 1.3 * r["bound"] and r["n"] / r["wire"] > 13
