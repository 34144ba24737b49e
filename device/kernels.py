# The stage-1 kernels in viper, exact in 32-bit signed arithmetic (rules: blob.py's docstring;
# oracle: ugate.reference). kernels_portable.py holds their plain-MicroPython twins: a port
# without viper cannot even compile this file. Every kernel has one signature f(x, y, w, b, s, p):
# x, y: tensors (CHW; int8, or int16 where noted); w: int8 weights (or thresholds); b: int32
# biases; s: uint8 shifts; p: array('i') of sizes. Unused arguments get any buffer. Nothing
# allocates, so the per-sample loop never triggers the GC.
#
# Viper traps: ptr8/ptr16 loads are unsigned, so int8 and int16 are sign-extended by hand
# ((v ^ 0x80) - 0x80, (v ^ 0x8000) - 0x8000); int32 biases are read as two 16-bit halves, the high one sign-extended,
# which is right on 32-bit words and on the 64-bit unix port alike (a ptr32 load zero-extends
# there); no constant is above 0x3fffffff, so none becomes a slow object.
import micropython


@micropython.viper
def conv_v(x: ptr8, y: ptr8, w: ptr8, b: ptr16, s: ptr8, p: ptr32):
    # p: cin, h, w, cout, stride, ho, wo, relu. 3x3, zero padding 1.
    cin = p[0]
    h = p[1]
    wd = p[2]
    cout = p[3]
    st = p[4]
    ho = p[5]
    wo = p[6]
    lo = -128
    if p[7]:
        lo = 0
    hw = h * wd
    o = 0
    for co in range(cout):
        n = s[co]
        bias = (((b[2 * co + 1] ^ 0x8000) - 0x8000) << 16) | b[2 * co]
        bias += (1 << n) >> 1                       # round half up
        wc = co * cin * 9
        for oy in range(ho):
            iy = oy * st - 1
            ky0 = 0                                 # kernel rows inside the image: no padding reads
            if iy < 0:
                ky0 = 1
            ky1 = h - iy
            if ky1 > 3:
                ky1 = 3
            for ox in range(wo):
                ix = ox * st - 1
                kx0 = 0
                if ix < 0:
                    kx0 = 1
                kx1 = wd - ix
                if kx1 > 3:
                    kx1 = 3
                acc = bias
                for ci in range(cin):
                    for ky in range(ky0, ky1):
                        xr = ci * hw + (iy + ky) * wd + ix
                        wr = wc + ci * 9 + ky * 3
                        for kx in range(kx0, kx1):
                            acc += ((w[wr + kx] ^ 0x80) - 0x80) * ((x[xr + kx] ^ 0x80) - 0x80)
                acc >>= n                           # arithmetic shift
                if acc < lo:
                    acc = lo
                elif acc > 127:
                    acc = 127
                y[o] = acc
                o += 1


@micropython.viper
def maxpool_v(x: ptr8, y: ptr8, w: ptr8, b: ptr8, s: ptr8, p: ptr32):
    # p: c, h, w. 2x2, stride 2, floor.
    c = p[0]
    h = p[1]
    wd = p[2]
    ho = h >> 1
    wo = wd >> 1
    o = 0
    for ci in range(c):
        for oy in range(ho):
            r = ci * h * wd + 2 * oy * wd
            for ox in range(wo):
                i = r + 2 * ox
                m = (x[i] ^ 0x80) - 0x80
                v = (x[i + 1] ^ 0x80) - 0x80
                if v > m:
                    m = v
                v = (x[i + wd] ^ 0x80) - 0x80
                if v > m:
                    m = v
                v = (x[i + wd + 1] ^ 0x80) - 0x80
                if v > m:
                    m = v
                y[o] = m
                o += 1


@micropython.viper
def gpool_v(x: ptr8, y: ptr16, w: ptr8, b: ptr8, s: ptr8, p: ptr32):
    # p: c, hw, m, k, j. int16 y[c] = max << j, y[C + c] = (sum * m + r) >> (k - j).
    c = p[0]
    hw = p[1]
    m = p[2]
    j = p[4]
    k = p[3] - j
    half = (1 << k) >> 1                            # round half up
    i = 0
    for ci in range(c):
        mx = -128
        sm = 0
        for _ in range(hw):
            v = (x[i] ^ 0x80) - 0x80
            i += 1
            sm += v
            if v > mx:
                mx = v
        y[ci] = mx << j
        y[c + ci] = (sm * m + half) >> k


@micropython.viper
def dense_v(x: ptr8, y: ptr8, w: ptr8, b: ptr16, s: ptr8, p: ptr32):
    # p: nin, nout, relu. w[o][i].
    nin = p[0]
    nout = p[1]
    lo = -128
    if p[2]:
        lo = 0
    wi = 0
    for o in range(nout):
        n = s[o]
        acc = (((b[2 * o + 1] ^ 0x8000) - 0x8000) << 16) | b[2 * o]
        acc += (1 << n) >> 1                        # round half up
        for i in range(nin):
            acc += ((w[wi] ^ 0x80) - 0x80) * ((x[i] ^ 0x80) - 0x80)
            wi += 1
        acc >>= n                                   # arithmetic shift
        if acc < lo:
            acc = lo
        elif acc > 127:
            acc = 127
        y[o] = acc


@micropython.viper
def dense16_v(x: ptr16, y: ptr8, w: ptr8, b: ptr16, s: ptr8, p: ptr32):
    # dense_v over an int16 src (a GPOOL's output).
    nin = p[0]
    nout = p[1]
    lo = -128
    if p[2]:
        lo = 0
    wi = 0
    for o in range(nout):
        n = s[o]
        acc = (((b[2 * o + 1] ^ 0x8000) - 0x8000) << 16) | b[2 * o]
        acc += (1 << n) >> 1                        # round half up
        for i in range(nin):
            acc += ((w[wi] ^ 0x80) - 0x80) * ((x[i] ^ 0x8000) - 0x8000)
            wi += 1
        acc >>= n                                   # arithmetic shift
        if acc < lo:
            acc = lo
        elif acc > 127:
            acc = 127
        y[o] = acc


@micropython.viper
def logit_v(x: ptr8, y: ptr32, w: ptr8, b: ptr16, s: ptr8, p: ptr32):
    # p: nin. y[0] = acc + b[0], int32, no shift.
    acc = (((b[1] ^ 0x8000) - 0x8000) << 16) | b[0]
    for i in range(p[0]):
        acc += ((w[i] ^ 0x80) - 0x80) * ((x[i] ^ 0x80) - 0x80)
    y[0] = acc


@micropython.viper
def compress_v(x: ptr8, y: ptr8, w: ptr8, b: ptr8, s: ptr8, p: ptr32):
    # p: c, hw. y = min(max(x - t[c], 0), 127), t = w.
    c = p[0]
    hw = p[1]
    i = 0
    for ci in range(c):
        t = (w[ci] ^ 0x80) - 0x80
        for j in range(hw):
            v = ((x[i] ^ 0x80) - 0x80) - t
            if v < 0:
                v = 0
            elif v > 127:
                v = 127
            y[i] = v
            i += 1


# in blob op order (blob.CONV == 1 ...), then dense over an int16 src
KERNELS = (conv_v, maxpool_v, gpool_v, dense_v, logit_v, compress_v, dense16_v)
