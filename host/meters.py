"""USB power meters behind one small interface: `open_meter("ppk2:/dev/ttyACM1")` returns a Meter whose
samples() yields Sample(t, volts, amps, logic) (t: time.monotonic() seconds; logic: the meter's digital
inputs as a byte, or None) and Gap(t, lost, reason) where samples were lost (a bad checksum, a stall,
a counter jump). A meter that is unplugged, or answers as another model, raises MeterError: one line.

Decoders of the published protocols (no GPL code: the common PPK2 library is GPL-2.0):
- RuiDeng UM24C / UM25C / UM34C: Bluetooth serial (/dev/rfcomm0), 9600 baud; request 0xF0, reply 130
  bytes big-endian: model id at 0, volts at 2, amps at 4, watts at 6 (u32); the UM25C counts volts in mV
  and amps in 0.1 mA (the others in 10 mV and mA); UM34C ends in an XOR of the 129 bytes before it, the
  others in FF F1. About 2 new readings a second.
- FNIRSI FNB48 / FNB48S / C1 / FNB58: USB HID, 64-byte reports. Host sends AA 81 (init), AA 82 (start),
  then AA 83 each second (keep-alive), each zero-padded with a CRC-8 (poly 0x39, init 0x42) of bytes
  1..62 in byte 63. The meter sends AA 04 + 4 samples of 15 bytes (u32 LE volts in 10 µV, u32 LE amps in
  10 µA, D+ and D- in mV, 1 byte, u16 LE temperature) + 1 byte + CRC-8 of bytes 1..62. 100 samples/s;
  the first packet is stale and dropped.
- Nordic PPK2: USB serial. GetMetadata (0x19) answers calibration text ending "END"; SetPowerMode (0x11:
  1 ampere meter, 2 source), RegulatorSet (0x0D, mV big-endian), DeviceRunningSet (0x0C, DUT power),
  AverageStart/Stop (0x06/0x07). Samples: u32 LE at 100 kS/s: ADC bits 0-13, range 14-16, a 6-bit counter
  18-23, logic D0-D7 24-31; converted with the calibration (Nordic's formula), averaged down to
  `decimate` and checked by the counter: a jump is a Gap with the samples lost (never silently dropped).
- Joulescope: through its own package (optional; MeterError saying so when absent).
"""
import os
import select
import socket
import stat
import struct
import time
from dataclasses import dataclass

import numpy as np

from ugate import UgateError

KINDS = ("um24c", "um25c", "um34c", "fnb48", "fnb48s", "c1", "fnb58", "ppk2", "joulescope")


class MeterError(UgateError):
    pass


@dataclass
class Sample:
    t: float
    volts: float
    amps: float
    logic: int = None


@dataclass
class Gap:
    t: float
    lost: int        # samples lost (an estimate where the meter cannot tell: 1)
    reason: str


# --- RuiDeng UM series -------------------------------------------------------------------------

UM_IDS = {"um24c": 0x0963, "um25c": 0x09C9, "um34c": 0x0D4C}
UM_SCALE = {"um24c": (0.01, 0.001), "um25c": (0.001, 0.0001), "um34c": (0.01, 0.001)}   # V, A per count
UM_REQUEST = b"\xf0"
UM_SIZE = 130
UM_RATE = 2.0


def um_decode(kind, frame):
    """(volts, amps, watts) of one 130-byte UM reply; ValueError names what is wrong."""
    if len(frame) != UM_SIZE:
        raise ValueError(f"{kind}: reply of {len(frame)} bytes, not {UM_SIZE}")
    model = struct.unpack_from(">H", frame, 0)[0]
    if model != UM_IDS[kind]:
        other = {v: k for k, v in UM_IDS.items()}.get(model, f"unknown id 0x{model:04x}")
        raise MeterError(f"the meter answers as {other}, not {kind}: give --meter {other if model in UM_IDS.values() else 'KIND'}:PATH")
    if kind == "um34c":
        x = 0
        for b in frame[:-1]:
            x ^= b
        if x != frame[-1]:
            raise ValueError(f"{kind}: checksum 0x{frame[-1]:02x}, computed 0x{x:02x}")
    elif frame[-2:] != b"\xff\xf1":
        raise ValueError(f"{kind}: reply ends in {frame[-2:].hex()}, not fff1")
    v, a = struct.unpack_from(">HH", frame, 2)
    w = struct.unpack_from(">I", frame, 6)[0]
    sv, sa = UM_SCALE[kind]
    return v * sv, a * sa, w * 0.001


