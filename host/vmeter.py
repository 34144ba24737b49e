"""Virtual USB power meters: the whole measuring path runs here without hardware.

A Timeline follows a virtual board's phase marks (shared/marks.py, the side-channel file the duty loop
appends to) and turns them into the current the ESP32-S3 would draw: each sample's phases last what the
chip model says (ugate.power.ChipModel: the viper kernels' cycle count, not this host's microseconds),
at the board's datasheet currents; between samples the sleep policy's current; awake at the REPL
outside streams. Time is time.monotonic(), shared with the meter drivers.

The meters serve their real protocols (ugate.meters decodes them): um24c/um25c/um34c and ppk2 on a pty,
fnirsi kinds on a Unix seqpacket socket that ugate.meters.HidDevice reads as it reads a hidraw node. A
reading covers the meter's own sample period (its average: the UM and FNIRSI meters' ADCs integrate),
the PPK2's 10 µs samples carry the marker on logic D0 and the phase pin on D1. A reading is drawn once the marks of the
samples it covers are in (Timeline.ready: a sample's SLEEP mark says how it went), at least LAG_S late. The virtual meters measure at the chip's 3.3 V
supply, where the datasheet gives the currents.

`ugate meter virtual --kind ppk2 --marks BOARD_DIR/marks.bin --model DIR` prints the meter's path.
"""
import os
import pty
import socket
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

import numpy as np

from ugate import UgateError
from ugate import meters as M
from ugate.shared import marks as K

LAG_S = 0.02
HOLD_S = 5.0    # the most a meter waits for a sample's marks (a host slow to ACK holds the SLEEP mark back)
WAIT_S = 0.5   # in a stream, the most a meter waits for a mark at or after a time (a sample begun before it may be unwritten yet)
POLL_S = 0.002   # marks file polled this often: a mark's time is known to about this
ACK_BYTES = 2   # ACKs the host sends back for a sent sample (ACTIVATIONS and RESULT): their bytes cost link time too


class Timeline:
    """Board current (A) against time.monotonic(), from the marks file as it grows."""

    def __init__(self, marks_path, chip, board):
        from ugate.power import assumption, frame_bytes
        self.path, self.chip, self.board = Path(marks_path), chip, board
        self.volts = assumption("supply_v")
        self.idle = board.power["active_idle_ma"] / 1000
        self.sleep_a = {K.SLEEP_LIGHT: board.power["light_sleep_ma"] / 1000, K.SLEEP_IDLE: self.idle}
        self.ack = ACK_BYTES * frame_bytes(2)
        self.pos = 0
        self.offset = None       # monotonic - device seconds, the smallest seen (marks arrive late, never early)
        self.last_ticks = None
        self.dev_t = 0.0         # unwrapped device seconds
        self.t = [0.0]           # step times: current self.a[i] (A) and marker self.logic[i] from self.t[i] on
        self.a = [self.idle]
        self.logic = [0]
        self.open = None         # the sample being marked: [start wall time, opened, nogate, bytes]
        self.polled = 0.0        # when the file was last read
        self.samples = self.overruns = 0
        self.streaming, self.marked = False, 0.0   # inside a stream; the time of its latest mark
        self.lock = threading.RLock()
        self.stop_ev = threading.Event()
        threading.Thread(target=self._follow, name="marks follower", daemon=True).start()

    def poll(self):
        """Take the records appended since the last poll (a thread calls this every POLL_S)."""
        now = time.monotonic()
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:   # no stream yet: the board sits awake at its REPL
            self.polled = now
            return
        n = len(data) // K.SIZE * K.SIZE
        self.pos += n
        with self.lock:
            recs = [K.unpack(data, i) for i in range(0, n, K.SIZE)]
            ts = []
            for phase, flags, sample, ticks, value in recs:   # the device clock, unwrapped
                if self.last_ticks is not None:
                    self.dev_t += ((ticks - self.last_ticks) % K.TICKS_PERIOD) * 1e-6
                self.last_ticks = ticks
                ts.append(self.dev_t)
                if phase == K.START or self.offset is None:   # a new session: anchor again
                    self.offset = now - self.dev_t
                self.offset = min(self.offset, now - self.dev_t)
            for (phase, flags, sample, ticks, value), t in zip(recs, ts):
                self._mark(phase, flags, value, t + self.offset)
            self.polled = now

    def _follow(self):
        while not self.stop_ev.wait(POLL_S):
            self.poll()

    def close(self):
        self.stop_ev.set()

    def _step(self, t, amps, logic):
        t = max(t, self.t[-1])
        if t == self.t[-1] and len(self.t) > 1:
            self.a[-1], self.logic[-1] = amps, logic
        else:
            self.t.append(t), self.a.append(amps), self.logic.append(logic)

    def _mark(self, phase, flags, value, w):
        self.streaming, self.marked = phase != K.STOP, w
        if phase == K.STAGE1:
            self.open = [w, False, bool(flags & K.MODE_NOGATE), 0]
        elif phase == K.ENCODE and self.open:
            self.open[1] = True
        elif phase == K.TRANSMIT and self.open:
            self.open[3] = value + self.ack
        elif phase == K.SLEEP:
            sleep_a = self.sleep_a.get(value, self.idle)
            if self.open:
                start, opened, nogate, nbytes = self.open
                if start < self.t[-1]:   # the chip is still on the last sample (an overrun, or the host
                    self.overruns += 1   # delayed this one's start): it begins when the chip is free
                t = max(start, self.t[-1])
                for k, (_, us, state) in enumerate(self.chip.phases(opened, nogate, nbytes)):   # marker high,
                    logic = 1 | (k & 1) << 1                                                    # phase pin toggled
                    self._step(t, self.board.power["active_busy_ma" if state == "busy" else "active_idle_ma"] / 1000, logic)
                    t += us * 1e-6
                self._step(t, sleep_a, 0)
                self.samples += 1
                self.open = None
            else:
                self._step(w, sleep_a, 0)
        elif phase == K.STOP:
            self._step(w, self.idle, 0)

    def ready(self, t):
        """Whether the current up to time t is known: no sample begun before t is still being marked (its
        SLEEP mark tells how its phases went), and the file was read after t. A board that stalls mid-
        sample longer than HOLD_S is drawn as it stands. Inside a stream, also a mark at or after t (or
        WAIT_S): a board starved of CPU writes a sample's first mark late, and a reading drawn before
        it came in would show that wake asleep."""
        with self.lock:
            if self.open is not None and self.open[0] < t:
                return time.monotonic() - self.open[0] > HOLD_S
            if self.streaming and self.marked < t:   # asleep, unless a sample's first mark is yet to be written
                return time.monotonic() - t > WAIT_S
            return self.polled >= t

    def at(self, ts):
        """(amps, logic) at times ts (array)."""
        with self.lock:
            t, a, lg = np.array(self.t), np.array(self.a), np.array(self.logic)
        i = np.clip(np.searchsorted(t, ts, side="right") - 1, 0, len(t) - 1)
        return a[i], lg[i]

    def mean(self, t0, t1):
        """Mean current over [t0, t1), exact over the steps."""
        with self.lock:
            t, a = np.array(self.t + [max(t1, self.t[-1]) + 1]), np.array(self.a)
        edges = np.clip(t, t0, t1)
        return float(np.sum(np.diff(edges) * a) / (t1 - t0))


