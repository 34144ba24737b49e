"""Frames: exact bytes, COBS and frame round trips, corruption, resync, payload helpers, and the same
bytes from real MicroPython."""
import binascii
import importlib.util
import random
import sys

import pytest
from hypothesis import given, strategies as st

from conftest import ROOT, run_micropython
from ugate.shared import wire

payloads = st.binary(max_size=700)
types = st.sampled_from(sorted(wire.NAMES))
seqs = st.integers(0, 0xFFFF)


def frame(typ, seq, payload):
    f, n = wire.encode_frame(typ, seq, payload)
    return bytes(f[:n])


def test_exact_bytes():
    # body 06 | 0700 | 0000 | crc32 043ab5d4: COBS gives each run up to a zero a code byte
    assert frame(wire.ACK, 7, b"").hex() == "03" "0607" "01" "01" "05" "043ab5d4" "00"
    # body 03 | 0201 | 0300 | 00 01 02 | crc32 bb30db07
    assert frame(wire.VECTOR, 0x0102, b"\x00\x01\x02").hex() == "05" "03020103" "01" "07" "0102bb30db07" "00"


@given(types, seqs, payloads)
def test_frame_roundtrip(typ, seq, payload):
    f = frame(typ, seq, payload)
    assert 0 not in f[:-1] and f[-1] == 0 and len(f) <= wire.frame_size(len(payload))
    d = wire.Decoder()
    assert d.feed(f) == [(typ, seq, payload)] and d.corrupt == 0
    # into a caller's buffer, from a longer buffer with n: the same bytes
    out = bytearray(wire.frame_size(len(payload)) + 3)
    n = wire.encode_frame(typ, seq, payload + b"\x01junk", out, len(payload))
    assert bytes(out[:n]) == f


@given(st.lists(st.tuples(types, seqs, payloads), max_size=6), st.lists(st.integers(1, 300), max_size=20))
def test_stream_concatenated_and_split(frames, cuts):
    stream = b"\x00\x00".join(frame(*f) for f in frames)   # extra delimiters are idle fill
    d, got, i = wire.Decoder(), [], 0
    for c in cuts + [len(stream)]:
        got += d.feed(stream[i:i + c])
        i += c
    got += d.feed(stream[i:])
    assert got == frames and d.corrupt == 0


@given(types, seqs, payloads, st.data())
def test_corrupt_byte_never_decoded(typ, seq, payload, data):
    f = bytearray(frame(typ, seq, payload))
    i = data.draw(st.integers(0, len(f) - 2))
    f[i] ^= data.draw(st.integers(1, 255))
    good = frame(wire.STATS, 1, b"after")
    d = wire.Decoder()
    assert d.feed(bytes(f) + good) == [(wire.STATS, 1, b"after")]   # resynced at the next 0x00
    assert d.corrupt >= 1 and ("offset" in d.error or "bytes" in d.error)


@given(types, seqs, payloads, st.data())
def test_truncated(typ, seq, payload, data):
    f = frame(typ, seq, payload)
    cut = data.draw(st.integers(1, len(f) - 2))
    d = wire.Decoder()
    assert d.feed(f[:cut] + b"\x00" + f) == [(typ, seq, payload)] and d.corrupt == 1


def test_errors_name_offset():
    with pytest.raises(ValueError, match="offset 0: group of 5 bytes runs past"):
        wire.cobs_decode(bytearray(b"\x05\x01"), 2)
    with pytest.raises(ValueError, match="offset 1: 0x00 inside"):
        wire.cobs_decode(bytearray(b"\x03\x00\x01"), 3)
    body = bytearray(frame(wire.VECTOR, 1, b"abc")[:-1])
    n = wire.cobs_decode(body, len(body))
    body[6] ^= 1
    with pytest.raises(ValueError, match=r"offset 8: crc32 0x[0-9a-f]{8}, computed"):
        wire.decode_frame(body, n)
    with pytest.raises(ValueError, match="offset 3: length field 3 but 2 payload bytes"):
        wire.decode_frame(body, n - 1)
    with pytest.raises(ValueError, match="INFO: payload of 3 bytes"):
        wire.rd_info(b"abc")


def test_overlong_resync():
    d = wire.Decoder(max_payload=16)
    assert d.feed(b"\x01" * 100) == [] and d.corrupt == 1 and "without a delimiter" in d.error
    assert d.feed(b"\x01" * 10 + b"\x00" + frame(wire.ACK, 2, b"\x01\x00")) == [(wire.ACK, 2, b"\x01\x00")]


def test_payload_helpers():
    info = {"wire": wire.VERSION, "blob_hash": b"\x00\xff" * 4, "heap_free": 200_000, "n_in": 784,
            "n_act": 784, "max_payload": 800, "version": "0.1.0", "board": "esp32-s3 devkit"}
    p = wire.wr_info(info["version"], info["blob_hash"], info["board"], 200_000, 784, 784, 800)
    assert wire.rd_info(p) == info
    r = {"seq": 65535, "logit": -123456, "decision": 1, "t_stage1": 40000, "t_gate": 300, "t_encode": 900, "t_transmit": 5000}
    p = wire.wr_result(*r.values())
    out = bytearray(30)
    assert len(p) == wire.RESULT_SIZE == wire.wr_result(*r.values(), out=out) and out[:23] == p
    assert wire.rd_result(p) == r
    assert wire.rd_activations(wire.wr_activations(513, b"xyz")) == (513, b"xyz")
    assert wire.rd_ack(wire.wr_ack(70000)) == 70000 & 0xFFFF
    assert wire.rd_error(wire.wr_error(wire.E_MODEL, "no blob")) == (wire.E_MODEL, "no blob")
    s = dict(zip(wire.STATS_FIELDS, range(1, 9)))
    assert wire.rd_stats(wire.wr_stats(*s.values())) == s


def test_crc_fallback_matches_binascii(monkeypatch):
    monkeypatch.setitem(sys.modules, "binascii", None)   # import binascii -> ImportError
    spec = importlib.util.spec_from_file_location("wire_nocrc", ROOT / "shared/wire.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    for data in (b"", b"abc", bytes(range(256)) * 3):
        assert m.crc32(data) == binascii.crc32(data)
        assert m.crc32(data, 12345) == binascii.crc32(data, 12345)


def test_micropython_same_bytes():
    rng = random.Random(1)
    cases = [(rng.choice(sorted(wire.NAMES)), rng.randrange(65536), bytes(rng.choice([0, 0, 1, 255, rng.randrange(256)])
             for _ in range(rng.choice([0, 1, 253, 254, 255, 300, 600])))) for _ in range(24)]
    want = [frame(*c).hex() for c in cases]
    stream = b"junk\x00" + b"".join(frame(*c) for c in cases)
    code = f"""
import binascii, wire
cases = {cases!r}
out = bytearray(wire.frame_size(600))
for t, s, p in cases:
    n = wire.encode_frame(t, s, p, out)
    print(binascii.hexlify(out[:n]).decode())
d = wire.Decoder()
got = d.feed({stream!r})
print(d.corrupt, got == cases)
"""
    lines = run_micropython(code, [ROOT / "shared/wire.py"]).split()
    assert lines[:-2] == want and lines[-2:] == ["1", "True"]