def um_encode(kind, volts, amps):
    """The 130-byte reply a UM meter sends for these readings (virtual meter, tests)."""
    sv, sa = UM_SCALE[kind]
    f = bytearray(UM_SIZE)
    v, a = round(volts / sv), round(amps / sa)
    struct.pack_into(">HHHI", f, 0, UM_IDS[kind], v, a, round(v * sv * a * sa * 1000))
    if kind == "um34c":
        x = 0
        for b in f[:-1]:
            x ^= b
        f[-1] = x
    else:
        f[-2:] = b"\xff\xf1"
    return bytes(f)


# --- FNIRSI USB HID ----------------------------------------------------------------------------

FNB_INIT, FNB_START, FNB_KEEPALIVE = 0x81, 0x82, 0x83
FNB_DATA = 0x04
FNB_RATE = 100.0


def crc8(data, poly=0x39, init=0x42):
    c = init
    for b in data:
        c ^= b
        for _ in range(8):
            c = ((c << 1) ^ poly) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def fnb_request(cmd):
    r = bytearray(64)
    r[0], r[1] = 0xAA, cmd
    r[63] = crc8(r[1:63])
    return bytes(r)


def fnb_decode(packet):
    """[(volts, amps)] * 4 of one 64-byte data report; None for another report type; ValueError for a
    short or corrupt one."""
    if len(packet) != 64:
        raise ValueError(f"fnirsi: report of {len(packet)} bytes, not 64")
    if packet[0] != 0xAA or packet[1] != FNB_DATA:
        return None
    if crc8(packet[1:63]) != packet[63]:
        raise ValueError(f"fnirsi: CRC 0x{packet[63]:02x}, computed 0x{crc8(packet[1:63]):02x}")
    return [tuple(x * 1e-5 for x in struct.unpack_from("<II", packet, 2 + 15 * i)) for i in range(4)]


def fnb_encode(readings):
    """A data report for 4 (volts, amps) readings (virtual meter, tests)."""
    p = bytearray(64)
    p[0], p[1] = 0xAA, FNB_DATA
    for i, (v, a) in enumerate(readings):
        struct.pack_into("<IIHHBH", p, 2 + 15 * i, round(v * 1e5), round(a * 1e5), 0, 0, 0, 250)
    p[63] = crc8(p[1:63])
    return bytes(p)


class HidDevice:
    """A HID device as the FNIRSI driver reads it: one 64-byte report a read. A hidraw node
    (/dev/hidrawN), or a Unix seqpacket socket serving the same reports (the virtual meter)."""

    def __init__(self, path):
        self.path = path
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                self.sock.connect(path)
                self.fd = self.sock.fileno()
            else:
                self.sock, self.fd = None, os.open(path, os.O_RDWR)
        except OSError as e:
            raise MeterError(f"cannot open {path}: {e.strerror} (plugged in? hidraw needs a udev rule or root)") from None

    def write(self, report):
        try:
            os.write(self.fd, report)
        except OSError as e:
            raise MeterError(f"{self.path}: {e.strerror}: meter unplugged?") from None

    def read(self, timeout):
        """One report, or None after timeout seconds; MeterError when the device went away."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return None
        try:
            r = os.read(self.fd, 64)
        except OSError as e:
            raise MeterError(f"{self.path}: {e.strerror}: meter unplugged?") from None
        if not r:
            raise MeterError(f"{self.path}: the meter went away (unplugged?)")
        return r

    def close(self):
        (self.sock.close() if self.sock else os.close(self.fd))


# --- Nordic PPK2 -------------------------------------------------------------------------------

PPK2_METADATA, PPK2_POWER_MODE, PPK2_REGULATOR, PPK2_DUT_POWER = 0x19, 0x11, 0x0D, 0x0C
PPK2_START, PPK2_STOP = 0x06, 0x07
PPK2_AMPERE, PPK2_SOURCE = 1, 2
PPK2_RATE = 100_000
ADC_MULT = 1.8 / 163840


def ppk2_calibration(text):
    """The calibration dict from GetMetadata's text ("R0: 1031.64" lines ... "END")."""
    cal = {}
    for line in text.replace("END", "").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            try:
                cal[k.strip()] = float(v)
            except ValueError:
                cal[k.strip()] = v.strip()
    need = [f"{k}{r}" for k in ("R", "GS", "GI", "O", "S", "I", "UG") for r in range(5)]
    if missing := [k for k in need if k not in cal]:
        raise MeterError(f"ppk2: calibration lacks {', '.join(missing[:3])}: not a PPK2, or its metadata was cut short")
    return cal


