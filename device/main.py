"""ugate device main loop (MicroPython): input vectors in, gate decisions and compressed activations out.

Two ways in, one per-sample path (infer):
- serve(): the host sends each input (VECTOR frames: HIL, demos). Each gets a RESULT; an open gate
  sends the sparse ACTIVATIONS first.
- stream(): the device reads its own input, here a replay file standing in for a sensor, and pushes
  ACTIVATIONS + RESULT for the samples its gate lets through, numbered by sample; a stopped sample
  costs the link nothing. Both frames are acknowledged (retransmitted until they are); a positive
  given up after every retry is counted in STATS "undelivered". STATS follows the last sample, also
  acknowledged, so the host can account for every sample the board judged.
The host starts either over the raw REPL (`import main; main.serve()`) and speaks first (HELLO);
BYE ends the session and returns to the REPL. Not run at boot on purpose: binary streaming turns
Ctrl-C off, and a board that streamed from power-on could not be deployed to again without a reset.
"""
import gc
import os
import sys
import time

import wire
from link import Link
from runtime import Model

VERSION = "0.1.0"
GONE = 3   # stream mode: this many positives in a row given up after every retry end the stream


class Device:
    def __init__(self, blob, kernels, inp, out):
        try:
            self.model, self.problem = Model(blob, kernels), None
        except Exception as e:   # a bad blob is reported to the host, which shows it; we stay up
            self.model, self.problem = None, "%s: %s" % (blob, e)
        m = self.model
        self.n_in, self.n_act = (m.in_size, m.act_size) if m else (64, 64)
        self.board = os.uname().machine if hasattr(os, "uname") else sys.implementation._machine
        self.samples = self.opens = 0
        gc.collect()
        self.link = Link(inp or sys.stdin.buffer, out or sys.stdout.buffer, self.n_in, self.n_act)

    def infer(self, x, stream=False, gate=True):
        """Stage 1 and the gate on x (int8 bytes); ACTIVATIONS if open, then RESULT. stream: a stopped
        sample sends nothing at all, as a deployed board would (the stream's STATS count it), and an
        open one's RESULT waits for its ACK too. gate False: no gate, every sample sent dense."""
        return self.report(self.model.run(x, gate), stream, gate)

    def report(self, logit, stream=False, gate=True):
        """infer()'s sending half, for a model already run on its input (listen() runs it itself)."""
        m, link = self.model, self.link
        times = m.times
        t_encode = t_transmit = 0
        self.samples += 1
        ok = True
        if m.open:
            self.opens += 1
            t0 = time.ticks_us()
            link.encode(m.act, self.n_act, not gate)
            t1 = time.ticks_us()
            if m.phase is not None:
                m.phase()
            ok = link.send_activations()   # serve mode: a host that missed them asks again (same VECTOR)
            t_encode = time.ticks_diff(t1, t0) + times["compress"]
            t_transmit = time.ticks_diff(time.ticks_us(), t1)
        if m.open or not stream:
            ok = link.send_result(logit, m.open, times["stage1"], times["gate"], t_encode, t_transmit, stream) and ok
        if stream and not ok:
            link.undelivered += 1
        return t_encode

    def handle(self, t):
        """A frame other than VECTOR; False when the session ends (BYE or end of input)."""
        link = self.link
        if t is None or t == wire.BYE:
            if t is not None:
                link.send(wire.ACK, wire.wr_ack(link.last))
            return False
        if t == wire.STATS:
            link.send_stats(self.samples, self.opens)
        elif self.problem is not None:
            link.send_error(wire.E_MODEL, self.problem)
        elif t == wire.HELLO:
            link.send_info(VERSION, self.model.hash, self.board, gc.mem_free())
        else:
            link.send_error(wire.E_TYPE, wire.NAMES.get(t, str(t)))
        return True


def serve(blob="model.blob", kernels="viper", inp=None, out=None):
    d = Device(blob, kernels, inp, out)
    with d.link as link:
        link.out.write(b"\x00")   # ready: Ctrl-C is off now, so the host may send binary (idle fill)
        while True:
            t = link.read_frame()
            if t == wire.VECTOR and d.problem is None:
                if link.n == d.n_in:
                    d.infer(link.payload)
                else:
                    link.send_error(wire.E_LENGTH, "vector of %d bytes, model takes %d" % (link.n, d.n_in))
            elif not d.handle(t):
                return


def _begin(d, link):
    """Stream mode: wait for the host's HELLO (the host speaks first) and answer INFO (acknowledged);
    False if the session ended before that."""
    link.out.write(b"\x00")
    while True:
        t = link.read_frame()
        if t == wire.HELLO and d.problem is None:
            if link.send_info(VERSION, d.model.hash, d.board, gc.mem_free(), True):
                return True
        elif not d.handle(t):
            return False


