# The stage-1 kernels in viper, exact in 32-bit signed arithmetic (rules: blob.py's docstring;
# oracle: ugate.reference). kernels_portable.py holds their plain-MicroPython twins: a port
# without viper cannot even compile this file. Every kernel has one signature f(x, y, w, b, s, p):
# x, y: tensors (CHW; int8, or int16 where noted); w: int8 weights (or thresholds); b: int32
# biases; s: uint8 shifts; p: array('i') of sizes. Unused arguments get any buffer. Nothing
# allocates, so the per-sample loop never triggers the GC. prepare() turns a blob op's (w, b, s, p)
# into what its kernel takes, once, when the model loads: CONV and the int16 DENSE run on unsigned
# copies (v = w + 128, u = x + 128 or x + 32768) with the zero-point terms folded into the bias.
#
# Why it looks like this (counted by ugate.cycles on the S3's xtensawin code): viper keeps only the
# first two locals in registers, so the hot loops reuse the arguments x and y as their two walking
# pointers, and a MAC is one term of a long unrolled sum x[k] * y[k] at constant offsets.
#
# Viper traps: ptr8/ptr16 loads are unsigned, so int8 and int16 are sign-extended by hand
# ((v ^ 0x80) - 0x80, (v ^ 0x8000) - 0x8000); int32 biases are read as two 16-bit halves, the high one sign-extended,
# which is right on 32-bit words and on the 64-bit unix port alike (a ptr32 load zero-extends
# there); no constant is above 0x3fffffff, so none becomes a slow object.
from array import array

from kernels_portable import _bias

import micropython
from micropython import const

_ROW = const(64)                                # the padded copy's row stride for one input channel


