"""Meter decoders on golden bytes, and each fault (bad checksum, short read, stall, unplug, wrong model)
as a marked gap or one clear error."""
import os
import pty
import socket
import struct
import threading
import time
import tty

import numpy as np
import pytest

from ugate import meters as M

# --- RuiDeng UM: replies laid out by hand from the protocol (big-endian) ---


def um_frame(model, volts, amps, watts, tail):
    f = bytearray(130)
    f[0:2], f[2:4], f[4:6], f[6:10] = bytes.fromhex(model), bytes.fromhex(volts), bytes.fromhex(amps), bytes.fromhex(watts)
    f[128:130] = bytes.fromhex(tail)
    return bytes(f)


def test_um25c_golden_reply():
    # 0x1403 = 5123 mV, 0x04d2 = 1234 x 0.1 mA, 0x278 = 632 mW
    v, a, w = M.um_decode("um25c", um_frame("09c9", "1403", "04d2", "00000278", "fff1"))
    assert (v, a, w) == pytest.approx((5.123, 0.1234, 0.632))


def test_um24c_counts_coarser_than_um25c():
    # the same counts mean 10 mV and 1 mA on the UM24C
    v, a, _ = M.um_decode("um24c", um_frame("0963", "01ff", "007b", "00000000", "fff1"))
    assert (v, a) == pytest.approx((5.11, 0.123))


def test_um34c_checksum():
    f = bytearray(um_frame("0d4c", "01f4", "0064", "00000000", "0000"))
    x = 0
    for b in f[:129]:
        x ^= b
    f[129] = x
    assert M.um_decode("um34c", bytes(f))[:2] == pytest.approx((5.0, 0.1))
    f[129] ^= 0x5A
    with pytest.raises(ValueError, match="checksum"):
        M.um_decode("um34c", bytes(f))


def test_um_rejects_truncated_and_bad_ending():
    f = um_frame("09c9", "1403", "04d2", "00000278", "fff1")
    with pytest.raises(ValueError, match="129 bytes"):
        M.um_decode("um25c", f[:129])
    with pytest.raises(ValueError, match="not fff1"):
        M.um_decode("um25c", f[:-1] + b"\x00")


def test_um_wrong_model_names_the_one_that_answered():
    with pytest.raises(M.MeterError, match="answers as um24c, not um25c"):
        M.um_decode("um25c", um_frame("0963", "01ff", "007b", "00000000", "fff1"))


def test_um_encode_round_trips():
    for kind in M.UM_IDS:
        assert M.um_decode(kind, M.um_encode(kind, 3.3, 0.0512))[:2] == pytest.approx((3.3, 0.0512), abs=1e-3)


# --- FNIRSI: the host's requests as captured from the meter's own tool, and data reports by hand ---

def test_fnirsi_requests_match_captured_bytes():
    # AA 81 / AA 82 / AA 83 as a published FNB58 capture sends them: the CRC-8 (poly 0x39, init 0x42)
    # of bytes 1..62 is their last byte
    assert M.fnb_request(0x81) == bytes.fromhex("aa81") + bytes(61) + bytes.fromhex("8e")
    assert M.fnb_request(0x82) == bytes.fromhex("aa82") + bytes(61) + bytes.fromhex("96")
    assert M.fnb_request(0x83) == bytes.fromhex("aa83") + bytes(61) + bytes.fromhex("9e")


def fnb_packet(readings, crc=None):
    p = bytearray(64)
    p[0], p[1] = 0xAA, 0x04
    for i, (v10uv, a10ua) in enumerate(readings):
        p[2 + 15 * i:2 + 15 * i + 8] = struct.pack("<II", v10uv, a10ua)
    p[63] = M.crc8(p[1:63]) if crc is None else crc
    return bytes(p)


def test_fnirsi_golden_data_report():
    got = M.fnb_decode(fnb_packet([(500000, 5120), (330000, 24), (0, 0), (2000000, 300000)]))
    assert [x for r in got for x in r] == pytest.approx([5.0, 0.0512, 3.3, 0.00024, 0, 0, 20.0, 3.0])
    assert M.fnb_decode(bytes.fromhex("aa03") + bytes(62)) is None   # another report type: not data


