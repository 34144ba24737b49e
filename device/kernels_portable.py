# The stage-1 kernels in plain MicroPython: the portable twins of kernels.py's viper ones, same
# signatures, same bits (rules: blob.py's docstring; oracle: ugate.reference), for ports without
# viper. Tensors are bytes-like, so int8 is sign-extended by hand ((v ^ 0x80) - 0x80) and int16
# and int32 are assembled little-endian from bytes. Nothing allocates in the per-sample loop.


def _bias(b, c):
    # int32 little-endian at b[4c], from bytes
    return (((b[4 * c + 3] ^ 0x80) - 0x80) << 24) | (b[4 * c + 2] << 16) | (b[4 * c + 1] << 8) | b[4 * c]


def conv_p(x, y, w, b, s, p):
    cin = p[0]          # one at a time: unpacking would allocate a tuple or an iterator
    h = p[1]
    wd = p[2]
    cout = p[3]
    st = p[4]
    ho = p[5]
    wo = p[6]
    lo = 0 if p[7] else -128
    hw = h * wd
    o = 0
    for co in range(cout):
        n = s[co]
        bias = _bias(b, co) + ((1 << n) >> 1)      # round half up
        wc = co * cin * 9
        for oy in range(ho):
            iy = oy * st - 1
            ky0, ky1 = (1 if iy < 0 else 0), min(3, h - iy)
            for ox in range(wo):
                ix = ox * st - 1
                kx0, kx1 = (1 if ix < 0 else 0), min(3, wd - ix)
                acc = bias
                for ci in range(cin):
                    for ky in range(ky0, ky1):
                        xr = ci * hw + (iy + ky) * wd + ix
                        wr = wc + ci * 9 + ky * 3
                        for kx in range(kx0, kx1):
                            acc += ((w[wr + kx] ^ 0x80) - 0x80) * ((x[xr + kx] ^ 0x80) - 0x80)
                y[o] = max(lo, min(127, acc >> n)) & 0xff   # arithmetic shift; stored as a byte
                o += 1


def maxpool_p(x, y, w, b, s, p):
    c = p[0]
    h = p[1]
    wd = p[2]
    o = 0
    for ci in range(c):
        for oy in range(h >> 1):
            r = ci * h * wd + 2 * oy * wd
            for ox in range(wd >> 1):
                i = r + 2 * ox
                y[o] = max((x[i] ^ 0x80) - 0x80, (x[i + 1] ^ 0x80) - 0x80,
                           (x[i + wd] ^ 0x80) - 0x80, (x[i + wd + 1] ^ 0x80) - 0x80) & 0xff
                o += 1


def s2d_p(x, y, w, b, s, p):
    h = p[1]
    wd = p[2]
    o = 0
    for co in range(4 * p[0]):
        r = ((co >> 2) * h + (co >> 1 & 1)) * wd + (co & 1)
        for i in range(h >> 1):
            for j in range(wd >> 1):
                y[o] = x[r + 2 * i * wd + 2 * j]
                o += 1


def _wr16(y, i, v):
    y[2 * i] = v & 0xff
    y[2 * i + 1] = (v >> 8) & 0xff


def gpool_p(x, y, w, b, s, p):
    c = p[0]
    hw = p[1]
    m = p[2]
    j = p[4]
    k = p[3] - j
    half = (1 << k) >> 1                            # round half up
    for ci in range(c):
        mx, sm = -128, 0
        for i in range(ci * hw, ci * hw + hw):
            v = (x[i] ^ 0x80) - 0x80
            sm += v
            if v > mx:
                mx = v
        _wr16(y, ci, mx << j)
        _wr16(y, c + ci, (sm * m + half) >> k)


def dense_p(x, y, w, b, s, p):
    nin = p[0]
    nout = p[1]
    lo = 0 if p[2] else -128
    for o in range(nout):
        n = s[o]
        acc = _bias(b, o) + ((1 << n) >> 1)        # round half up
        wi = o * nin
        for i in range(nin):
            acc += ((w[wi + i] ^ 0x80) - 0x80) * ((x[i] ^ 0x80) - 0x80)
        y[o] = max(lo, min(127, acc >> n)) & 0xff  # arithmetic shift


def dense16_p(x, y, w, b, s, p):
    nin = p[0]
    nout = p[1]
    lo = 0 if p[2] else -128
    for o in range(nout):
        n = s[o]
        acc = _bias(b, o) + ((1 << n) >> 1)        # round half up
        wi = o * nin
        for i in range(nin):
            acc += ((w[wi + i] ^ 0x80) - 0x80) * (((x[2 * i + 1] << 8 | x[2 * i]) ^ 0x8000) - 0x8000)
        y[o] = max(lo, min(127, acc >> n)) & 0xff  # arithmetic shift


def logit_p(x, y, w, b, s, p):
    acc = _bias(b, 0)
    for i in range(p[0]):
        acc += ((w[i] ^ 0x80) - 0x80) * ((x[i] ^ 0x80) - 0x80)
    y[0] = acc


def compress_p(x, y, w, b, s, p):
    hw = p[1]
    for ci in range(p[0]):
        t = (w[ci] ^ 0x80) - 0x80
        for i in range(ci * hw, ci * hw + hw):
            y[i] = max(0, min(127, ((x[i] ^ 0x80) - 0x80) - t))


def prepare(op, w, b, s, p):
    """The (w, b, s, p) a kernel takes: the blob's own, unchanged (kernels.py's twin lays CONV out)."""
    return w, b, s, p


# in blob op order (blob.CONV == 1 ...), then dense over an int16 src
KERNELS = (conv_p, maxpool_p, gpool_p, dense_p, logit_p, compress_p, s2d_p, dense16_p)