@micropython.viper
def conv_v(x: ptr8, y: ptr8, w: ptr8, b: ptr16, s: ptr8, p: ptr32):
    # p: cin, h, w, cout, stride, ho, wo, relu, then prepare()'s offsets into w: weights, pad of u,
    # lane image, weight words, lane biases, row, np (words a window; 0: no lane path), col, signed
    # lanes' weight words (0: none). 3x3, zero padding 1. Exact paths; a scan of the input's sign
    # bits picks one (relu convs only take the lanes: their clamp is [0, 127]):
    # - all inputs >= 0 (after a relu): two MACs a multiply. Input channels go two a 32-bit word in
    #   16-bit lanes, X = x[2m] + x[2m + 1] << 16, the weights V = v[2m + 1] + v[2m] << 16, so
    #   X V = x0 v1 + (x0 v0 + x1 v1) << 16 + x1 v0 << 32; x <= 127 and v <= 255 keep x0 v1 and
    #   x0 v0 + x1 v1 below 2^16: the pair's dot is the upper half of X V stored to a 32-bit word
    #   (the store drops x1 v0 << 32, which only the unix port's 64-bit product keeps), read back with
    #   a 16-bit load. sum(w x) = sum(v x) - 128 sum(x); the lane biases hold bias + round. Each
    #   output row's three input rows are interleaved so a window is np consecutive words; four
    #   output channels' weight words are interleaved, each pass of 18 (9, 5) words after room for
    #   its 4 x 18 products. x holds one word X at a time (a register: x * V is 5 instructions, the
    #   stored product's half 3 more), so each word is loaded once for the four channels.
    #   One input channel (images: x in 0..127): two *taps* a word instead, word 2c = rows 0 and 1 of
    #   column c, 2c + 1 = row 2's columns c and c + 1, so a window is 5 words (0 1 2 4 5), np = 5.
    # - signed lanes (any input < 0, cin a multiple of 4, |w| <= 127): X = x0 + x1 << 16 and
    #   W = w1 + w0 << 16 signed (mod 2^32); x0 w0 + x1 w1 is within +-32512 and x0 w1 within
    #   +-16256, so X W + 2^31 + 2^15 stored has the pair's dot + 2^15 in its upper half, no borrow;
    #   the 2^15 a word goes with the window term.
    # - otherwise: u = x + 128, v = w + 128, sum(w x) = sum(v u) - 128 sum(u) - 128 sum(w) (the
    #   last term is in b), one MAC a multiply. One input channel: the copy's rows _ROW apart, so a
    #   window's taps are constant offsets; more: each row's windows built in col.
    # Viper keeps only its first two locals in registers, so x and y are the pointers each hot loop
    # walks (cast to ptr32 where a loop reads words: a cast costs no instruction), or a value (X).
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
    hi = 127 - lo
    src = x
    dst = y
    sp = ptr32(w)
    k = cin * 9
    np = p[14]
    pw = wd + 2
    plane = (h + 2) * pw
    step = plane - 2 * pw
    x = src                                         # 1. any negative input? (sign bits, a word at a time)
    neg = 0
    n = cin * h * wd
    while n and int(x) & 3:
        neg |= x[0]
        x = ptr8(int(x) + 1)
        n -= 1
    while n > 15:
        neg |= ptr32(x)[0] | ptr32(x)[1] | ptr32(x)[2] | ptr32(x)[3]
        x = ptr8(int(x) + 16)
        n -= 16
    while n:
        neg |= x[0]
        x = ptr8(int(x) + 1)
        n -= 1
    neg = (neg >> 7) & 0x01010101
    sgn = 0                                         # signed lanes (see the header), where prepared
    if neg and p[16]:
        sgn = 1
        neg = 0
    if np == 0 or lo:                               # too many words for 16-bit lane sums, or no relu:
        neg = 1                                     # one MAC a multiply
    q = 0
    if neg:
        wt = int(w) + p[8]
        col = int(w) + p[15]
        pad = int(w) + p[9]
        one = cin == 1 and pw <= _ROW               # one input channel: rows _ROW bytes apart in the
        rs = pw                                     # copy, so a window's taps sit at constant offsets
        if one:
            rs = _ROW
        x = src                                     # u = x + 128 into the copy with a border of 128
        y = ptr8(pad + rs + 1)
        for ci in range(cin):
            for iy in range(h):
                n = wd
                while n > 3:
                    y[0] = x[0] ^ 0x80
                    y[1] = x[1] ^ 0x80
                    y[2] = x[2] ^ 0x80
                    y[3] = x[3] ^ 0x80
                    x = ptr8(int(x) + 4)
                    y = ptr8(int(y) + 4)
                    n -= 4
                while n:
                    y[0] = x[0] ^ 0x80
                    x = ptr8(int(x) + 1)
                    y = ptr8(int(y) + 1)
                    n -= 1
                y = ptr8(int(y) + rs - wd)
            y = ptr8(int(y) + 2 * rs)
        if one:
            for oy in range(ho):
                r = pad + oy * st * _ROW
                x = ptr8(r)
                for ox in range(wo):                # 2. 128 * sum of each window
                    sp[ox] = (x[0] + x[1] + x[2] + x[_ROW] + x[_ROW + 1] +
                           x[_ROW + 2] + x[2 * _ROW] + x[2 * _ROW + 1] + x[2 * _ROW + 2]) << 7
                    x = ptr8(int(x) + st)
                o = q
                wc = wt
                for co in range(0, cout, 4):        # 3. four output channels at a time, one sum each
                    c0 = ((b[2 * co + 1] ^ 0x8000) - 0x8000) << 16 | b[2 * co]
                    c1 = ((b[2 * co + 3] ^ 0x8000) - 0x8000) << 16 | b[2 * co + 2]
                    c2 = ((b[2 * co + 5] ^ 0x8000) - 0x8000) << 16 | b[2 * co + 4]
                    c3 = ((b[2 * co + 7] ^ 0x8000) - 0x8000) << 16 | b[2 * co + 6]
                    d0 = ptr8(int(dst) + o)                 # (a padding channel's row goes to scratch)
                    sh0 = s[co]
                    d1 = ptr8(col)
                    sh1 = 0
                    if co + 1 < cout:
                        d1 = ptr8(int(dst) + o + ho * wo)
                        sh1 = s[co + 1]
                    d2 = ptr8(col)
                    sh2 = 0
                    if co + 2 < cout:
                        d2 = ptr8(int(dst) + o + 2 * ho * wo)
                        sh2 = s[co + 2]
                    d3 = ptr8(col)
                    sh3 = 0
                    if co + 3 < cout:
                        d3 = ptr8(int(dst) + o + 3 * ho * wo)
                        sh3 = s[co + 3]
                    x = ptr8(r)
                    for ox in range(wo):
                        y = ptr8(wc)
                        su = sp[ox]
                        acc0 = c0 - su + (x[0] * y[0] + x[1] * y[1] + x[2] * y[2] +
                            x[_ROW] * y[3] + x[_ROW + 1] * y[4] + x[_ROW + 2] * y[5] +
                            x[2 * _ROW] * y[6] + x[2 * _ROW + 1] * y[7] + x[2 * _ROW + 2] * y[8])
                        acc1 = c1 - su + (x[0] * y[9] + x[1] * y[10] + x[2] * y[11] +
                            x[_ROW] * y[12] + x[_ROW + 1] * y[13] + x[_ROW + 2] * y[14] +
                            x[2 * _ROW] * y[15] + x[2 * _ROW + 1] * y[16] + x[2 * _ROW + 2] * y[17])
                        acc2 = c2 - su + (x[0] * y[18] + x[1] * y[19] + x[2] * y[20] +
                            x[_ROW] * y[21] + x[_ROW + 1] * y[22] + x[_ROW + 2] * y[23] +
                            x[2 * _ROW] * y[24] + x[2 * _ROW + 1] * y[25] + x[2 * _ROW + 2] * y[26])
                        acc3 = c3 - su + (x[0] * y[27] + x[1] * y[28] + x[2] * y[29] +
                            x[_ROW] * y[30] + x[_ROW + 1] * y[31] + x[_ROW + 2] * y[32] +
                            x[2 * _ROW] * y[33] + x[2 * _ROW + 1] * y[34] + x[2 * _ROW + 2] * y[35])
                        x = ptr8(int(x) + st)
                        acc0 >>= sh0                     # arithmetic shift
                        if uint(acc0 - lo) > uint(hi):  # outside [lo, 127]: one compare in the common case
                            if acc0 < lo:
                                acc0 = lo
                            else:
                                acc0 = 127
                        d0[ox] = acc0
                        acc1 >>= sh1
                        if uint(acc1 - lo) > uint(hi):
                            if acc1 < lo:
                                acc1 = lo
                            else:
                                acc1 = 127
                        d1[ox] = acc1
                        acc2 >>= sh2
                        if uint(acc2 - lo) > uint(hi):
                            if acc2 < lo:
                                acc2 = lo
                            else:
                                acc2 = 127
                        d2[ox] = acc2
                        acc3 >>= sh3
                        if uint(acc3 - lo) > uint(hi):
                            if acc3 < lo:
                                acc3 = lo
                            else:
                                acc3 = 127
                        d3[ox] = acc3
                    wc += 36
                    o += 4 * ho * wo
                q += wo
            return
        for oy in range(ho):
            x = ptr8(col)                           # 2. the row's windows, one after the other
            for ox in range(wo):
                y = ptr8(pad + oy * st * pw + ox * st)
                su = 0
                n = cin
                while n:
                    x[0] = y[0]
                    x[1] = y[1]
                    x[2] = y[2]
                    y = ptr8(int(y) + pw)
                    x[3] = y[0]
                    x[4] = y[1]
                    x[5] = y[2]
                    y = ptr8(int(y) + pw)
                    x[6] = y[0]
                    x[7] = y[1]
                    x[8] = y[2]
                    su += x[0] + x[1] + x[2] + x[3] + x[4] + x[5] + x[6] + x[7] + x[8]
                    x = ptr8(int(x) + 9)
                    y = ptr8(int(y) + step)
                    n -= 1
                sp[ox] = su << 7
            o = q
            wc = wt
            for co in range(cout):                  # 3. each output channel's dots with the row
                c = ((b[2 * co + 1] ^ 0x8000) - 0x8000) << 16 | b[2 * co]
                sh = s[co]
                d = ptr8(int(dst) + o)
                x = ptr8(col)
                for ox in range(wo):
                    y = ptr8(wc)
                    acc = c - sp[ox]
                    n = cin
                    while n > 1:                # two input channels a pass
                        acc += (x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3] + x[4] * y[4] +
                            x[5] * y[5] + x[6] * y[6] + x[7] * y[7] + x[8] * y[8] + x[9] * y[9] +
                            x[10] * y[10] + x[11] * y[11] + x[12] * y[12] + x[13] * y[13] + x[14] * y[14] +
                            x[15] * y[15] + x[16] * y[16] + x[17] * y[17])
                        x = ptr8(int(x) + 18)
                        y = ptr8(int(y) + 18)
                        n -= 2
                    while n:                    # an odd one (a loop, not an if: the cycle model counts loops)
                        acc += (x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3] + x[4] * y[4] +
                            x[5] * y[5] + x[6] * y[6] + x[7] * y[7] + x[8] * y[8])
                        x = ptr8(int(x) + 9)
                        n = 0
                    acc >>= sh                              # arithmetic shift
                    if uint(acc - lo) > uint(hi):           # outside [lo, 127]: one compare in the common case
                        if acc < lo:
                            acc = lo
                        else:
                            acc = 127
                    d[ox] = acc
                wc += k
                o += ho * wo
            q += wo
        return
    wt = int(w) + p[11 + 5 * sgn]                   # the mode's weight words
    lb = ptr16(int(w) + p[12])
    row = int(w) + p[13]
    img = int(w) + p[10]
    m4 = 4 * ((cin + 1) >> 1)                       # bytes a pixel: a word per two input channels
    m8 = 2 * m4
    m12 = 3 * m4
    m16 = 4 * m4
    h4 = m4 >> 1                                    # (in 16-bit units)
    h8 = m4
    h12 = 3 * h4
    x = src                                         # the input as 16-bit lanes, channel pairs side by
    for ci in range(cin * (1 - sgn)):               # side: word (pixel, m) = x[2m] + x[2m + 1] << 16
        y = ptr8(img + (pw + 1) * m4 + (ci >> 1) * 4 + (ci & 1) * 2)
        for iy in range(h):
            n = wd
            while n > 3:
                ptr16(y)[0] = x[0]
                ptr16(y)[h4] = x[1]
                ptr16(y)[h8] = x[2]
                ptr16(y)[h12] = x[3]
                x = ptr8(int(x) + 4)
                y = ptr8(int(y) + m16)
                n -= 4
            while n:
                ptr16(y)[0] = x[0]
                x = ptr8(int(x) + 1)
                y = ptr8(int(y) + m4)
                n -= 1
            y = ptr8(int(y) + m8)
    hw = h * wd                                     # signed (cin even): word = x[2m] + x[2m + 1] << 16
    hw1 = hw + 1                                    # mod 2^32, both planes read in one pass
    x = src
    for m in range(((cin + 1) >> 1) * sgn):
        y = ptr8(img + (pw + 1) * m4 + m * 4)
        for iy in range(h):
            n = wd
            while n > 1:
                ptr32(y)[0] = ((x[0] ^ 0x80) - 0x80) + (((x[hw] ^ 0x80) - 0x80) << 16)
                ptr32(int(y) + m4)[0] = ((x[1] ^ 0x80) - 0x80) + (((x[hw1] ^ 0x80) - 0x80) << 16)
                x = ptr8(int(x) + 2)
                y = ptr8(int(y) + m8)
                n -= 2
            while n:
                ptr32(y)[0] = ((x[0] ^ 0x80) - 0x80) + (((x[hw] ^ 0x80) - 0x80) << 16)
                x = ptr8(int(x) + 1)
                y = ptr8(int(y) + m4)
                n -= 1
            y = ptr8(int(y) + m8)
        x = ptr8(int(x) + hw)
    msk = sgn - 1                                   # signed lanes take no window sums but 2^15 a word
    nu = np * (1 - sgn)                             # words a window in the unsigned passes, the signed
    ns = np * sgn
    off = 32768 * np * sgn
    cc = 1                                          # 2^31 + 2^15 (built at run time: as a literal it
    cc = (cc << 31) | 0x8000                        # would be a long-int object): a signed pair's dot + 2^15
    rb = pw * m4
    sst = 4 * st
    rb2 = 2 * rb
    ws = st * 3 * m4                                # from a window to the next
    if cin == 1:
        ws = 8 * st
    for oy in range(ho):
        r = img + oy * st * rb                      # 2. the three input rows of this output row,
        y = ptr8(row)                               # interleaved: (column, row, pair), so a window is
        nx = pw
        while cin == 1:                             # np consecutive words in (kx, ky, pair) order.
            x = ptr8(r)                             # One input channel: two taps a word, word 2c =
            for ix in range(pw):                    # rows 0 and 1 of column c, 2c + 1 = row 2's columns
                t0 = ptr32(x)[0]                    # c and c + 1; a window is words 0 1 2 4 5
                t1 = ptr32(int(x) + rb)[0]
                t2 = ptr32(int(x) + rb2)[0]
                ptr32(y)[0] = t0 | t1 << 16
                ptr32(y)[1] = t2 | ptr32(int(x) + rb2)[1] << 16
                sp[ix] = t0 + t1 + t2
                x = ptr8(int(x) + 4)
                y = ptr8(int(y) + 8)
            nx = 0                                  # (a loop, not an if: the cycle model counts loops)
            break
        while m4 == 8:                              # two words a pixel (3 or 4 channels): straight code
            x = ptr8(r)
            for ix in range(pw):
                t0 = ptr32(x)[0]
                t1 = ptr32(x)[1]
                t2 = ptr32(int(x) + rb)[0]
                t3 = ptr32(int(x) + rb)[1]
                t4 = ptr32(int(x) + rb2)[0]
                t5 = ptr32(int(x) + rb2)[1]
                ptr32(y)[0] = t0
                ptr32(y)[1] = t1
                ptr32(y)[2] = t2
                ptr32(y)[3] = t3
                ptr32(y)[4] = t4
                ptr32(y)[5] = t5
                sp[ix] = t0 + t1 + t2 + t3 + t4 + t5
                x = ptr8(int(x) + 8)
                y = ptr8(int(y) + 24)
            nx = 0
            break
        for ix in range(nx):
            cs = 0                                  # (and each column's sum, both lanes)
            for ky in range(3):
                x = ptr8(r + ky * rb)
                n = m4
                while n > 15:
                    cs += ptr32(x)[0] + ptr32(x)[1] + ptr32(x)[2] + ptr32(x)[3]
                    ptr32(y)[0] = ptr32(x)[0]
                    ptr32(y)[1] = ptr32(x)[1]
                    ptr32(y)[2] = ptr32(x)[2]
                    ptr32(y)[3] = ptr32(x)[3]
                    x = ptr8(int(x) + 16)
                    y = ptr8(int(y) + 16)
                    n -= 16
                while n:
                    cs += ptr32(x)[0]
                    ptr32(y)[0] = ptr32(x)[0]
                    x = ptr8(int(x) + 4)
                    y = ptr8(int(y) + 4)
                    n -= 4
            sp[ix] = cs
            r += m4
        x = ptr8(sp)                                # 128 * sum of each window: three columns (in
        y = ptr8(sp)                                # place: reads run ahead of writes;
        n = wo                                      # prepare() keeps 127 * np below 2^16)
        while n:
            t = ptr32(x)[0] + ptr32(x)[1] + ptr32(x)[2]
            ptr32(y)[0] = ((((t & 0xffff) + (t >> 16)) << 7) & msk) + off
            x = ptr8(int(x) + sst)
            y = ptr8(int(y) + 4)
            n -= 1
        scratch = int(w) + p[15]                    # where a padding output channel goes
        o = q
        wc = wt
        for co in range(0, cout, 4):                # 3. four output channels' dots with the row at a
            c0 = ((lb[2 * co + 1] ^ 0x8000) - 0x8000) << 16 | lb[2 * co]
            c1 = ((lb[2 * co + 3] ^ 0x8000) - 0x8000) << 16 | lb[2 * co + 2]
            c2 = ((lb[2 * co + 5] ^ 0x8000) - 0x8000) << 16 | lb[2 * co + 4]
            c3 = ((lb[2 * co + 7] ^ 0x8000) - 0x8000) << 16 | lb[2 * co + 6]
            d0 = ptr8(int(dst) + o)                 # (a padding channel's row goes to scratch)
            sh0 = s[co]
            d1 = ptr8(scratch)
            sh1 = 0
            if co + 1 < cout:
                d1 = ptr8(int(dst) + o + ho * wo)
                sh1 = s[co + 1]
            d2 = ptr8(scratch)
            sh2 = 0
            if co + 2 < cout:
                d2 = ptr8(int(dst) + o + 2 * ho * wo)
                sh2 = s[co + 2]
            d3 = ptr8(scratch)
            sh3 = 0
            if co + 3 < cout:
                d3 = ptr8(int(dst) + o + 3 * ho * wo)
                sh3 = s[co + 3]
            xw = row                                # time (their words interleaved: one loop)
            for ox in range(wo):
                y = ptr8(wc)
                win = ptr32(xw)
                su = sp[ox]
                acc0 = c0 - su
                acc1 = c1 - su
                acc2 = c2 - su
                acc3 = c3 - su
                n = nu
                while n > 17:                       # 18 words a pass: x = a word, its 4 products, 4 sums
                    x = ptr8(win[0]); ptr32(y)[0] = ptr32(y)[72] * int(x); ptr32(y)[1] = ptr32(y)[73] * int(x)
                    ptr32(y)[2] = ptr32(y)[74] * int(x); ptr32(y)[3] = ptr32(y)[75] * int(x)
                    x = ptr8(win[1]); ptr32(y)[4] = ptr32(y)[76] * int(x); ptr32(y)[5] = ptr32(y)[77] * int(x)
                    ptr32(y)[6] = ptr32(y)[78] * int(x); ptr32(y)[7] = ptr32(y)[79] * int(x)
                    x = ptr8(win[2]); ptr32(y)[8] = ptr32(y)[80] * int(x); ptr32(y)[9] = ptr32(y)[81] * int(x)
                    ptr32(y)[10] = ptr32(y)[82] * int(x); ptr32(y)[11] = ptr32(y)[83] * int(x)
                    x = ptr8(win[3]); ptr32(y)[12] = ptr32(y)[84] * int(x); ptr32(y)[13] = ptr32(y)[85] * int(x)
                    ptr32(y)[14] = ptr32(y)[86] * int(x); ptr32(y)[15] = ptr32(y)[87] * int(x)
                    x = ptr8(win[4]); ptr32(y)[16] = ptr32(y)[88] * int(x); ptr32(y)[17] = ptr32(y)[89] * int(x)
                    ptr32(y)[18] = ptr32(y)[90] * int(x); ptr32(y)[19] = ptr32(y)[91] * int(x)
                    x = ptr8(win[5]); ptr32(y)[20] = ptr32(y)[92] * int(x); ptr32(y)[21] = ptr32(y)[93] * int(x)
                    ptr32(y)[22] = ptr32(y)[94] * int(x); ptr32(y)[23] = ptr32(y)[95] * int(x)
                    x = ptr8(win[6]); ptr32(y)[24] = ptr32(y)[96] * int(x); ptr32(y)[25] = ptr32(y)[97] * int(x)
                    ptr32(y)[26] = ptr32(y)[98] * int(x); ptr32(y)[27] = ptr32(y)[99] * int(x)
                    x = ptr8(win[7]); ptr32(y)[28] = ptr32(y)[100] * int(x); ptr32(y)[29] = ptr32(y)[101] * int(x)
                    ptr32(y)[30] = ptr32(y)[102] * int(x); ptr32(y)[31] = ptr32(y)[103] * int(x)
                    x = ptr8(win[8]); ptr32(y)[32] = ptr32(y)[104] * int(x); ptr32(y)[33] = ptr32(y)[105] * int(x)
                    ptr32(y)[34] = ptr32(y)[106] * int(x); ptr32(y)[35] = ptr32(y)[107] * int(x)
                    x = ptr8(win[9]); ptr32(y)[36] = ptr32(y)[108] * int(x); ptr32(y)[37] = ptr32(y)[109] * int(x)
                    ptr32(y)[38] = ptr32(y)[110] * int(x); ptr32(y)[39] = ptr32(y)[111] * int(x)
                    x = ptr8(win[10]); ptr32(y)[40] = ptr32(y)[112] * int(x); ptr32(y)[41] = ptr32(y)[113] * int(x)
                    ptr32(y)[42] = ptr32(y)[114] * int(x); ptr32(y)[43] = ptr32(y)[115] * int(x)
                    x = ptr8(win[11]); ptr32(y)[44] = ptr32(y)[116] * int(x); ptr32(y)[45] = ptr32(y)[117] * int(x)
                    ptr32(y)[46] = ptr32(y)[118] * int(x); ptr32(y)[47] = ptr32(y)[119] * int(x)
                    x = ptr8(win[12]); ptr32(y)[48] = ptr32(y)[120] * int(x); ptr32(y)[49] = ptr32(y)[121] * int(x)
                    ptr32(y)[50] = ptr32(y)[122] * int(x); ptr32(y)[51] = ptr32(y)[123] * int(x)
                    x = ptr8(win[13]); ptr32(y)[52] = ptr32(y)[124] * int(x); ptr32(y)[53] = ptr32(y)[125] * int(x)
                    ptr32(y)[54] = ptr32(y)[126] * int(x); ptr32(y)[55] = ptr32(y)[127] * int(x)
                    x = ptr8(win[14]); ptr32(y)[56] = ptr32(y)[128] * int(x); ptr32(y)[57] = ptr32(y)[129] * int(x)
                    ptr32(y)[58] = ptr32(y)[130] * int(x); ptr32(y)[59] = ptr32(y)[131] * int(x)
                    x = ptr8(win[15]); ptr32(y)[60] = ptr32(y)[132] * int(x); ptr32(y)[61] = ptr32(y)[133] * int(x)
                    ptr32(y)[62] = ptr32(y)[134] * int(x); ptr32(y)[63] = ptr32(y)[135] * int(x)
                    x = ptr8(win[16]); ptr32(y)[64] = ptr32(y)[136] * int(x); ptr32(y)[65] = ptr32(y)[137] * int(x)
                    ptr32(y)[66] = ptr32(y)[138] * int(x); ptr32(y)[67] = ptr32(y)[139] * int(x)
                    x = ptr8(win[17]); ptr32(y)[68] = ptr32(y)[140] * int(x); ptr32(y)[69] = ptr32(y)[141] * int(x)
                    ptr32(y)[70] = ptr32(y)[142] * int(x); ptr32(y)[71] = ptr32(y)[143] * int(x)
                    acc0 += (ptr16(y)[1] + ptr16(y)[9] + ptr16(y)[17] + ptr16(y)[25] + ptr16(y)[33] + ptr16(y)[41] + ptr16(y)[49] + ptr16(y)[57] + ptr16(y)[65] +
                        ptr16(y)[73] + ptr16(y)[81] + ptr16(y)[89] + ptr16(y)[97] + ptr16(y)[105] + ptr16(y)[113] + ptr16(y)[121] + ptr16(y)[129] + ptr16(y)[137])
                    acc1 += (ptr16(y)[3] + ptr16(y)[11] + ptr16(y)[19] + ptr16(y)[27] + ptr16(y)[35] + ptr16(y)[43] + ptr16(y)[51] + ptr16(y)[59] + ptr16(y)[67] +
                        ptr16(y)[75] + ptr16(y)[83] + ptr16(y)[91] + ptr16(y)[99] + ptr16(y)[107] + ptr16(y)[115] + ptr16(y)[123] + ptr16(y)[131] + ptr16(y)[139])
                    acc2 += (ptr16(y)[5] + ptr16(y)[13] + ptr16(y)[21] + ptr16(y)[29] + ptr16(y)[37] + ptr16(y)[45] + ptr16(y)[53] + ptr16(y)[61] + ptr16(y)[69] +
                        ptr16(y)[77] + ptr16(y)[85] + ptr16(y)[93] + ptr16(y)[101] + ptr16(y)[109] + ptr16(y)[117] + ptr16(y)[125] + ptr16(y)[133] + ptr16(y)[141])
                    acc3 += (ptr16(y)[7] + ptr16(y)[15] + ptr16(y)[23] + ptr16(y)[31] + ptr16(y)[39] + ptr16(y)[47] + ptr16(y)[55] + ptr16(y)[63] + ptr16(y)[71] +
                        ptr16(y)[79] + ptr16(y)[87] + ptr16(y)[95] + ptr16(y)[103] + ptr16(y)[111] + ptr16(y)[119] + ptr16(y)[127] + ptr16(y)[135] + ptr16(y)[143])
                    win = ptr32(int(win) + 72)
                    y = ptr8(int(y) + 576)
                    n -= 18
                while n:                            # (one test for both in the common case)
                    while n > 8:                        # nine words (np is 9 x the pairs)
                        x = ptr8(win[0]); ptr32(y)[0] = ptr32(y)[36] * int(x); ptr32(y)[1] = ptr32(y)[37] * int(x)
                        ptr32(y)[2] = ptr32(y)[38] * int(x); ptr32(y)[3] = ptr32(y)[39] * int(x)
                        x = ptr8(win[1]); ptr32(y)[4] = ptr32(y)[40] * int(x); ptr32(y)[5] = ptr32(y)[41] * int(x)
                        ptr32(y)[6] = ptr32(y)[42] * int(x); ptr32(y)[7] = ptr32(y)[43] * int(x)
                        x = ptr8(win[2]); ptr32(y)[8] = ptr32(y)[44] * int(x); ptr32(y)[9] = ptr32(y)[45] * int(x)
                        ptr32(y)[10] = ptr32(y)[46] * int(x); ptr32(y)[11] = ptr32(y)[47] * int(x)
                        x = ptr8(win[3]); ptr32(y)[12] = ptr32(y)[48] * int(x); ptr32(y)[13] = ptr32(y)[49] * int(x)
                        ptr32(y)[14] = ptr32(y)[50] * int(x); ptr32(y)[15] = ptr32(y)[51] * int(x)
                        x = ptr8(win[4]); ptr32(y)[16] = ptr32(y)[52] * int(x); ptr32(y)[17] = ptr32(y)[53] * int(x)
                        ptr32(y)[18] = ptr32(y)[54] * int(x); ptr32(y)[19] = ptr32(y)[55] * int(x)
                        x = ptr8(win[5]); ptr32(y)[20] = ptr32(y)[56] * int(x); ptr32(y)[21] = ptr32(y)[57] * int(x)
                        ptr32(y)[22] = ptr32(y)[58] * int(x); ptr32(y)[23] = ptr32(y)[59] * int(x)
                        x = ptr8(win[6]); ptr32(y)[24] = ptr32(y)[60] * int(x); ptr32(y)[25] = ptr32(y)[61] * int(x)
                        ptr32(y)[26] = ptr32(y)[62] * int(x); ptr32(y)[27] = ptr32(y)[63] * int(x)
                        x = ptr8(win[7]); ptr32(y)[28] = ptr32(y)[64] * int(x); ptr32(y)[29] = ptr32(y)[65] * int(x)
                        ptr32(y)[30] = ptr32(y)[66] * int(x); ptr32(y)[31] = ptr32(y)[67] * int(x)
                        x = ptr8(win[8]); ptr32(y)[32] = ptr32(y)[68] * int(x); ptr32(y)[33] = ptr32(y)[69] * int(x)
                        ptr32(y)[34] = ptr32(y)[70] * int(x); ptr32(y)[35] = ptr32(y)[71] * int(x)
                        acc0 += (ptr16(y)[1] + ptr16(y)[9] + ptr16(y)[17] + ptr16(y)[25] + ptr16(y)[33] + ptr16(y)[41] + ptr16(y)[49] + ptr16(y)[57] + ptr16(y)[65])
                        acc1 += (ptr16(y)[3] + ptr16(y)[11] + ptr16(y)[19] + ptr16(y)[27] + ptr16(y)[35] + ptr16(y)[43] + ptr16(y)[51] + ptr16(y)[59] + ptr16(y)[67])
                        acc2 += (ptr16(y)[5] + ptr16(y)[13] + ptr16(y)[21] + ptr16(y)[29] + ptr16(y)[37] + ptr16(y)[45] + ptr16(y)[53] + ptr16(y)[61] + ptr16(y)[69])
                        acc3 += (ptr16(y)[7] + ptr16(y)[15] + ptr16(y)[23] + ptr16(y)[31] + ptr16(y)[39] + ptr16(y)[47] + ptr16(y)[55] + ptr16(y)[63] + ptr16(y)[71])
                        win = ptr32(int(win) + 36)
                        y = ptr8(int(y) + 288)
                        n -= 9
                    while n:                            # one input channel: five words at 0 1 2 4 5
                        x = ptr8(win[0]); ptr32(y)[0] = ptr32(y)[20] * int(x); ptr32(y)[1] = ptr32(y)[21] * int(x)
                        ptr32(y)[2] = ptr32(y)[22] * int(x); ptr32(y)[3] = ptr32(y)[23] * int(x)
                        x = ptr8(win[1]); ptr32(y)[4] = ptr32(y)[24] * int(x); ptr32(y)[5] = ptr32(y)[25] * int(x)
                        ptr32(y)[6] = ptr32(y)[26] * int(x); ptr32(y)[7] = ptr32(y)[27] * int(x)
                        x = ptr8(win[2]); ptr32(y)[8] = ptr32(y)[28] * int(x); ptr32(y)[9] = ptr32(y)[29] * int(x)
                        ptr32(y)[10] = ptr32(y)[30] * int(x); ptr32(y)[11] = ptr32(y)[31] * int(x)
                        x = ptr8(win[4]); ptr32(y)[12] = ptr32(y)[32] * int(x); ptr32(y)[13] = ptr32(y)[33] * int(x)
                        ptr32(y)[14] = ptr32(y)[34] * int(x); ptr32(y)[15] = ptr32(y)[35] * int(x)
                        x = ptr8(win[5]); ptr32(y)[16] = ptr32(y)[36] * int(x); ptr32(y)[17] = ptr32(y)[37] * int(x)
                        ptr32(y)[18] = ptr32(y)[38] * int(x); ptr32(y)[19] = ptr32(y)[39] * int(x)
                        acc0 += (ptr16(y)[1] + ptr16(y)[9] + ptr16(y)[17] + ptr16(y)[25] + ptr16(y)[33])
                        acc1 += (ptr16(y)[3] + ptr16(y)[11] + ptr16(y)[19] + ptr16(y)[27] + ptr16(y)[35])
                        acc2 += (ptr16(y)[5] + ptr16(y)[13] + ptr16(y)[21] + ptr16(y)[29] + ptr16(y)[37])
                        acc3 += (ptr16(y)[7] + ptr16(y)[15] + ptr16(y)[23] + ptr16(y)[31] + ptr16(y)[39])
                        n = 0
                n = ns
                while n > 17:                       # signed lanes: each product + cc
                    x = ptr8(win[0]); ptr32(y)[0] = ptr32(y)[72] * int(x) + cc; ptr32(y)[1] = ptr32(y)[73] * int(x) + cc
                    ptr32(y)[2] = ptr32(y)[74] * int(x) + cc; ptr32(y)[3] = ptr32(y)[75] * int(x) + cc
                    x = ptr8(win[1]); ptr32(y)[4] = ptr32(y)[76] * int(x) + cc; ptr32(y)[5] = ptr32(y)[77] * int(x) + cc
                    ptr32(y)[6] = ptr32(y)[78] * int(x) + cc; ptr32(y)[7] = ptr32(y)[79] * int(x) + cc
                    x = ptr8(win[2]); ptr32(y)[8] = ptr32(y)[80] * int(x) + cc; ptr32(y)[9] = ptr32(y)[81] * int(x) + cc
                    ptr32(y)[10] = ptr32(y)[82] * int(x) + cc; ptr32(y)[11] = ptr32(y)[83] * int(x) + cc
                    x = ptr8(win[3]); ptr32(y)[12] = ptr32(y)[84] * int(x) + cc; ptr32(y)[13] = ptr32(y)[85] * int(x) + cc
                    ptr32(y)[14] = ptr32(y)[86] * int(x) + cc; ptr32(y)[15] = ptr32(y)[87] * int(x) + cc
                    x = ptr8(win[4]); ptr32(y)[16] = ptr32(y)[88] * int(x) + cc; ptr32(y)[17] = ptr32(y)[89] * int(x) + cc
                    ptr32(y)[18] = ptr32(y)[90] * int(x) + cc; ptr32(y)[19] = ptr32(y)[91] * int(x) + cc
                    x = ptr8(win[5]); ptr32(y)[20] = ptr32(y)[92] * int(x) + cc; ptr32(y)[21] = ptr32(y)[93] * int(x) + cc
                    ptr32(y)[22] = ptr32(y)[94] * int(x) + cc; ptr32(y)[23] = ptr32(y)[95] * int(x) + cc
                    x = ptr8(win[6]); ptr32(y)[24] = ptr32(y)[96] * int(x) + cc; ptr32(y)[25] = ptr32(y)[97] * int(x) + cc
                    ptr32(y)[26] = ptr32(y)[98] * int(x) + cc; ptr32(y)[27] = ptr32(y)[99] * int(x) + cc
                    x = ptr8(win[7]); ptr32(y)[28] = ptr32(y)[100] * int(x) + cc; ptr32(y)[29] = ptr32(y)[101] * int(x) + cc
                    ptr32(y)[30] = ptr32(y)[102] * int(x) + cc; ptr32(y)[31] = ptr32(y)[103] * int(x) + cc
                    x = ptr8(win[8]); ptr32(y)[32] = ptr32(y)[104] * int(x) + cc; ptr32(y)[33] = ptr32(y)[105] * int(x) + cc
                    ptr32(y)[34] = ptr32(y)[106] * int(x) + cc; ptr32(y)[35] = ptr32(y)[107] * int(x) + cc
                    x = ptr8(win[9]); ptr32(y)[36] = ptr32(y)[108] * int(x) + cc; ptr32(y)[37] = ptr32(y)[109] * int(x) + cc
                    ptr32(y)[38] = ptr32(y)[110] * int(x) + cc; ptr32(y)[39] = ptr32(y)[111] * int(x) + cc
                    x = ptr8(win[10]); ptr32(y)[40] = ptr32(y)[112] * int(x) + cc; ptr32(y)[41] = ptr32(y)[113] * int(x) + cc
                    ptr32(y)[42] = ptr32(y)[114] * int(x) + cc; ptr32(y)[43] = ptr32(y)[115] * int(x) + cc
                    x = ptr8(win[11]); ptr32(y)[44] = ptr32(y)[116] * int(x) + cc; ptr32(y)[45] = ptr32(y)[117] * int(x) + cc
                    ptr32(y)[46] = ptr32(y)[118] * int(x) + cc; ptr32(y)[47] = ptr32(y)[119] * int(x) + cc
                    x = ptr8(win[12]); ptr32(y)[48] = ptr32(y)[120] * int(x) + cc; ptr32(y)[49] = ptr32(y)[121] * int(x) + cc
                    ptr32(y)[50] = ptr32(y)[122] * int(x) + cc; ptr32(y)[51] = ptr32(y)[123] * int(x) + cc
                    x = ptr8(win[13]); ptr32(y)[52] = ptr32(y)[124] * int(x) + cc; ptr32(y)[53] = ptr32(y)[125] * int(x) + cc
                    ptr32(y)[54] = ptr32(y)[126] * int(x) + cc; ptr32(y)[55] = ptr32(y)[127] * int(x) + cc
                    x = ptr8(win[14]); ptr32(y)[56] = ptr32(y)[128] * int(x) + cc; ptr32(y)[57] = ptr32(y)[129] * int(x) + cc
                    ptr32(y)[58] = ptr32(y)[130] * int(x) + cc; ptr32(y)[59] = ptr32(y)[131] * int(x) + cc
                    x = ptr8(win[15]); ptr32(y)[60] = ptr32(y)[132] * int(x) + cc; ptr32(y)[61] = ptr32(y)[133] * int(x) + cc
                    ptr32(y)[62] = ptr32(y)[134] * int(x) + cc; ptr32(y)[63] = ptr32(y)[135] * int(x) + cc
                    x = ptr8(win[16]); ptr32(y)[64] = ptr32(y)[136] * int(x) + cc; ptr32(y)[65] = ptr32(y)[137] * int(x) + cc
                    ptr32(y)[66] = ptr32(y)[138] * int(x) + cc; ptr32(y)[67] = ptr32(y)[139] * int(x) + cc
                    x = ptr8(win[17]); ptr32(y)[68] = ptr32(y)[140] * int(x) + cc; ptr32(y)[69] = ptr32(y)[141] * int(x) + cc
                    ptr32(y)[70] = ptr32(y)[142] * int(x) + cc; ptr32(y)[71] = ptr32(y)[143] * int(x) + cc
                    acc0 += (ptr16(y)[1] + ptr16(y)[9] + ptr16(y)[17] + ptr16(y)[25] + ptr16(y)[33] + ptr16(y)[41] + ptr16(y)[49] + ptr16(y)[57] + ptr16(y)[65] +
                        ptr16(y)[73] + ptr16(y)[81] + ptr16(y)[89] + ptr16(y)[97] + ptr16(y)[105] + ptr16(y)[113] + ptr16(y)[121] + ptr16(y)[129] + ptr16(y)[137])
                    acc1 += (ptr16(y)[3] + ptr16(y)[11] + ptr16(y)[19] + ptr16(y)[27] + ptr16(y)[35] + ptr16(y)[43] + ptr16(y)[51] + ptr16(y)[59] + ptr16(y)[67] +
                        ptr16(y)[75] + ptr16(y)[83] + ptr16(y)[91] + ptr16(y)[99] + ptr16(y)[107] + ptr16(y)[115] + ptr16(y)[123] + ptr16(y)[131] + ptr16(y)[139])
                    acc2 += (ptr16(y)[5] + ptr16(y)[13] + ptr16(y)[21] + ptr16(y)[29] + ptr16(y)[37] + ptr16(y)[45] + ptr16(y)[53] + ptr16(y)[61] + ptr16(y)[69] +
                        ptr16(y)[77] + ptr16(y)[85] + ptr16(y)[93] + ptr16(y)[101] + ptr16(y)[109] + ptr16(y)[117] + ptr16(y)[125] + ptr16(y)[133] + ptr16(y)[141])
                    acc3 += (ptr16(y)[7] + ptr16(y)[15] + ptr16(y)[23] + ptr16(y)[31] + ptr16(y)[39] + ptr16(y)[47] + ptr16(y)[55] + ptr16(y)[63] + ptr16(y)[71] +
                        ptr16(y)[79] + ptr16(y)[87] + ptr16(y)[95] + ptr16(y)[103] + ptr16(y)[111] + ptr16(y)[119] + ptr16(y)[127] + ptr16(y)[135] + ptr16(y)[143])
                    win = ptr32(int(win) + 72)
                    y = ptr8(int(y) + 576)
                    n -= 18
                xw += ws
                acc0 >>= sh0                         # arithmetic shift
                if uint(acc0) > uint(127):       # outside [0, 127] (the lane paths take relu convs): one compare
                    if acc0 < 0:
                        acc0 = 0
                    else:
                        acc0 = 127
                d0[ox] = acc0
                acc1 >>= sh1
                if uint(acc1) > uint(127):
                    if acc1 < 0:
                        acc1 = 0
                    else:
                        acc1 = 127
                d1[ox] = acc1
                acc2 >>= sh2
                if uint(acc2) > uint(127):
                    if acc2 < 0:
                        acc2 = 0
                    else:
                        acc2 = 127
                d2[ox] = acc2
                acc3 >>= sh3
                if uint(acc3) > uint(127):
                    if acc3 < 0:
                        acc3 = 0
                    else:
                        acc3 = 127
                d3[ox] = acc3
            wc += 32 * np
            o += 4 * ho * wo
        q += wo