def ppk2_amps(adc, rng, cal, vdd_mv):
    """Amps of raw 14-bit ADC readings in ranges rng (arrays), Nordic's conversion."""
    out = np.empty(len(adc))
    for r in range(5):
        m = rng == r
        if m.any():
            x = (adc[m] * 4.0 - cal[f"O{r}"]) * (ADC_MULT / cal[f"R{r}"])
            out[m] = cal[f"UG{r}"] * (x * (cal[f"GS{r}"] * x + cal[f"GI{r}"]) + cal[f"S{r}"] * (vdd_mv / 1000) + cal[f"I{r}"])
    return out


def ppk2_raw(amps, cal, vdd_mv):
    """(adc, range) that ppk2_amps turns back into `amps` to within an ADC step (virtual meter, tests):
    the most sensitive range whose resistor keeps the reading inside the ADC's span, the formula inverted."""
    amps = np.asarray(amps, float)
    span = 0x3FFF * 4 * ADC_MULT * 0.95
    rng = np.full(len(amps), 4)
    for r in (3, 2, 1, 0):
        rng[amps * cal[f"R{r}"] < span] = r
    adc = np.empty(len(amps))
    for r in range(5):
        m = rng == r
        c = amps[m] / cal[f"UG{r}"] - cal[f"S{r}"] * vdd_mv / 1000 - cal[f"I{r}"]   # = x (GS x + GI)
        gs, gi = cal[f"GS{r}"], cal[f"GI{r}"]
        x = c / gi if gs == 0 else (-gi + np.sqrt(gi * gi + 4 * gs * c)) / (2 * gs)
        adc[m] = (x * cal[f"R{r}"] / ADC_MULT + cal[f"O{r}"]) / 4
    return np.clip(np.round(adc), 0, 0x3FFF).astype(np.uint32), rng.astype(np.uint32)


def ppk2_words(adc, rng, counter, logic):
    return (adc & 0x3FFF) | (rng & 7) << 14 | (counter & 0x3F) << 18 | (logic & 0xFF) << 24


class Ppk2Decoder:
    """Bytes in, decimated (t, amps, logic) out, with the counter checked. Byte-stream alignment is
    kept across calls; a counter jump is a Gap of the samples missing (the 6-bit counter sees up to 63
    lost in a row; more shows as fewer)."""

    def __init__(self, cal, vdd_mv, decimate=100, t0=0.0):
        self.cal, self.vdd, self.dec, self.t0 = cal, vdd_mv, decimate, t0
        self.buf = b""
        self.n = 0              # samples counted, lost ones included: the time base
        self.last = None        # the previous sample's counter
        self.pend_a, self.pend_l = np.zeros(0), np.zeros(0, np.uint8)   # samples waiting to fill a window

    def feed(self, data):
        self.buf += data
        k = len(self.buf) // 4 * 4
        w = np.frombuffer(self.buf[:k], "<u4")
        self.buf = self.buf[k:]
        out = []
        if not len(w):
            return out
        cnt = ((w >> 18) & 0x3F).astype(np.int64)
        prev = np.concatenate(([cnt[0] - 1 if self.last is None else self.last], cnt[:-1]))
        step = (cnt.astype(int) - prev) % 64
        self.last = int(cnt[-1])
        amps = ppk2_amps((w & 0x3FFF).astype(float), (w >> 14) & 7, self.cal, self.vdd)
        logic = (w >> 24).astype(np.uint8)
        start = 0
        for j in np.flatnonzero(step != 1):
            out += self._run(amps[start:j], logic[start:j])
            lost = int(step[j] - 1) % 64 or 64
            out.append(Gap(self.t0 + self.n / PPK2_RATE, lost, f"ppk2: counter jumped {int(prev[j])} -> {int(cnt[j])}"))
            self.n += len(self.pend_a) + lost   # a window with a hole in it is not an average of what happened
            self.pend_a, self.pend_l = self.pend_a[:0], self.pend_l[:0]
            start = j
        return out + self._run(amps[start:], logic[start:])

    def _run(self, amps, logic):
        # whole windows of pending + these samples; self.n counts samples before the pending ones
        amps = np.concatenate((self.pend_a, amps))
        logic = np.concatenate((self.pend_l, logic))
        k, d = len(amps) // self.dec, self.dec
        # each logic bit of a reading is its majority over the window: an edge lands within half a window
        bits = (logic[:k * d, None] >> np.arange(8)) & 1
        lg = ((bits.reshape(k, d, 8).sum(axis=1) * 2 >= d) << np.arange(8)).sum(axis=1)
        out = [Sample(self.t0 + (self.n + (i + 0.5) * d) / PPK2_RATE, self.vdd / 1000, float(amps[i * d:(i + 1) * d].mean()),
                      int(lg[i])) for i in range(k)]
        self.n += k * d
        self.pend_a, self.pend_l = amps[k * d:], logic[k * d:]
        return out


