"""Fault injection: a seeded bridge between a host and a board's serial port that flips, drops and
inserts bytes and stalls the line, at a given byte error rate per direction, the way a long, badly
grounded or noisy cable does. Used by tests/test_faults.py and bench/faults.py.

    with VirtualBoard() as vb, Bridge(vb.port, up=1e-3, down=1e-3, seed=1) as br:
        run(model_dir, port=br.port)          # the host opens br.port exactly like /dev/ttyACM0
        br.faults                             # {"up": {"flip": n, ...}, "down": {...}}

The bridge is a pty pair (the host's end at .port) and a relay thread to the board's port. Faults
apply to the binary session only, by default: from the device's ready byte after the host's
`import main\nmain.serve(...)` (or stream) command to the host's BYE. Deploy and the raw REPL (mpremote's
transport, which has no error recovery of its own) pass clean, so a run measures the wire protocol.
`corrupt(direction, type, payload) -> bool` picks whole frames to damage instead (one byte flipped).
"""
import contextlib
import os
import pty
import random
import select
import threading
import time
import tty

from ugate.shared import wire

KINDS = ("flip", "drop", "insert", "stall")
UP, DOWN = 0, 1   # host -> device, device -> host
_NAMES = ("up", "down")


class Faults:
    """Byte faults at `rate` per byte from a seeded generator: apply(data) -> (damaged bytes, seconds
    to stall before sending them). The positions follow across calls, as on one long line."""

    def __init__(self, rate, seed=0, kinds=KINDS, stall=0.02):
        self.rate, self.kinds, self.stall = rate, kinds, stall
        self.rng = random.Random(seed)
        self.counts = dict.fromkeys(kinds, 0)
        self.bytes = 0
        self.gap = self._gap()

    def _gap(self):
        # bytes before the next fault: geometric with mean 1 / rate
        if self.rate <= 0:
            return float("inf")
        u = self.rng.random()
        return int(_log1m(u) / _log1m(self.rate))

    def apply(self, data):
        self.bytes += len(data)
        if self.gap >= len(data):
            self.gap -= len(data)
            return data, 0.0
        out, i, stall = bytearray(), 0, 0.0
        while self.gap < len(data) - i:
            j = i + self.gap
            out += data[i:j]
            kind = self.rng.choice(self.kinds)
            self.counts[kind] += 1
            b = data[j]
            if kind == "flip":
                out.append(b ^ 1 << self.rng.randrange(8))
            elif kind == "insert":
                out += bytes((self.rng.randrange(256), b))
            elif kind == "stall":
                stall += self.stall * self.rng.random() * 2
                out.append(b)
            i = j + 1   # "drop": the byte is simply not copied
            self.gap = self._gap()
        self.gap -= len(data) - i
        out += data[i:]
        return bytes(out), stall


def _log1m(x):
    import math
    return math.log1p(-x) if x < 1 else -745.0