def stream(source="sensor.bin", blob="model.blob", kernels="viper", inp=None, out=None,
           rate=0, sleep="idle", marker=-1, marks=None, gate=True, phase=-1):
    """rate > 0: one sample a 1/rate s, waiting between them by the sleep policy, phases marked on
    the marker pin (high while awake), the phase pin (toggled at each boundary within a wake) and in
    the file `marks` (device/duty.py); gate False: every sample sent dense."""
    d = Device(blob, kernels, inp, out)
    try:
        f = open(source, "rb")
    except OSError:
        f = None
        d.problem = d.problem or "no %s on the board: ugate npu --replay N puts test vectors there" % source
    x = bytearray(d.n_in)
    with d.link as link:
        if not _begin(d, link):
            return
        gone = 0   # positives in a row that nobody acknowledged
        duty = None
        if rate:
            from duty import Duty
            duty = Duty(rate, sleep, marker, marks, not gate, phase)
            if duty.phase_pin is not None:
                d.model.phase = duty.toggle
        while not link.bye and f.readinto(x) == d.n_in:
            link.vseq = d.samples & 0xFFFF   # RESULT and ACTIVATIONS carry the sample number
            u = link.undelivered
            if duty:
                duty.wake()
                b = link.nbytes
            t_encode = d.infer(x, True, gate)
            if duty:
                duty.done(d.model.times, d.model.open, t_encode, link.nbytes - b)
            if link.undelivered > u:
                gone += 1
                if gone == GONE:   # the host is gone: stop pushing (a board that streams on holds
                    break          # the port's reader forever: mpremote never sees a quiet line)
            elif d.model.open:
                gone = 0
            link.idle()   # a BYE from the host ends the stream early
        f.close()
        if duty:
            duty.close()
        if not link.bye:
            link.send_stats(d.samples, d.opens, True)   # unsolicited: the end of the input
        while d.handle(link.read_frame()):
            pass


def listen(source="audio.pcm", blob="model.blob", kernels="viper", inp=None, out=None, every=1, need=1, of=1,
           refractory=32, realtime=False, report="listen.txt", mic=None):
    """Always-on audio: raw 16 kHz int16 PCM from `source` (a microphone stands in as a file on the
    virtual board; realtime: read at the microphone's pace, counting strides that come late) ->
    the front end (audio.py) one frame a stride -> every `every` strides stage 1 and the gate on the
    window. A wake is `need` open gates of the last `of` runs: the gate then stays open for
    `refractory` more strides, and every run in that time sends ACTIVATIONS + RESULT numbered by
    stride (as stream() does), so stage 2 sees the word as it completes and confirms it or not.
    Ends like stream(): STATS (samples = strides, opens = windows sent).
    The per-stride costs go to the file `report` (one line of JSON) for the host to read.
    mic: (sck, ws, sd[, shift]) pins of an I2S microphone (audio.Mic) to listen to instead of `source`,
    until the host says BYE."""
    from array import array
    from audio import Frontend, Mic
    d = Device(blob, kernels, inp, out)
    m, fe, f = d.model, None, None
    if d.problem is None:
        if m.frontend is None:
            d.problem = "%s has no audio front end: export a model trained on keywords or WAV files" % blob
        else:
            fe = Frontend(m.frontend, kernels)
            try:
                f = Mic(fe, *mic) if mic else open(source, "rb")
            except OSError:
                d.problem = "no %s on the board: ugate listen puts the recording there" % source
            except Exception as e:   # a port without machine.I2S, or pins it refuses
                d.problem = "microphone on pins %r: %s" % (mic, e)
    with d.link as link:
        if not _begin(d, link):
            return
        hop = fe.hop
        x = array("h", bytes(2 * hop))
        us = 1000000 * hop // m.frontend["sr"]      # one stride of audio, in us
        mask = (1 << of) - 1
        hist = wait = late = runs = stride = 0
        fe_max = 0
        # front end, stage 1, gate: (µs under a second, whole seconds), so hours of listening never
        # grow a long int (an allocation a stride)
        tot = array("i", bytes(24))

        def add(k, us):
            us += tot[k]
            if us >= 1000000:
                tot[k + 1] += us // 1000000
                us %= 1000000
            tot[k] = us
        t_start = time.ticks_us()
        gone = 0
        while not link.bye and f.readinto(x) == 2 * hop:
            if realtime:   # the microphone has this stride at t_start + (samples + 1) strides
                due = time.ticks_diff(time.ticks_add(t_start, (stride + 1) * us), time.ticks_us())
                if due > 0:
                    time.sleep_us(due)
                elif -due > us:   # a DMA ring of one stride would have overflowed
                    late += 1
            t0 = time.ticks_us()
            fe.push(x)
            dt = time.ticks_diff(time.ticks_us(), t0)
            add(0, dt)
            fe_max = max(fe_max, dt)
            held = wait > 0   # after a wake the gate stays open: stage 2 sees the word as it completes
            if held:
                wait -= 1
            if stride % every == 0:
                logit = m.run(fe.window, True, held)
                runs += 1
                add(2, m.times["stage1"])
                add(4, m.times["gate"])
                send = held
                if not held:
                    hist = ((hist << 1) | m.open) & mask
                    n, h = 0, hist
                    while h:
                        n += h & 1
                        h >>= 1
                    if n >= need:   # a wake
                        send, hist, wait = True, 0, refractory
                if send:
                    link.vseq = stride & 0xFFFF
                    u = link.undelivered
                    d.report(logit, True)
                    gone = gone + 1 if link.undelivered > u else 0
                    if gone == GONE:
                        break
            stride += 1
            link.idle()
        f.close()
        d.samples = stride   # STATS: every stride judged (report() counted only the detections)
        with open(report, "w") as r:
            r.write('{"strides": %d, "runs": %d, "frontend_us": %d, "stage1_us": %d, "gate_us": %d, '
                    '"frontend_max_us": %d, "late": %d, "wall_us": %d, "kernels": "%s"}\n'
                    % (stride, runs, tot[1] * 1000000 + tot[0], tot[3] * 1000000 + tot[2], tot[5] * 1000000 + tot[4],
                       fe_max, late,
                       time.ticks_diff(time.ticks_us(), t_start), fe.kernels))
        if not link.bye:
            link.send_stats(d.samples, d.opens, True)
        while d.handle(link.read_frame()):
            pass