# --- the drivers -------------------------------------------------------------------------------

class Meter:
    kind = None
    rate = None            # nominal samples/s delivered by samples()
    stall_s = 2.0          # no data this long: a Gap; STALLS of them in a row: MeterError
    STALLS = 5

    def samples(self):
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serial(path, baud):
    import serial
    try:
        return serial.serial_for_url(path, baudrate=baud, timeout=0.05)
    except (serial.SerialException, ValueError) as e:
        raise MeterError(f"cannot open meter port {path}: {e} (plugged in? paired: rfcomm bind?)") from None


def _io(path, f, *a):
    import serial
    import termios
    try:
        return f(*a)
    except (serial.SerialException, OSError, termios.error) as e:   # termios: a port gone under tcflush
        raise MeterError(f"meter on {path}: {e} (unplugged?)") from None


class UMMeter(Meter):
    rate = UM_RATE

    def __init__(self, kind, path, period=1 / UM_RATE):
        self.kind, self.path, self.period = kind, path, period
        self.port = _serial(path, 9600)

    def samples(self):
        stalls, next_t = 0, time.monotonic()
        while True:
            time.sleep(max(0.0, next_t - time.monotonic()))
            next_t += self.period
            _io(self.path, self.port.reset_input_buffer)
            _io(self.path, self.port.write, UM_REQUEST)
            got, t_end = b"", time.monotonic() + self.stall_s
            while len(got) < UM_SIZE and time.monotonic() < t_end:
                got += _io(self.path, self.port.read, UM_SIZE - len(got))
            t = time.monotonic()
            if not got:
                stalls += 1
                if stalls == self.STALLS:
                    raise MeterError(f"{self.kind} on {self.path}: no reply to {stalls} requests (out of range, off, or unpaired?)")
                yield Gap(t, 1, f"{self.kind}: no reply in {self.stall_s:g} s")
                continue
            stalls = 0
            try:
                v, a, _ = um_decode(self.kind, got)
            except ValueError as e:
                yield Gap(t, 1, str(e))
                continue
            yield Sample(t, v, a)

    def close(self):
        self.port.close()


class FnirsiMeter(Meter):
    rate = FNB_RATE

    def __init__(self, kind, path, device=None):
        self.kind, self.path = kind, path
        self.dev = device or HidDevice(path)

    def samples(self):
        dev = self.dev
        dev.write(fnb_request(FNB_INIT))
        dev.write(fnb_request(FNB_START))
        t0 = time.monotonic()   # the meter samples from its start: readings n / rate after it
        first, n, stalls = True, 0, 0
        keep = time.monotonic() + 1
        while True:
            if time.monotonic() >= keep:
                dev.write(fnb_request(FNB_KEEPALIVE))
                keep += 1
            r = dev.read(self.stall_s)
            now = time.monotonic()
            if r is None:
                stalls += 1
                if stalls == self.STALLS:
                    raise MeterError(f"{self.kind} on {self.path}: no report for {stalls * self.stall_s:g} s (stalled or unplugged)")
                yield Gap(now, round(self.stall_s * self.rate), f"{self.kind}: no report in {self.stall_s:g} s")
                continue
            stalls = 0
            try:
                readings = fnb_decode(r)
            except ValueError as e:
                n += 4   # the packet's 4 samples are lost, the time base goes on
                yield Gap(now, 4, str(e))
                continue
            if readings is None:
                continue
            if first:   # the first report holds stale readings from before the start
                first = False
                continue
            for v, a in readings:
                yield Sample(t0 + n / self.rate, v, a)
                n += 1

    def close(self):
        self.dev.close()