@micropython.viper
def maxpool_v(x: ptr8, y: ptr8, w: ptr8, b: ptr8, s: ptr8, p: ptr32):
    # p: c, h, w. 2x2, stride 2, floor. Compared as u = x ^ 0x80 (int8 order = unsigned order of u),
    # so no load needs a sign extension; x and y walk the input and output.
    c = p[0]
    h = p[1]
    wd = p[2]
    ho = h >> 1
    wo = wd >> 1
    src = int(x)
    for ci in range(c):
        for oy in range(ho):
            x = ptr8(src + (ci * h + 2 * oy) * wd)
            for ox in range(wo):
                m = x[0] ^ 0x80
                v = x[1] ^ 0x80
                if v > m:
                    m = v
                v = x[wd] ^ 0x80
                if v > m:
                    m = v
                v = x[wd + 1] ^ 0x80
                if v > m:
                    m = v
                y[0] = m ^ 0x80
                y = ptr8(int(y) + 1)
                x = ptr8(int(x) + 2)


@micropython.viper
def s2d_v(x: ptr8, y: ptr8, w: ptr8, b: ptr8, s: ptr8, p: ptr32):
    # p: c, h, w. 2x2 space to depth, floor: y[4c + 2a + b][i][j] = x[c][2i + a][2j + b]; x and y walk.
    h = p[1]
    wd = p[2]
    wo = wd >> 1
    skip = 2 * wd - 2 * wo                          # from the end of a row's pass to row 2i + 2
    src = int(x)
    for co in range(4 * p[0]):
        x = ptr8(src + ((co >> 2) * h + (co >> 1 & 1)) * wd + (co & 1))
        for i in range(h >> 1):
            n = wo
            while n:
                y[0] = x[0]
                x = ptr8(int(x) + 2)
                y = ptr8(int(y) + 1)
                n -= 1
            x = ptr8(int(x) + skip)


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
    # dense over an int16 src (a GPOOL's output), on prepare()'s unsigned layout: w holds room for
    # u = x + 32768 (nin uint16), then v = w + 128 [nout][nin]; b holds C = bias + round - 32768 sum(w).
    # Then sum(w x) = sum(v u) - 128 sum(u) - 32768 sum(w) (mod 2^32, exact in the end). p: nin, nout,
    # relu, offset of v in w. x and y are reused as the two pointers of the dot.
    nin = p[0]
    nout = p[1]
    lo = -128
    if p[2]:
        lo = 0
    dst = y
    ua = int(w)
    wt = int(w) + p[3]
    y = ptr8(ua)
    su = 0
    for i in range(nin):                            # u = x + 32768, and 128 * sum(u)
        v = x[i] ^ 0x8000
        su += v
        y[2 * i] = v
        y[2 * i + 1] = v >> 8
    su <<= 7
    y = ptr8(wt)
    for o in range(nout):
        x = ptr16(ua)
        acc = (((b[2 * o + 1] ^ 0x8000) - 0x8000) << 16 | b[2 * o]) - su
        n = nin
        while n > 7:
            acc += (x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3] + x[4] * y[4] + x[5] * y[5] +
                    x[6] * y[6] + x[7] * y[7])
            x = ptr16(int(x) + 16)
            y = ptr8(int(y) + 8)
            n -= 8
        while n:
            acc += x[0] * y[0]
            x = ptr16(int(x) + 2)
            y = ptr8(int(y) + 1)
            n -= 1
        acc >>= s[o]                                # arithmetic shift
        if acc < lo:
            acc = lo
        elif acc > 127:
            acc = 127
        dst[o] = acc


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


