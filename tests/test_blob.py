"""The blob format: round trip, and every rejection, on the host and in MicroPython."""
import binascii
import struct

import pytest

from conftest import ROOT, run_micropython
from ugate import UgateError, reference
from ugate.shared import blob as B

BUFS = [("input", 1, 4, 4, B.I8), ("conv0", 2, 4, 4, B.I8), ("gpool", 4, 1, 1, B.I16), ("gfc1", 2, 1, 1, B.I8),
        ("logit", 1, 1, 1, B.I32), ("act", 2, 4, 4, B.I8)]
OPS = [(B.CONV, 0, 1, B.STAGE1, 1, 1, 0, 0, 0, bytes(range(18)), struct.pack("<2i", -5, 2 ** 31 - 1), b"\x03\x18"),
       (B.GPOOL, 1, 2, B.GATE, 0, 1, 19, 7, 32768 // 16, b"", b"", b""),
       (B.DENSE, 2, 3, B.GATE, 1, 1, 0, 0, 0, bytes(8), struct.pack("<2i", 1, 2), b"\x09\x0a"),
       (B.LOGIT, 3, 4, B.GATE, 0, 1, 0, 0, 0, b"\x01\xff", struct.pack("<i", -7), b""),
       (B.COMPRESS, 1, 5, B.PH_COMPRESS, 0, 1, 0, 0, 0, b"\x02\x05", b"", b"")]


def blob():
    return B.pack(BUFS, OPS, 0.5, 0.25, 0.125, -3)


def reseal(b):
    """Fix the CRC trailer after an edit, so the check under test is the one that fires."""
    return b[:-4] + struct.pack("<I", binascii.crc32(b[:-4]))


def bad_blobs():
    b = blob()
    return {"truncated": b[:-10], "tiny": b[:20], "crc": b[:-5] + bytes([b[-5] ^ 1]) + b[-4:],
            "version": reseal(b[:4] + struct.pack("<H", 1) + b[6:]), "magic": reseal(b"XXXX" + b[4:]),
            "size": reseal(b[:-4] + b"\0\0\0\0" + b[-4:])}


MESSAGES = {"truncated": "blob size", "tiny": "blob truncated", "crc": "CRC32 mismatch", "version": "version 1, ",
            "magic": "not a ugate blob", "size": "header says"}


def test_round_trip():
    raw = blob()
    m = B.parse(raw)
    assert (m["version"], m["size"], m["thr"], m["in_scale"], m["act_scale"], m["logit_scale"]) == \
        (B.VERSION, len(raw), -3, 0.5, 0.25, 0.125)
    assert m["bufs"] == BUFS and len(m["hash"]) == 8
    for rec, op in zip(m["ops"], OPS):
        assert rec[:9] == op[:9]
        for off, data in zip(rec[9:], op[9:]):
            assert raw[off:off + len(data)] == data if data else off == 0
    assert m["ops"][0][10] % 4 == 0 and m["ops"][2][10] % 4 == 0     # int32 biases aligned
    assert B.pack(BUFS, OPS, 0.5, 0.25, 0.125, -3) == raw             # deterministic
    assert B.parse(B.pack(BUFS, OPS, 0.5, 0.25, 0.125, -2))["hash"] != m["hash"]


@pytest.mark.parametrize("what", MESSAGES)
def test_rejections_host(what):
    with pytest.raises(ValueError, match=MESSAGES[what]):
        B.parse(bad_blobs()[what])
    with pytest.raises(UgateError, match=MESSAGES[what]):
        reference.load(bad_blobs()[what])


def test_bad_records_rejected():
    with pytest.raises(ValueError, match="output"):
        B.parse(B.pack([BUFS[0], ("conv0", 2, 3, 4, B.I8)], OPS[:1], 1, 1, 1, 0))
    with pytest.raises(ValueError, match="phase"):
        B.parse(B.pack(BUFS, [OPS[1], OPS[0]], 1, 1, 1, 0))
    with pytest.raises(ValueError, match="output"):                  # a GPOOL writes I16
        B.parse(B.pack(BUFS[:2] + [("gpool", 4, 1, 1, B.I8)], OPS[:2], 1, 1, 1, 0))
    with pytest.raises(ValueError, match="input kind"):               # only DENSE reads I16
        B.parse(B.pack(BUFS[:3] + [("logit", 1, 1, 1, B.I32)], OPS[:2] + [(B.LOGIT, 2, 3, B.GATE, 0, 1, 0, 0, 0,
                                                                          bytes(4), bytes(4), b"")], 1, 1, 1, 0))
    with pytest.raises(ValueError, match="bad record"):               # j <= 7
        B.parse(B.pack(BUFS[:3], OPS[:1] + [OPS[1][:7] + (8,) + OPS[1][8:]], 1, 1, 1, 0))


def test_parse_on_micropython(tmp_path):
    for name, b in {"good": blob(), **bad_blobs()}.items():
        (tmp_path / f"{name}.blob").write_bytes(b)
    out = run_micropython("""
import blob
for name in ("good", %s):
    try:
        m = blob.parse(open(name + ".blob", "rb").read())
        print(name, m["bufs"], m["ops"], m["thr"], m["hash"])
    except ValueError as e:
        print(name, "ValueError", e)
""" % ", ".join(repr(k) for k in MESSAGES), [ROOT / "shared" / "blob.py", *tmp_path.glob("*.blob")])
    lines = dict(line.split(" ", 1) for line in out.strip().split("\n"))
    m = B.parse(blob())
    assert lines["good"] == f"{m['bufs']} {m['ops']} {m['thr']} {m['hash']}"
    for what, msg in MESSAGES.items():
        assert lines[what].startswith("ValueError") and msg in lines[what], what