def test_fnirsi_rejects_bad_crc_and_short_report():
    good = fnb_packet([(500000, 5120)] * 4)
    with pytest.raises(ValueError, match="CRC"):
        M.fnb_decode(good[:63] + bytes([good[63] ^ 1]))
    with pytest.raises(ValueError, match="63 bytes"):
        M.fnb_decode(good[:63])


class FakeHid:
    """The HID interface the FNIRSI driver reads, over a seqpacket socket pair."""

    def __init__(self):
        self.a, self.b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.path = "fake"

    def device(self):
        d = M.HidDevice.__new__(M.HidDevice)
        d.path, d.sock, d.fd = "fake-hid", self.a, self.a.fileno()
        return d


def test_fnirsi_driver_drops_the_first_report_and_marks_a_bad_one():
    h = FakeHid()
    m = M.FnirsiMeter("fnb58", "fake", h.device())
    m.stall_s = 0.2
    h.b.send(fnb_packet([(1, 1)] * 4))                     # stale: dropped
    h.b.send(fnb_packet([(500000, 1000)] * 4))
    h.b.send(fnb_packet([(500000, 2000)] * 4, crc=0))      # corrupt: 4 samples lost
    h.b.send(fnb_packet([(500000, 3000)] * 4))
    it = m.samples()
    got = [next(it) for _ in range(9)]
    assert [type(s).__name__ for s in got] == ["Sample"] * 4 + ["Gap"] + ["Sample"] * 4
    assert got[4].lost == 4 and "CRC" in got[4].reason
    assert got[0].amps == pytest.approx(0.01) and got[5].amps == pytest.approx(0.03)
    assert got[5].t - got[0].t == pytest.approx(8 / 100)   # the lost samples keep their place in time
    assert h.b.recv(64) == M.fnb_request(0x81)               # init and start were sent
    h.b.close()                                              # unplugged
    with pytest.raises(M.MeterError, match="went away|unplugged"):
        next(it)


def test_fnirsi_stall_is_a_gap_then_an_error():
    h = FakeHid()
    m = M.FnirsiMeter("fnb58", "fake", h.device())
    m.stall_s, m.STALLS = 0.05, 3
    it = m.samples()
    assert isinstance(next(it), M.Gap) and isinstance(next(it), M.Gap)
    with pytest.raises(M.MeterError, match="no report"):
        next(it)


# --- Nordic PPK2 ---

CAL = {f"{k}{r}": v for r in range(5) for k, v in (("R", [1000.0, 100.0, 10.0, 1.0, 0.05][r]), ("GS", 0.0), ("GI", 1.0),
                                                     ("O", 100.0), ("S", 0.0), ("I", 0.0), ("UG", 1.0))}


def test_ppk2_sample_word_layout():
    # ADC 0x1234 in bits 0-13, range 3 in 14-16, counter 0x2a in 18-23, logic 0x81 in 24-31
    w = np.frombuffer(bytes.fromhex("34d2a881"), "<u4")
    assert int(w[0] & 0x3FFF) == 0x1234 and int(w[0] >> 14 & 7) == 3
    assert int(w[0] >> 18 & 0x3F) == 0x2A and int(w[0] >> 24) == 0x81
    assert M.ppk2_words(np.array([0x1234]), np.array([3]), np.array([0x2A]), np.array([0x81])).astype("<u4").tobytes() == bytes.fromhex("34d2a881")


def test_ppk2_calibration_and_conversion():
    text = "Calibrated: 0\n" + "\n".join(f"{k}: {v}" for k, v in CAL.items()) + "\nVDD: 3300\nHW: 1\nmode: 2\nEND"
    cal = M.ppk2_calibration(text)
    assert cal["R3"] == 1.0 and cal["VDD"] == 3300
    # range 2 (10 ohm): (4 x 1000 - 100) x 1.8/163840 / 10 = 4.2847 mA
    assert M.ppk2_amps(np.array([1000.0]), np.array([2]), cal, 3300)[0] == pytest.approx(3900 * 1.8 / 163840 / 10)
    with pytest.raises(M.MeterError, match="calibration lacks"):
        M.ppk2_calibration("R0: 1\nEND")