class _Server(threading.Thread):
    def __init__(self, timeline, name):
        super().__init__(name=name, daemon=True)
        self.tl, self.stop_ev = timeline, threading.Event()
        self.error = None

    def close(self):
        self.stop_ev.set()
        self.join(2)


class _PtyServer(_Server):
    """A serial meter: the client opens .path as it opens the meter's port."""

    def __init__(self, timeline, name):
        super().__init__(timeline, name)
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def close(self):
        super().close()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class UMServer(_PtyServer):
    """A UM24C/25C/34C on a pty: each 0xF0 gets the 130-byte reply for the last half second."""

    def __init__(self, timeline, kind):
        super().__init__(timeline, f"virtual {kind}")
        self.kind = kind

    def run(self):
        import select
        while not self.stop_ev.is_set():
            if not select.select([self.master], [], [], 0.1)[0]:
                continue
            try:
                req = os.read(self.master, 64)
            except OSError:
                return
            for _ in range(req.count(M.UM_REQUEST)):
                now = time.monotonic() - LAG_S
                while not self.tl.ready(now):
                    time.sleep(POLL_S)
                amps = self.tl.mean(now - 1 / M.UM_RATE, now)
                os.write(self.master, M.um_encode(self.kind, self.tl.volts, amps))

class FnirsiServer(_Server):
    """An FNIRSI meter as a seqpacket socket of 64-byte reports: after AA 81 / AA 82, a data report of
    4 readings (each its 10 ms mean) every 40 ms; the first one stale, as the real meter's."""

    def __init__(self, timeline, kind):
        super().__init__(timeline, f"virtual {kind}")
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix="ugate-vmeter-")
        self.path = os.path.join(self.dir, f"{kind}.hid")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.sock.settimeout(0.1)

    def run(self):
        while not self.stop_ev.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                self._serve(conn)


    def _serve(self, conn):
        import select
        started, t_next = False, None
        dt = 1 / M.FNB_RATE
        while not self.stop_ev.is_set():
            if select.select([conn], [], [], 0.005)[0]:
                try:
                    r = conn.recv(64)
                except OSError:
                    return
                if not r:
                    return
                if len(r) == 64 and r[1] == M.FNB_START and not started:
                    started = True
                    conn.send(M.fnb_encode([(5.0, 0.5)] * 4))   # stale, from before the start
                    t_next = time.monotonic()
            while started and time.monotonic() - LAG_S >= t_next + 4 * dt and self.tl.ready(t_next + 4 * dt):
                ts = t_next + dt * np.arange(4)
                rd = [(self.tl.volts, self.tl.mean(a, a + dt)) for a in ts]
                try:
                    conn.send(M.fnb_encode(rd))
                except OSError:
                    return
                t_next += 4 * dt

    def close(self):
        super().close()
        self.sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass


