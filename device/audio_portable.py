# The audio front end in plain MicroPython: the portable twins of audio_kernels.py's viper ones,
# same signatures, same bits (rules: shared/frontend.py; oracle: ugate.frontend), for ports without
# viper. Buffers are arrays, so indexing gives signed values and nothing needs sign-extending.
# Nothing allocates on a 64-bit port; on the chip, values above 2^30 (power, mel) are long ints.


def feed_p(x, y, t, u, v, p):
    n = p[0]
    pos = p[1]
    for i in range(p[2]):
        y[pos] = x[i]
        pos += 1
        if pos == n:
            pos = 0
    p[1] = pos


def window_p(x, y, t, u, v, p):
    n = p[0]
    j = p[1]
    for i in range(n):
        r = u[i]
        y[r] = (x[j] * t[i] + 16384) >> 15
        v[r] = 0
        j += 1
        if j == n:
            j = 0


def _mul15(a, w):
    return (a >> 15) * w + (((a & 0x7FFF) * w + 16384) >> 15)


def fft_p(x, y, t, u, v, p):
    n = p[0]
    h2 = n >> 1
    step = h2
    m = 2
    while m <= n:
        half = m >> 1
        for k in range(half):
            c = t[k * step]
            s = t[h2 + k * step]
            for a in range(k, n, m):
                b = a + half
                br = x[b]
                bi = y[b]
                tr = _mul15(br, c) + _mul15(bi, s)
                ti = _mul15(bi, c) - _mul15(br, s)
                ar = x[a]
                ai = y[a]
                x[a] = ar + tr
                y[a] = ai + ti
                x[b] = ar - tr
                y[b] = ai - ti
        step >>= 1
        m <<= 1


def power_p(x, y, t, u, v, p):
    nb = (p[0] >> 1) + 1
    big = 0
    for k in range(nb):
        big = max(big, abs(x[k]), abs(y[k]))
    s = 0
    while big >= 8192:
        big >>= 1
        s += 1
    for k in range(nb):
        a = x[k] >> s
        b = y[k] >> s
        t[k] = a * a + b * b
    p[3] = s


def mel_p(x, y, t, u, v, p):
    for c in range(p[4] + 2):
        y[c] = 0
    for k in range(p[5], p[6]):
        c = t[k]
        pw = x[k]
        up = _mul15(pw, u[k])
        y[c + 1] += up
        y[c] += pw - up


def log_p(x, y, t, u, v, p):
    s = p[3] << 9
    o = p[10]
    for c in range(p[4]):
        m = x[c + 1]
        lg = 0
        if m > 0:
            e = -1
            w = m
            while w:
                w >>= 1
                e += 1
            f = ((m >> (e - 13)) if e >= 13 else (m << (13 - e))) - 8192
            i = f >> 8
            lg = (e << 8) + t[i] + (((t[i + 1] - t[i]) * (f & 255) + 128) >> 8) + s
        q = (p[7] * (lg - p[8]) + 128) >> 8
        y[o] = (127 if q > 127 else -128 if q < -128 else q) & 0xFF
        o += p[9]


def shift_p(x, y, t, u, v, p):
    fr = p[9]
    o = 0
    for c in range(p[4]):
        for i in range(o, o + fr - 1):
            x[i] = x[i + 1]
        o += fr


def mic_p(x, y, t, u, v, p):
    sh = p[11]
    for i in range(p[2]):
        s = (((x[4 * i + 3] ^ 0x80) - 0x80) << 24 | x[4 * i + 2] << 16 | x[4 * i + 1] << 8 | x[4 * i]) >> sh
        y[i] = 32767 if s > 32767 else -32768 if s < -32768 else s


KERNELS = (feed_p, window_p, fft_p, power_p, mel_p, log_p, shift_p, mic_p)
