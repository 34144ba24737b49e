"""Always-on audio on the device: raw 16 kHz int16 PCM in, one int8 log-mel column a stride
(shared/frontend.py, in viper or its portable twins), kept in a sliding window of the last FRAMES
columns that is the model's input (mel by frame, the newest last). Each stride computes one new
frame only: the window shifts by a column, so it always equals the whole-window computation.
Before the first FRAMES strides the window holds what silence gives (-128), as if the recording
started after silence: the host's reference (ugate.frontend) assumes the same."""
from array import array

import frontend
from runtime import kernel_set


def _i16(b, n):
    # little-endian int16 table bytes (a blob slice) -> array('h'), once, at load
    a = array("h", bytes(2 * n))
    for i in range(n):
        v = b[2 * i] | (b[2 * i + 1] << 8)
        a[i] = v - 65536 if v & 0x8000 else v
    return a


class Frontend:
    def __init__(self, fe, kernels="viper"):
        """fe: the blob's front-end section (blob.parse()["frontend"])."""
        self.kernels, k, _ = kernel_set(kernels, "audio_kernels", "audio_portable")
        self._feed, self._window, self._fft, self._power, self._mel, self._log, self._shift, self.mic32 = k
        n, nm = fe["n"], fe["n_mels"]
        self.n, self.hop, self.n_mels, self.frames, self.rate = n, fe["hop"], nm, frontend.FRAMES, fe["sr"]
        self.win = _i16(fe["window"], n)
        self.tw = _i16(fe["twiddle"], n)
        self.band = bytearray(fe["band"])
        self.weight = _i16(fe["weight"], n // 2 + 1)
        self.rev = frontend.bitrev(n)
        self.log2 = array("h", frontend.LOG2)
        self.ring = array("h", bytes(2 * n))            # the last n samples, oldest at p[1]
        self.re = array("i", bytes(4 * n))
        self.im = array("i", bytes(4 * n))
        self.power = array("i", bytes(4 * (n // 2 + 1)))
        self.mel = array("i", bytes(4 * (nm + 2)))
        self.window = bytearray(b"\x80" * (nm * self.frames))   # the model input: silence so far
        # p: n, ring position, hop, block exponent, n_mels, k_lo, k_hi, gain, offset, frames, column,
        # microphone shift (Mic)
        self.p = array("i", [n, 0, self.hop, 0, nm, fe["k_lo"], fe["k_hi"], fe["gain"], fe["offset"],
                             self.frames, self.frames - 1, 16])

    def push(self, x):
        """x: hop new samples (array('h')). Computes their frame into the window's newest column."""
        p = self.p
        self._feed(x, self.ring, x, x, x, p)
        self.frame()

    def frame(self, last=5):
        """The frame in the ring -> the newest column; stops after stage `last` (1 window, 2 FFT,
        3 power, 4 mel, 5 log: HIL looks at the stage in between)."""
        p = self.p
        self._window(self.ring, self.re, self.win, self.rev, self.im, p)
        if last > 1:
            self._fft(self.re, self.im, self.tw, self.rev, self.rev, p)
        if last > 2:
            self._power(self.re, self.im, self.power, self.rev, self.rev, p)
        if last > 3:
            self._mel(self.power, self.mel, self.band, self.weight, self.weight, p)
        if last > 4:
            self._shift(self.window, self.window, self.band, self.band, self.band, p)
            self._log(self.mel, self.window, self.log2, self.log2, self.log2, p)


class Mic:
    """An I2S MEMS microphone (INMP441-style: mono, 24-bit samples left-justified in 32-bit slots) on
    machine.I2S, read one stride at a time: readinto(x) fills x (array('h'), hop samples) like a
    file of int16 PCM would, blocking until the stride is there. Pins come from the board file
    ([mic] sck, ws, sd; shift: 16 keeps the top 16 bits, less amplifies a quiet microphone)."""

    def __init__(self, fe, sck, ws, sd, shift=16, i2s_id=0):
        from machine import I2S, Pin
        self.fe = fe
        fe.p[11] = shift
        self.raw = bytearray(4 * fe.hop)
        self.i2s = I2S(i2s_id, sck=Pin(sck), ws=Pin(ws), sd=Pin(sd), mode=I2S.RX, bits=32, format=I2S.MONO,
                       rate=fe.rate, ibuf=16 * len(self.raw))   # a DMA ring of 16 strides

    def readinto(self, x):
        mv, n = memoryview(self.raw), 0
        while n < len(self.raw):
            n += self.i2s.readinto(mv[n:])
        self.fe.mic32(self.raw, x, self.raw, self.raw, self.raw, self.fe.p)
        return 2 * self.fe.hop

    def close(self):
        self.i2s.deinit()


def features(source, out, fe, kernels="viper"):
    """HIL: every stride of the PCM file `source` -> its feature column (n_mels bytes) appended to
    the file `out`. Returns the number of strides."""
    f = Frontend(fe, kernels)
    x = array("h", bytes(2 * f.hop))
    col = memoryview(bytearray(f.n_mels))
    w, fr, t = f.window, f.frames, 0
    with open(source, "rb") as src, open(out, "wb") as dst:
        while src.readinto(x) == 2 * f.hop:
            f.push(x)
            for c in range(f.n_mels):
                col[c] = w[c * fr + fr - 1]
            dst.write(col)
            t += 1
    return t


def trace(source, out, fe, stride, kernels="viper"):
    """HIL, after a mismatch: stride `stride` of `source` stage by stage into the file `out`: window
    (int32 n, bit-reversed order), FFT re and im (int32 n each), power (int32 n/2 + 1), block exponent
    (int32), mel slots (int32 n_mels + 2), feature column (n_mels bytes)."""
    f = Frontend(fe, kernels)
    x = array("h", bytes(2 * f.hop))
    with open(source, "rb") as src:
        for _ in range(stride):
            src.readinto(x)
            f.push(x)
        src.readinto(x)
    f._feed(x, f.ring, x, x, x, f.p)
    with open(out, "wb") as dst:
        f.frame(1)
        dst.write(f.re)
        f.frame(2)
        dst.write(f.re)
        dst.write(f.im)
        f.frame(3)
        dst.write(f.power)
        dst.write(array("i", [f.p[3]]))
        f.frame(4)
        dst.write(f.mel)
        f.frame(5)
        dst.write(bytes(f.window[c * f.frames + f.frames - 1] for c in range(f.n_mels)))