# a PPK2's calibration as its GetMetadata reply gives it (values of the order of a real unit's)
PPK2_CAL = {"Calibrated": 0, "R0": 1031.64, "R1": 101.65, "R2": 10.15, "R3": 0.94, "R4": 0.043,
            "GS0": 0.0, "GS1": 112.0, "GS2": 18.0, "GS3": 2.0, "GS4": 0.0,
            "GI0": 1.0, "GI1": 1.0, "GI2": 1.0, "GI3": 1.0, "GI4": 1.0,
            "O0": 112.0, "O1": 75.0, "O2": 66.0, "O3": 64.0, "O4": 79.0,
            "S0": 0.0, "S1": 0.0, "S2": 0.0, "S3": 0.0, "S4": 0.0,
            "I0": 0.0, "I1": 0.0, "I2": 0.0, "I3": 0.0, "I4": 0.0,
            "UG0": 1.0, "UG1": 1.0, "UG2": 1.0, "UG3": 1.0, "UG4": 1.0}


def ppk2_metadata(cal=PPK2_CAL, vdd=3300):
    lines = [f"{k}: {v}" for k, v in cal.items()] + [f"VDD: {vdd}", "HW: 36412", "mode: 2", "END"]
    return ("\n".join(lines) + "\n").encode()


class Ppk2Server(_PtyServer):
    """A PPK2 on a pty: GetMetadata answers PPK2_CAL; after AverageStart, 100 kS/s of 4-byte samples
    (ADC and range from the current, counter, D0 = the board's marker, D1 its phase pin) until AverageStop."""

    CHUNK_S = 0.01

    def __init__(self, timeline):
        super().__init__(timeline, "virtual ppk2")
        self.vdd = 3300
        self.sent = 0

    def run(self):
        import select
        running, t_next, n = False, 0.0, 0
        while not self.stop_ev.is_set():
            if select.select([self.master], [], [], 0.002)[0]:
                try:
                    cmd = os.read(self.master, 64)
                except OSError:
                    return
                i = 0
                while i < len(cmd):
                    c = cmd[i]
                    if c == M.PPK2_METADATA:
                        os.write(self.master, ppk2_metadata(vdd=self.vdd))
                    elif c == M.PPK2_REGULATOR and i + 2 < len(cmd):
                        self.vdd = cmd[i + 1] << 8 | cmd[i + 2]
                        i += 2
                    elif c in (M.PPK2_POWER_MODE, M.PPK2_DUT_POWER):
                        i += 1
                    elif c == M.PPK2_START:
                        running, t_next, n = True, time.monotonic(), 0
                    elif c == M.PPK2_STOP:
                        running = False
                    i += 1
            while running and time.monotonic() - LAG_S >= t_next + self.CHUNK_S and self.tl.ready(t_next + self.CHUNK_S):
                k = int(M.PPK2_RATE * self.CHUNK_S)
                ts = t_next + (n + np.arange(k) + 0.5) / M.PPK2_RATE - n / M.PPK2_RATE
                amps, logic = self.tl.at(ts)
                adc, rng = M.ppk2_raw(amps, PPK2_CAL, self.vdd)
                words = M.ppk2_words(adc, rng, (n + np.arange(k)).astype(np.uint32), logic.astype(np.uint32) & 3)
                try:
                    os.write(self.master, words.astype("<u4").tobytes())
                except OSError:
                    return
                n += k
                self.sent += k
                t_next += self.CHUNK_S

VIRTUAL_KINDS = ("um24c", "um25c", "um34c", "fnb48", "fnb48s", "c1", "fnb58", "ppk2")


def serve(kind, timeline):
    """Start a virtual meter of `kind` following `timeline`; returns the server (.path; .close())."""
    if kind in M.UM_IDS:
        s = UMServer(timeline, kind)
    elif kind == "ppk2":
        s = Ppk2Server(timeline)
    elif kind in VIRTUAL_KINDS:
        s = FnirsiServer(timeline, kind)
    else:
        raise UgateError(f"no virtual {kind}; one of: {', '.join(VIRTUAL_KINDS)}")
    s.start()
    return s


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", required=True)
    v = sub.add_parser("virtual", help="serve a virtual meter following a virtual board's phase marks; prints its path")
    v.add_argument("--kind", required=True, choices=VIRTUAL_KINDS)
    v.add_argument("--marks", default=str(Path.home() / ".cache/ugate/boards/virtual/marks.bin"),
                   help="the virtual board's marks file (default: the default virtual board's folder)")
    v.add_argument("--model", required=True, help="exported run folder: the chip model's phase times")
    v.add_argument("--board", default="virtual", help="board definition: power table and sleep policy (default virtual)")
    v.add_argument("--cycles-per-mac", type=float, help="chip speed instead of the cycle model")


def main(args):
    import signal
    from ugate.boards import load_board
    from ugate.power import chip_model
    board = load_board(args.board)
    tl = Timeline(args.marks, chip_model(args.model, board, args.cycles_per_mac), board)
    s = serve(args.kind, tl)
    print(s.path, flush=True)
    print(f"virtual {args.kind} following {args.marks}; Ctrl-C to stop", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        s.close()
    return 0
