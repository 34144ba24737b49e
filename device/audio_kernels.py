# The audio front end in viper, exact in 32-bit signed arithmetic (rules: shared/frontend.py's
# docstring; oracle: ugate.frontend). audio_portable.py holds the plain-MicroPython twins. Every
# kernel is f(x, y, t, u, v, p): buffers (array 'h', 'H', 'i' or bytearray) and p, array('i') of
# sizes and state. Nothing allocates, so the per-stride loop never triggers the GC.
#
# Viper traps: ptr16 loads are unsigned, so int16 is sign-extended by hand ((v ^ 0x8000) - 0x8000);
# a ptr32 load zero-extends on the 64-bit unix port, so a signed int32 is (v ^ sb) - sb with sb =
# 2^31 made at run time (a literal above 0x3fffffff would be a slow object); that is the identity
# on the chip's 32-bit words.
import micropython


@micropython.viper
def feed_v(x: ptr16, y: ptr16, t: ptr16, u: ptr16, v: ptr16, p: ptr32):
    # x: hop new samples; y: the ring of the last n samples, p[1] its oldest (where the next goes).
    n = p[0]
    hop = p[2]
    pos = p[1]
    for i in range(hop):
        y[pos] = x[i]
        pos += 1
        if pos == n:
            pos = 0
    p[1] = pos


@micropython.viper
def window_v(x: ptr16, y: ptr32, t: ptr16, u: ptr16, v: ptr32, p: ptr32):
    # x: the ring (oldest at p[1]); t: Hann Q15; u: bit reversal. Writes y (re) and v (im = 0)
    # in bit-reversed order, ready for the butterflies.
    n = p[0]
    j = p[1]
    for i in range(n):
        s = (x[j] ^ 0x8000) - 0x8000
        r = u[i]
        y[r] = (s * t[i] + 16384) >> 15
        v[r] = 0
        j += 1
        if j == n:
            j = 0


@micropython.viper
def fft_v(x: ptr32, y: ptr32, t: ptr16, u: ptr16, v: ptr16, p: ptr32):
    # x, y: re, im (int32, bit-reversed order in, natural order out); t: cos then sin, Q15.
    n = p[0]
    sb = 0x4000
    sb <<= 17       # 2^31, made at run time (see the top)
    h2 = n >> 1
    step = h2
    m = 2
    while m <= n:
        half = m >> 1
        for k in range(half):
            c = (t[k * step] ^ 0x8000) - 0x8000
            s = (t[h2 + k * step] ^ 0x8000) - 0x8000
            a = k
            while a < n:
                b = a + half
                br = (x[b] ^ sb) - sb
                bi = (y[b] ^ sb) - sb
                tr = (br >> 15) * c + (((br & 0x7FFF) * c + 16384) >> 15) + (bi >> 15) * s + (((bi & 0x7FFF) * s + 16384) >> 15)
                ti = (bi >> 15) * c + (((bi & 0x7FFF) * c + 16384) >> 15) - (br >> 15) * s - (((br & 0x7FFF) * s + 16384) >> 15)
                ar = (x[a] ^ sb) - sb
                ai = (y[a] ^ sb) - sb
                x[a] = ar + tr
                y[a] = ai + ti
                x[b] = ar - tr
                y[b] = ai - ti
                a += m
        step >>= 1
        m <<= 1


@micropython.viper
def power_v(x: ptr32, y: ptr32, t: ptr32, u: ptr16, v: ptr16, p: ptr32):
    # x, y: re, im; t: power of bins 0..n/2 at the block exponent, stored in p[3].
    n = p[0]
    sb = 0x4000
    sb <<= 17       # 2^31, made at run time (see the top)
    big = 0
    for k in range((n >> 1) + 1):
        a = (x[k] ^ sb) - sb
        if a < 0:
            a = -a
        if a > big:
            big = a
        a = (y[k] ^ sb) - sb
        if a < 0:
            a = -a
        if a > big:
            big = a
    s = 0
    while big >= 8192:      # bit length - 13
        big >>= 1
        s += 1
    for k in range((n >> 1) + 1):
        a = ((x[k] ^ sb) - sb) >> s
        b = ((y[k] ^ sb) - sb) >> s
        t[k] = a * a + b * b
    p[3] = s


@micropython.viper
def mel_v(x: ptr32, y: ptr32, t: ptr8, u: ptr16, v: ptr16, p: ptr32):
    # x: power; y: n_mels + 2 mel slots (channel i in slot i + 1); t: band; u: rising weight Q15.
    # Power and mel are >= 0 and < 2^31: a zero-extending load is right.
    nm = p[4]
    for c in range(nm + 2):
        y[c] = 0
    for k in range(p[5], p[6]):
        c = t[k]
        w = u[k]
        pw = x[k]
        up = (pw >> 15) * w + (((pw & 0x7FFF) * w + 16384) >> 15)
        y[c + 1] += up
        y[c] += pw - up


@micropython.viper
def log_v(x: ptr32, y: ptr8, t: ptr16, u: ptr16, v: ptr16, p: ptr32):
    # x: mel slots; y: the feature window (n_mels rows of p[9] frames): writes column p[10];
    # t: LOG2 (Q8, 33 entries).
    nm = p[4]
    s = p[3] << 9
    gain = p[7]
    off = p[8]
    stride = p[9]
    o = p[10]
    for c in range(nm):
        m = x[c + 1]
        lg = 0
        if m > 0:
            e = 0
            w = m
            while w >= 2:
                w >>= 1
                e += 1
            if e >= 13:
                f = (m >> (e - 13)) - 8192
            else:
                f = (m << (13 - e)) - 8192
            i = f >> 8
            lg = (e << 8) + t[i] + (((t[i + 1] - t[i]) * (f & 255) + 128) >> 8) + s
        q = (gain * (lg - off) + 128) >> 8
        if q > 127:
            q = 127
        if q < -128:
            q = -128
        y[o] = q & 0xFF
        o += stride


@micropython.viper
def shift_v(x: ptr8, y: ptr8, t: ptr8, u: ptr8, v: ptr8, p: ptr32):
    # x: the feature window (n_mels rows of p[9] frames): every row one frame left, the oldest out.
    nm = p[4]
    fr = p[9]
    o = 0
    for c in range(nm):
        for i in range(fr - 1):
            x[o + i] = x[o + i + 1]
        o += fr


@micropython.viper
def mic_v(x: ptr16, y: ptr16, t: ptr8, u: ptr8, v: ptr8, p: ptr32):
    # x: an I2S read of p[2] 32-bit slots (little-endian, the sample left-justified, as an INMP441's
    # 24 bits); y: p[2] int16 samples = slot >> p[11] (16 keeps the top 16 bits), clamped. Read as
    # two 16-bit halves, the high one sign-extended, so it is right on 32- and 64-bit words alike.
    sh = p[11]
    for i in range(p[2]):
        s = (((x[2 * i + 1] ^ 0x8000) - 0x8000) << 16) | x[2 * i]
        s >>= sh
        if s > 32767:
            s = 32767
        if s < -32768:
            s = -32768
        y[i] = s


KERNELS = (feed_v, window_v, fft_v, power_v, mel_v, log_v, shift_v, mic_v)