def _at(co, j, np):
    # output channel co's weight word j in a lane layout: groups of four channels, passes of 18 (or
    # 9, 5) words, each pass's weights after room for its products
    return 32 * (co >> 2) * np + 576 * (j // 18) + 16 * min(18, np - j // 18 * 18) + 16 * (j % 18) + 4 * (co & 3)


def prepare(op, w, b, s, p):
    """The (w, b, s, p) a kernel takes for a blob op's weights, biases, shifts and sizes: CONV's
    unsigned layout (see conv_v), laid out once when the model loads; other ops as they are."""
    if op == 8:                                     # DENSE over an int16 src (dense16_v)
        nin, nout = p[0], p[1]
        lay = bytearray(2 * nin + nin * nout)      # u first: 16-bit loads need 2-byte alignment
        c = array("i", bytes(4 * nout))
        for o in range(nout):
            sw = 0
            for i in range(o * nin, o * nin + nin):
                lay[2 * nin + i] = w[i] ^ 0x80
                sw += (w[i] ^ 0x80) - 0x80
            c[o] = _bias(b, o) + ((1 << s[o]) >> 1) - 32768 * sw
        return lay, c, s, array("i", list(p) + [2 * nin])
    if op != 1:                                     # blob.CONV
        return w, b, s, p
    cin, h, wd, cout, wo = p[0], p[1], p[2], p[3], p[6]
    k = 9 * cin
    pairs = (cin + 1) // 2                          # input channels two a 32-bit word (16-bit lanes)
    np = 9 * pairs                                  # words a window
    if cin == 1:                                    # two taps a word (conv_v): 5 words, a 10th tap of 0
        np = 5
    if 127 * np >= 65536:                           # a window's lane sums would not fit 16 bits:
        np = pairs = 0                              # conv_v takes its one-MAC-a-multiply path
    plane = (h + 2) * (wd + 2)
    at_pk = 4 * (wd + 2)                            # after room for 128 * sum of each window (int32)
    co2 = (cout + 3) // 4 * 4                       # the dots go four output channels at a time
    at_lb = at_pk + 8 * co2 * np                   # (each pass's products beside its weights)
    at_img = at_lb + 4 * co2                        # the input as lanes, border 0
    at_row = at_img + 4 * pairs * plane             # three of its rows interleaved
    at_w = at_row + 12 * pairs * (wd + 2)
    at_padu = at_w + cout * k                       # the input as u = x + 128, border 128 (rows
    at_col = at_padu + (_ROW * (h + 2) if cin == 1 and wd + 2 <= _ROW else cin * plane)   # _ROW apart: conv_v)
    at_sk = at_col + k * wo + wo                   # + scratch for an odd cout's extra channel
    sg = cin % 4 == 0 and np and b"\x80" not in bytes(w)  # signed lanes: |w| <= 127, 18-word passes
    lay = bytearray(at_sk + (8 * co2 * np if sg else 0))    # signed lanes' weight words
    for i in range(at_padu, at_col):
        lay[i] = 128
    c = array("i", bytes(4 * co2))
    for co in range(cout):
        sw = 0
        words = [0] * np                            # signed lanes: W = w[odd ci] + w[even ci] << 16
        for i in range(k):
            v = w[co * k + i] ^ 0x80                # int8 byte -> v = w + 128
            lay[at_w + co * k + i] = v
            ci, ky, kx = i // 9, i // 3 % 3, i % 3
            if np:                                  # word (kx, ky, pair): V = v[odd ci] + v[even ci] << 16,
                j = (kx * 3 + ky) * pairs + (ci >> 1)   # four output channels' words interleaved
                hi = not ci & 1                     # (the lane of x[2m]: V's high half)
                if cin == 1:                        # words: rows 0/1 of kx 0, row 2's kx 0/1, rows 0/1
                    j = (kx + 1 if kx else 0) if ky < 2 else 1 + 3 * (kx >> 1)    # of kx 1, of kx 2, row 2's kx 2
                    hi = ky == 0 or ky == 2 and kx != 1
                lay[at_pk + _at(co, j, np) + (2 if hi else 0)] = v
                words[j] += (v - 128) << (16 if hi else 0)
            sw += v - 128
        for j in range(np if sg else 0):
            for i in range(4):
                lay[at_sk + _at(co, j, np) + i] = (words[j] >> 8 * i) & 0xff
        r = _bias(b, co) + ((1 << s[co]) >> 1)
        c[co] = r - 128 * sw
        for i in range(4):
            lay[at_lb + 4 * co + i] = (r >> 8 * i) & 0xff
    return lay, c, s, array("i", list(p) + [at_w, at_padu, at_img, at_pk, at_lb, at_row, np, at_col,
                                            at_sk if sg else 0])


# in blob op order (blob.CONV == 1 ...), then dense over an int16 src
KERNELS = (conv_v, maxpool_v, gpool_v, dense_v, logit_v, compress_v, s2d_v, dense16_v)
