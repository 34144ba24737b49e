"""Host end of the wire (frames: ugate.shared.wire; the device end: device/link.py).

    link = Link("/dev/ttyACM0")           # or a pyserial-like object: serial_for_url("loop://"), a pty
    info = link.hello()                   # the device's INFO as a dict
    result, act = link.infer(x_int8)      # RESULT dict, decoded activations (bytearray) or None
    link.device_stats(); link.stats       # the device's counters; ours

recv() drops corrupt frames and duplicates (counting them; a duplicate ACTIVATIONS is acked again,
since our first ACK was lost) and acks every frame whose type is in .ack (ACTIVATIONS, INFO; a stream
listener adds RESULT and STATS); with .nak set it answers each corrupt frame with NAK. A request is
retransmitted with the same seq as soon as a reply arrives corrupt or the device NAKs it, else after
a timeout that follows the measured round trip (so noise costs about one round trip, not seconds);
the device answers a repeated VECTOR from its cache. The give-up line says what the line did.
"""
import time

import serial

from ugate import UgateError
from ugate.shared import sparse, wire

_HINT = "is ugate's device/main.py running on the board, at this baud?"
_REPL = (b"soft reboot", b"MicroPython v", b"Traceback (most recent")


class Link:
    def __init__(self, port, timeout=1.0, retries=10, baudrate=115200, max_payload=4096):
        if isinstance(port, str):
            try:
                port = serial.serial_for_url(port, baudrate=baudrate, timeout=0.02)
            except (serial.SerialException, ValueError) as e:
                raise UgateError(f"cannot open {port}: {e} (unplugged, wrong name, or in use by another program?)")
        if (getattr(port, "timeout", 0) or 1) > 0.02:
            port.timeout = 0.02   # a read may block this long: recovery is paced in round trips, not seconds
        self.port, self.timeout, self.retries = port, timeout, retries
        self.name = getattr(port, "port", None) or getattr(port, "name", None) or repr(port)
        self.dec = wire.Decoder(max_payload)
        self.frames = []     # decoded, not yet returned by recv
        self.seq = 0
        self.last = None     # seq of the device's previous frame: a repeat is a duplicate
        self.stats = {"sent": 0, "received": 0, "corrupt": 0, "duplicates": 0, "retransmits": 0, "naks": 0}
        self.ack = {wire.ACTIVATIONS, wire.INFO}   # frame types we acknowledge (a streaming device waits for INFO's)
        self.nak = False                # answer a corrupt frame with NAK (a streaming device waits for ACKs)
        self.rtt = None                 # smoothed seconds from a request to its answer
        self.tail = b""                 # the last bytes received, frames or not
        self.text = None                # the last REPL text the board printed (a reset board does)

    def close(self):
        self.port.close()

    def _io(self, f, *a):
        try:
            return f(*a)
        except serial.SerialException as e:
            raise UgateError(f"{self.name}: {e} (board unplugged or reset?)")

    def send(self, typ, payload=b"", seq=None):
        """Send one frame; seq None takes the next number. Returns the seq used."""
        if seq is None:
            seq, self.seq = self.seq, (self.seq + 1) & 0xFFFF
        else:
            self.stats["retransmits"] += 1
        if typ == wire.HELLO:
            self.last = None   # a new session: the device's numbering restarts
        frame, n = wire.encode_frame(typ, seq, payload)
        self._io(self.port.write, bytes(frame[:n]) + b"\x00")   # + IDLE: a lost delimiter costs this frame only
        self.stats["sent"] += 1
        return seq

    def recv(self, timeout=None, corrupt_ends=False):
        """The next good frame as (type, seq, payload bytes), or None after timeout seconds (or, with
        corrupt_ends, as soon as a frame arrives corrupt)."""
        t = serial.Timeout(self.timeout if timeout is None else timeout)
        bad = self.dec.corrupt
        while True:
            while self.frames:
                typ, seq, p = self.frames.pop(0)
                self.stats["received"] += 1
                dup = seq == self.last
                if typ in self.ack:
                    self.send(wire.ACK, wire.wr_ack(seq))
                if dup:
                    self.stats["duplicates"] += 1
                    continue
                self.last = seq
                return typ, seq, p
            if t.expired() or corrupt_ends and self.dec.corrupt > bad:
                return None
            data = self._io(self.port.read, max(1, self._io(lambda: self.port.in_waiting)))
            if data:
                tail, self.tail = self.tail + data, (self.tail + data)[-64:]
                for m in _REPL:   # the board printing text, not frames: reset, or its loop ended
                    if m in tail:
                        self.text = tail[tail.rindex(m):].split(b"\r")[0].decode(errors="replace")
                bad = self.dec.corrupt
                self.frames += self.dec.feed(data)
                self.stats["corrupt"] = self.dec.corrupt
                if self.nak and self.dec.corrupt > bad:
                    self.send(wire.NAK, wire.wr_ack(self.last or 0))

    def resync(self):
        """End whatever partial frame the device may be reading (a host that died mid-write, stray REPL
        bytes), so the next frame is read whole."""
        self._io(self.port.write, bytes(wire.RESYNC))

    def _exchange(self, typ, payload, done):
        """Send, then feed each reply to done(seq, type, payload) until it returns a value. Retransmit
        at once when a reply arrives corrupt or the device NAKs, else after a timeout of a few round
        trips (doubling on each timeout, at most self.timeout). An ERROR reply raises."""
        seq = self.send(typ, payload)
        t_start, bad0, got0, naks = time.monotonic(), self.dec.corrupt, self.stats["received"], 0
        wait = self.timeout if self.rtt is None else min(self.timeout, 0.05 + 4 * self.rtt)
        for attempt in range(self.retries + 1):
            if attempt:
                if timed_out:   # maybe a damaged code byte holds the device mid-group: end it first
                    self.resync()
                self.send(typ, payload, seq)
            t, timed_out = serial.Timeout(wait), False
            while (f := self.recv(t.time_left(), corrupt_ends=True)) is not None:
                if f[0] == wire.NAK:   # our frame arrived corrupt: send it again now
                    naks += 1
                    self.stats["naks"] += 1
                    break
                if f[0] == wire.ERROR:
                    code, msg = wire.rd_error(f[2])
                    raise UgateError(f"{self.name}: device error {code} ({wire.ERRORS.get(code, '?')}): {msg}")
                try:
                    r = done(seq, f[0], f[2])
                except ValueError as e:
                    raise UgateError(f"{self.name}: bad {wire.NAMES[f[0]]} payload: {e}")
                if r is not None:
                    if not attempt:   # the round trip of a clean exchange
                        dt = time.monotonic() - t_start
                        self.rtt = dt if self.rtt is None else 0.9 * self.rtt + 0.1 * dt
                    return r
            if t.expired():
                wait, timed_out = min(self.timeout, 2 * wait), True
        bad, good = self.dec.corrupt - bad0, self.stats["received"] - got0
        took = f"after {self.retries + 1} tries in {time.monotonic() - t_start:.1f} s"
        if self.text is not None:
            raise UgateError(f"{self.name}: no reply to {wire.NAMES[typ]}: the board printed {self.text!r}, not frames: "
                             f"it was reset or its device loop ended")
        if bad or naks:
            raise UgateError(f"{self.name}: no good reply to {wire.NAMES[typ]} {took}: the line is corrupting "
                             f"{bad / max(bad + good, 1):.0%} of frames ({bad} of the {bad + good} we got; the device NAKed "
                             f"{naks} of our {self.retries + 1}): check the cable (length, shielding, ground) and the baud rate")
        raise UgateError(f"{self.name}: no reply to {wire.NAMES[typ]} {took}"
                         + (f" ({good} unrelated frames came)" if good else f" ({_HINT})"))

    def request(self, typ, payload, want):
        """Send typ and return the payload of the first reply of type want."""
        return self._exchange(typ, payload, lambda seq, t, p: p if t == want else None)

    def hello(self):
        info = wire.rd_info(self.request(wire.HELLO, wire.wr_hello(), wire.INFO))
        if info["wire"] != wire.VERSION:
            raise UgateError(f"{self.name}: device speaks wire version {info['wire']}, we speak {wire.VERSION}: deploy matching device files")
        return info

    def device_stats(self):
        return wire.rd_stats(self.request(wire.STATS, b"", wire.STATS))

    def infer(self, x):
        """Send one int8 input vector; return (RESULT dict, activations bytearray or None). The
        device may send ACTIVATIONS before or after RESULT; both are awaited when the gate opens."""
        got = {}

        def done(seq, typ, p):
            if typ == wire.ACTIVATIONS:
                vseq, sp = wire.rd_activations(p)
                if vseq == seq:
                    got["act"] = sparse.decode(sp)
            elif typ == wire.RESULT:
                r = wire.rd_result(p)
                if r["seq"] == seq:
                    got["result"] = r
            r = got.get("result")
            if r and (not r["decision"] or "act" in got):
                return r, got.get("act")
        return self._exchange(wire.VECTOR, bytes(x), done)