def test_ppk2_decoder_averages_and_reports_lost_samples():
    n = 1000
    cnt = np.arange(n) % 64
    keep = np.ones(n, bool)
    keep[500:510] = False                     # 10 samples lost on the wire
    adc, rng = M.ppk2_raw(np.full(n, 0.01), CAL, 3300)
    logic = ((np.arange(n) >= 260) | (np.arange(n) >= 230) << 1).astype(np.uint32)   # D0 rises at 260, D1 at 230
    words = M.ppk2_words(adc, rng, cnt.astype(np.uint32), logic)[keep].astype("<u4").tobytes()
    d = M.Ppk2Decoder(CAL, 3300, decimate=100)
    out = []
    for i in range(0, len(words), 333):       # byte chunks that split samples
        out += d.feed(words[i:i + 333])
    gaps = [s for s in out if isinstance(s, M.Gap)]
    samples = [s for s in out if isinstance(s, M.Sample)]
    assert len(gaps) == 1 and gaps[0].lost == 10 and gaps[0].t == pytest.approx(500e-5)
    assert all(s.amps == pytest.approx(0.01, rel=2e-3) for s in samples)
    assert [s.logic for s in samples[:4]] == [0, 0, 2, 3]   # each bit its majority over the window
    assert len(samples) == 9                                 # 5 before the hole, 4 after (from sample 510 on)
    assert samples[-1].t == pytest.approx(860e-5)            # time counts the lost samples: 810..909


def _pty():
    master, slave = pty.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def test_ppk2_driver_over_a_serial_port(tmp_path):
    from ugate.vmeter import ppk2_metadata
    master, slave, path = _pty()

    def device():
        got = b""
        while M.PPK2_START not in got:
            got += os.read(master, 64)
            if bytes([M.PPK2_METADATA]) in got[:1]:
                os.write(master, ppk2_metadata(CAL))
                got = got[1:]
        words = M.ppk2_words(*M.ppk2_raw(np.full(400, 0.002), CAL, 3300), np.arange(400) % 64, np.zeros(400, np.uint32))
        os.write(master, words.astype("<u4").tobytes())
    th = threading.Thread(target=device, daemon=True)
    th.start()
    m = M.Ppk2Meter(path, decimate=100)
    it = m.samples()
    got = [next(it) for _ in range(4)]
    assert all(isinstance(s, M.Sample) and s.amps == pytest.approx(0.002, rel=1e-2) for s in got)
    os.close(master)   # unplugged
    with pytest.raises(M.MeterError, match="unplugged|no samples"):
        next(it)
    m.port.close()
    os.close(slave)


def test_um_driver_faults_over_a_serial_port():
    master, slave, path = _pty()
    m = M.UMMeter("um25c", path, period=0.01)
    m.stall_s, m.STALLS = 0.1, 2
    good = M.um_encode("um25c", 5.0, 0.1)
    it = m.samples()

    def answer(reply):
        def run():
            os.read(master, 1)
            os.write(master, reply)
        threading.Thread(target=run, daemon=True).start()
    answer(good)
    s = next(it)
    assert isinstance(s, M.Sample) and (s.volts, s.amps) == pytest.approx((5.0, 0.1))
    answer(good[:-2] + b"\x00\x00")           # corrupt ending: a gap, the driver goes on
    g = next(it)
    assert isinstance(g, M.Gap) and "fff1" in g.reason
    answer(good[:60])                         # short reply: a gap
    assert isinstance(next(it), M.Gap)
    answer(M.um_encode("um24c", 5.0, 0.1))    # another meter answers: one clear error
    with pytest.raises(M.MeterError, match="um24c, not um25c"):
        next(it)
    m.close()
    os.close(master)
    os.close(slave)


def test_um_driver_unplugged():
    master, slave, path = _pty()
    m = M.UMMeter("um25c", path, period=0.01)
    os.close(master)
    os.close(slave)
    with pytest.raises(M.MeterError):
        next(m.samples())


def test_joulescope_is_optional():
    try:
        import joulescope  # noqa: F401
        pytest.skip("joulescope is installed: this checks the message when it is not")
    except ImportError:
        pass
    with pytest.raises(M.MeterError, match="package is not installed"):
        M.open_meter("joulescope")


def test_unknown_meter_kind():
    with pytest.raises(M.MeterError, match="unknown meter 'um99'"):
        M.open_meter("um99:/dev/null")
