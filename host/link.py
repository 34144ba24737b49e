"""Host end of the wire (frames: ugate.shared.wire; the device end: device/link.py).

    link = Link("/dev/ttyACM0")           # or a pyserial-like object: serial_for_url("loop://"), a pty
    info = link.hello()                   # the device's INFO as a dict
    result, act = link.infer(x_int8)      # RESULT dict, decoded activations (bytearray) or None
    link.device_stats(); link.stats       # the device's counters; ours

recv() drops corrupt frames and duplicates (counting them; a duplicate ACTIVATIONS is acked again,
since our first ACK was lost) and acks every ACTIVATIONS. Requests are retransmitted with the
same seq on timeout, so the device answers a repeated VECTOR from its cache.
"""
import serial

from ugate import UgateError
from ugate.shared import sparse, wire

_HINT = "is ugate's device/main.py running on the board, at this baud?"


class Link:
    def __init__(self, port, timeout=1.0, retries=3, baudrate=115200, max_payload=4096):
        if isinstance(port, str):
            try:
                port = serial.serial_for_url(port, baudrate=baudrate, timeout=0.02)
            except (serial.SerialException, ValueError) as e:
                raise UgateError(f"cannot open {port}: {e} (unplugged, wrong name, or in use by another program?)")
        self.port, self.timeout, self.retries = port, timeout, retries
        self.name = getattr(port, "port", None) or getattr(port, "name", None) or repr(port)
        self.dec = wire.Decoder(max_payload)
        self.frames = []     # decoded, not yet returned by recv
        self.seq = 0
        self.last = None     # seq of the device's previous frame: a repeat is a duplicate
        self.stats = {"sent": 0, "received": 0, "corrupt": 0, "duplicates": 0, "retransmits": 0}

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
        self._io(self.port.write, bytes(frame[:n]))
        self.stats["sent"] += 1
        return seq

    def recv(self, timeout=None):
        """The next good frame as (type, seq, payload bytes), or None after timeout seconds."""
        t = serial.Timeout(self.timeout if timeout is None else timeout)
        while True:
            while self.frames:
                typ, seq, p = self.frames.pop(0)
                self.stats["received"] += 1
                dup = seq == self.last
                if typ == wire.ACTIVATIONS:
                    self.send(wire.ACK, wire.wr_ack(seq))
                if dup:
                    self.stats["duplicates"] += 1
                    continue
                self.last = seq
                return typ, seq, p
            if t.expired():
                return None
            data = self._io(self.port.read, max(1, self._io(lambda: self.port.in_waiting)))
            if data:
                self.frames += self.dec.feed(data)
                self.stats["corrupt"] = self.dec.corrupt

    def _exchange(self, typ, payload, done):
        """Send, then feed each reply to done(type, payload) until it returns a value; retransmit
        on timeout. An ERROR reply raises."""
        seq = self.send(typ, payload)
        for attempt in range(self.retries + 1):
            if attempt:
                self.send(typ, payload, seq)
            t = serial.Timeout(self.timeout)
            while (f := self.recv(t.time_left())) is not None:
                if f[0] == wire.ERROR:
                    code, msg = wire.rd_error(f[2])
                    raise UgateError(f"{self.name}: device error {code} ({wire.ERRORS.get(code, '?')}): {msg}")
                try:
                    r = done(seq, f[0], f[2])
                except ValueError as e:
                    raise UgateError(f"{self.name}: bad {wire.NAMES[f[0]]} payload: {e}")
                if r is not None:
                    return r
        raise UgateError(f"{self.name}: no reply to {wire.NAMES[typ]} after {self.retries + 1} tries of "
                         f"{self.timeout:g} s ({_HINT})")

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