class Bridge:
    """A fault-injecting relay from a new pty (.port, for the host) to `port` (the board's)."""

    def __init__(self, port, up=0.0, down=0.0, seed=0, kinds=KINDS, session_only=True, corrupt=None):
        self.board_port = port
        self.lines = [Faults(up, seed * 2 + 1, kinds), Faults(down, seed * 2 + 2, kinds)]
        self.session_only, self.corrupt = session_only, corrupt
        self.armed = not session_only
        self.damaged = 0   # frames damaged by `corrupt`
        self.port = None

    @property
    def faults(self):
        return {_NAMES[d]: dict(f.counts) for d, f in enumerate(self.lines)}

    def set_rates(self, up, down):
        self.lines[UP].rate, self.lines[DOWN].rate = up, down
        for f in self.lines:
            f.gap = f._gap()

    def __enter__(self):
        self._host, slave = pty.openpty()
        tty.setraw(slave)
        self._slave = slave   # held open: the host may close and reopen the port
        self.port = os.ttyname(slave)
        self._board = os.open(self.board_port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self._board)
        for fd in (self._host, self._board):
            os.set_blocking(fd, False)
        self._wake_r, self._wake_w = os.pipe()
        self._pending = [bytearray(), bytearray()]   # per direction: bytes held until their time
        self._due = [0.0, 0.0]
        self._frames = bytearray()   # device -> host bytes not yet ended by 0x00 (corrupt mode)
        self._starting = False       # the host sent main.serve( / main.stream(: arm at the ready byte
        self._bye = wire.Decoder()   # the host's frames, clean: disarm at its BYE
        self._tail = b""
        self._thread = threading.Thread(target=self._relay, name=f"fault bridge {self.port}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        os.write(self._wake_w, b"x")
        self._thread.join()
        for fd in (self._host, self._slave, self._board, self._wake_r, self._wake_w):
            os.close(fd)
        self.port = None

    def _watch_host(self, data):
        # arm at the session's start, disarm at its end (session_only)
        t = self._tail + data
        self._tail = t[-16:]
        if not self.armed and b"import main\nmain." in t:   # session.py starting the device loop
            self._starting = True
            self._bye = wire.Decoder()
        elif self.armed and any(f[0] == wire.BYE for f in self._bye.feed(data)):
            self.armed = False

    def _damage_frames(self, data):
        # whole device -> host frames chosen by self.corrupt get one byte flipped
        self._frames += data
        z = self._frames.rfind(b"\x00")
        if z < 0:
            return b""
        out, self._frames = self._frames[:z + 1], self._frames[z + 1:]
        parts = out.split(b"\x00")
        for k, part in enumerate(parts):
            if len(part) > 8:
                with contextlib.suppress(ValueError):
                    body = bytearray(part)
                    typ, _, ln = wire.decode_frame(body, wire.cobs_decode(body, len(body)))
                    if self.corrupt(DOWN, typ, bytes(body[wire.HEADER:wire.HEADER + ln])):
                        part = bytearray(part)
                        part[len(part) // 2] ^= 0x5A
                        parts[k] = bytes(part).replace(b"\x00", b"\x01")
                        self.damaged += 1
        return b"\x00".join(parts)

    def _pass(self, d, data):
        if d == DOWN and self._starting and b"\x00" in data:
            i = data.index(b"\x00") + 1   # the device's ready byte (passes clean): binary from here on
            self._queue(d, data[:i], 0.0)
            self._starting, self.armed, data = False, True, data[i:]
        if d == UP and self.session_only:
            self._watch_host(data)
        if not self.armed:
            return self._queue(d, data, 0.0)
        if self.corrupt is not None:
            return self._queue(d, self._damage_frames(data) if d == DOWN else data, 0.0)
        out, stall = self.lines[d].apply(data)
        return self._queue(d, out, stall)

    def _queue(self, d, data, stall):
        if stall:
            self._due[d] = max(self._due[d], time.monotonic()) + stall
        self._pending[d] += data

    def _relay(self):
        src, dst = (self._host, self._board), (self._board, self._host)
        while True:
            now = time.monotonic()
            wr = [dst[d] for d in (UP, DOWN) if self._pending[d] and self._due[d] <= now]
            rd = [self._wake_r] + [src[d] for d in (UP, DOWN) if len(self._pending[d]) < 1 << 16]
            wait = min([self._due[d] - now for d in (UP, DOWN) if self._pending[d] and self._due[d] > now] + [1.0])
            r, w, _ = select.select(rd, wr, [], max(wait, 0.0))
            if self._wake_r in r:
                return
            for d in (UP, DOWN):
                if src[d] in r:
                    try:
                        data = os.read(src[d], 4096)
                    except (BlockingIOError, OSError):
                        data = b""
                    if data:
                        self._pass(d, data)
                if dst[d] in w and self._pending[d]:
                    with contextlib.suppress(BlockingIOError, OSError):
                        del self._pending[d][:os.write(dst[d], self._pending[d])]
