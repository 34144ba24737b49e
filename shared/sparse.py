"""Sparse encoding of int8 activations (the ACTIVATIONS payload after its u16 vector seq).
MicroPython subset: imported as ugate.shared.sparse on the host and as `sparse` on the device.

Layout (little-endian): u8 mode, u16 n (elements), u16 nnz (nonzero elements), then by mode:
    DENSE   n int8 values.
    BITMAP  ceil(n/8) bytes, bit i (LSB first) set where element i is nonzero; nnz int8 values.
    DELTA   nnz gaps (zeros skipped before each nonzero), one byte each; a gap g >= 255 is written
            as g // 255 bytes 0xFF then g % 255. Then nnz int8 values.
    RICE    only when every nonzero value is positive (ReLU activations): per nonzero element, its
            gap then its value - 1, each Rice-coded with parameter k: x >> k one-bits, a zero bit,
            then the low k bits of x. Bits are packed LSB first. The mode byte carries the gap's k
            in bits 2..4 and the value's k in bits 5..7; the encoder picks both (0..7) per frame.
            Near the entropy of a geometric gap; about a bit below int8 on small values.
The mode byte's low 2 bits are the mode. The encoder counts the size of each mode and writes the
smallest (ties: the earlier mode), so a frame never costs more than 5 bytes over dense int8.
"""
try:
    from micropython import const
except ImportError:
    const = lambda x: x

DENSE = const(0)
BITMAP = const(1)
DELTA = const(2)
RICE = const(3)
HEADER = const(5)
_K = const(8)    # Rice parameters tried: 0.._K-1
_sums = [0] * (2 * _K)   # encode's scratch: sum of gap >> k, then of (value - 1) >> k


def size(n):
    """The most bytes encode can write for n elements: the out buffer to allocate once."""
    return HEADER + n


def _rice(out, pos, x, k):
    # out is zeroed, so only one-bits are written
    q = x >> k
    while q:
        out[pos >> 3] |= 1 << (pos & 7)
        pos += 1
        q -= 1
    pos += 1
    if k:
        v = (x & ((1 << k) - 1)) << (pos & 7)
        out[pos >> 3] |= v & 0xFF
        if v >> 8:
            out[(pos >> 3) + 1] |= v >> 8
        pos += k
    return pos


def encode(act, n, out):
    """Encode act[0:n] (int8 as bytes) into out (len >= size(n)); returns the length. Allocates
    nothing: the Rice costs go in a module-level scratch list."""
    s = _sums
    for k in range(2 * _K):
        s[k] = 0
    nnz = dgap = 0
    pos_only = True
    prev = -1
    for i in range(n):
        b = act[i]
        if b:
            g = i - prev - 1
            nnz += 1
            dgap += g // 255 + 1
            prev = i
            if b > 127:
                pos_only = False
            b -= 1
            for k in range(_K):
                s[k] += g >> k
                s[_K + k] += b >> k
    nb = (n + 7) >> 3
    mode, m = DENSE, n
    if nb + nnz < m:
        mode, m = BITMAP, nb + nnz
    if dgap + nnz < m:
        mode, m = DELTA, dgap + nnz
    if pos_only:
        kg = kv = 0
        for k in range(1, _K):
            if s[k] + nnz * k < s[kg] + nnz * kg:
                kg = k
            if s[_K + k] + nnz * k < s[_K + kv] + nnz * kv:
                kv = k
        bits = s[kg] + s[_K + kv] + nnz * (kg + kv + 2)
        if (bits + 7) >> 3 < m:
            mode, m = RICE, (bits + 7) >> 3
    out[0] = mode | (kg << 2 | kv << 5 if mode == RICE else 0)
    out[1] = n & 0xFF
    out[2] = n >> 8
    out[3] = nnz & 0xFF
    out[4] = nnz >> 8
    w = HEADER
    if mode == DENSE:
        for i in range(n):
            out[w + i] = act[i]
        return HEADER + m
    v = HEADER + m - (0 if mode == RICE else nnz)   # values start here; Rice mixes them in the bits
    for j in range(HEADER, v):
        out[j] = 0
    prev = -1
    pos = HEADER * 8
    for i in range(n):
        b = act[i]
        if b:
            if mode == BITMAP:
                out[w + (i >> 3)] |= 1 << (i & 7)
            elif mode == DELTA:
                g = i - prev - 1
                while g >= 255:
                    out[w] = 0xFF
                    w += 1
                    g -= 255
                out[w] = g
                w += 1
            else:
                pos = _rice(out, _rice(out, pos, i - prev - 1, kg), b - 1, kv)
            prev = i
            if mode != RICE:
                out[v] = b
                v += 1
    return HEADER + m