class Ppk2Meter(Meter):
    def __init__(self, path, source_mv=3300, ampere=False, decimate=100):
        self.kind, self.path, self.mv, self.ampere, self.decimate = "ppk2", path, source_mv, ampere, decimate
        self.rate = PPK2_RATE / decimate
        self.port = _serial(path, 115200)
        self._cmd(PPK2_METADATA)
        text, t_end = b"", time.monotonic() + 3
        while not text.endswith(b"END") and b"END" not in text[-8:] and time.monotonic() < t_end:
            text += _io(path, self.port.read, 256)
        if b"END" not in text:
            raise MeterError(f"ppk2 on {path}: no calibration in reply to GetMetadata ({len(text)} bytes): not a PPK2?")
        self.cal = ppk2_calibration(text.decode(errors="replace"))

    def _cmd(self, *b):
        _io(self.path, self.port.write, bytes(b))

    def samples(self):
        self._cmd(PPK2_POWER_MODE, PPK2_AMPERE if self.ampere else PPK2_SOURCE)
        self._cmd(PPK2_REGULATOR, self.mv >> 8, self.mv & 0xFF)
        self._cmd(PPK2_DUT_POWER, 1)
        self._cmd(PPK2_START)
        dec = Ppk2Decoder(self.cal, self.mv, self.decimate, time.monotonic())
        stalls = 0
        while True:
            data = _io(self.path, self.port.read, max(4, _io(self.path, lambda: self.port.in_waiting)))
            if not data:
                t_end = time.monotonic() + self.stall_s
                while not data and time.monotonic() < t_end:
                    data = _io(self.path, self.port.read, 4)
            if not data:
                stalls += 1
                if stalls == self.STALLS:
                    raise MeterError(f"ppk2 on {self.path}: no samples for {stalls * self.stall_s:g} s (stalled or unplugged)")
                yield Gap(time.monotonic(), round(self.stall_s * PPK2_RATE), f"ppk2: no samples in {self.stall_s:g} s")
                continue
            stalls = 0
            yield from dec.feed(data)

    def close(self):
        import contextlib
        with contextlib.suppress(MeterError):
            self._cmd(PPK2_STOP)
        self.port.close()


class JoulescopeMeter(Meter):
    kind, rate = "joulescope", 1000.0

    def __init__(self, path=None):
        try:
            import joulescope
        except ImportError:
            raise MeterError("joulescope: its package is not installed (optional: pip install joulescope)") from None
        self.js = joulescope.scan_require_one(config="auto")
        self.js.open()

    def samples(self):
        while True:
            t = time.monotonic()
            data = self.js.read(contiguous_duration=0.1)   # (N, 2): amps, volts
            for i, (a, v) in enumerate(data[::max(1, len(data) // 100)]):
                yield Sample(t + i / self.rate, float(v), float(a))

    def close(self):
        self.js.close()


def parse_spec(spec):
    """"KIND[:PATH]" -> (kind, path or None)."""
    kind, _, path = spec.partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise MeterError(f"unknown meter {kind!r}; one of: {', '.join(KINDS)}")
    return kind, path or None


DEFAULT_PATHS = {"um24c": "/dev/rfcomm0", "um25c": "/dev/rfcomm0", "um34c": "/dev/rfcomm0", "ppk2": "/dev/ttyACM1"}


def open_meter(spec, **kw):
    kind, path = parse_spec(spec)
    path = path or DEFAULT_PATHS.get(kind)
    if kind in UM_IDS:
        return UMMeter(kind, path, **kw)
    if kind == "ppk2":
        return Ppk2Meter(path, **kw)
    if kind == "joulescope":
        return JoulescopeMeter(path)
    if path is None:
        raise MeterError(f"{kind}: give its hidraw node, e.g. --meter {kind}:/dev/hidraw3")
    return FnirsiMeter(kind, path)