class _Bits:
    def __init__(self, p):
        self.p, self.pos, self.end = p, HEADER * 8, len(p) * 8

    def bit(self):
        if self.pos >= self.end:
            raise ValueError("sparse: offset %d: the Rice bits run past the end" % len(self.p))
        b = self.p[self.pos >> 3] >> (self.pos & 7) & 1
        self.pos += 1
        return b

    def rice(self, k):
        q = 0
        while self.bit():
            q += 1
        x = 0
        for j in range(k):
            x |= self.bit() << j
        return q << k | x


def decode(p):
    """The n int8 elements (as a bytearray) of payload p; ValueError names the offset on a bad one."""
    if len(p) < HEADER:
        raise ValueError("sparse: %d bytes, shorter than the header (%d)" % (len(p), HEADER))
    mode, n, nnz = p[0] & 3, p[1] | p[2] << 8, p[3] | p[4] << 8
    act = bytearray(n)
    if nnz > n:
        raise ValueError("sparse: offset 3: %d nonzero of %d elements" % (nnz, n))
    if mode != RICE and p[0] >> 2:
        raise ValueError("sparse: offset 0: mode byte 0x%02x has parameter bits outside RICE" % p[0])
    if mode == DENSE:
        want = n
    elif mode == BITMAP:
        want = ((n + 7) >> 3) + nnz
    else:
        want = len(p) - HEADER   # variable-length gaps: checked while walking them
    if len(p) - HEADER != want:
        raise ValueError("sparse: %d payload bytes, mode %d with n=%d nnz=%d needs %d" % (len(p) - HEADER, mode, n, nnz, want))
    if mode == DENSE:
        act[:] = p[HEADER:]
        return act
    if mode == RICE:
        bits, i = _Bits(p), -1
        for _ in range(nnz):
            i += bits.rice(p[0] >> 2 & 7) + 1
            if i >= n:
                raise ValueError("sparse: offset %d: index %d past n=%d" % (bits.pos >> 3, i, n))
            v = bits.rice(p[0] >> 5) + 1
            if v > 127:
                raise ValueError("sparse: offset %d: value %d past int8" % (bits.pos >> 3, v))
            act[i] = v
        if (bits.pos + 7) >> 3 != len(p):
            raise ValueError("sparse: offset %d: %d bytes after the Rice bits" % ((bits.pos + 7) >> 3, len(p) - ((bits.pos + 7) >> 3)))
        return act
    v = len(p) - nnz
    if mode == BITMAP:
        for i in range(n):
            if p[HEADER + (i >> 3)] >> (i & 7) & 1:
                if v >= len(p):
                    raise ValueError("sparse: offset %d: more set bits than nnz=%d" % (HEADER + (i >> 3), nnz))
                act[i] = p[v]
                v += 1
        if v != len(p):
            raise ValueError("sparse: bitmap has %d set bits, header says nnz=%d" % (nnz - (len(p) - v), nnz))
    else:
        r, i = HEADER, -1
        for _ in range(nnz):
            g = 0
            while r < v and p[r] == 0xFF:
                g += 255
                r += 1
            if r >= v:
                raise ValueError("sparse: offset %d: gaps run into the values" % r)
            i += g + p[r] + 1
            r += 1
            if i >= n:
                raise ValueError("sparse: offset %d: index %d past n=%d" % (r - 1, i, n))
            act[i] = p[v]
            v += 1
        if r != len(p) - nnz:
            raise ValueError("sparse: offset %d: %d bytes between the gaps and the values" % (r, len(p) - nnz - r))
    for j in range(len(p) - nnz, len(p)):
        if p[j] == 0:
            raise ValueError("sparse: offset %d: a zero among the nonzero values" % j)
    return act
