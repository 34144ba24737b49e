"""The stage-1 blob: the int8 model the device runs, and the fixed-point rules it is run by.
This docstring is the normative definition; ugate.reference is its executable form.

Layout (all little-endian; offsets count from the blob's first byte)
  header   _HDR  "<4sHHI8sfffiBBH", 40 bytes:
           magic b"UGB1", version (4), flags (FRONTEND: an audio front-end section follows the
           op table, shared/frontend.py), size (bytes, trailer included), model hash (first 8
           bytes of sha256 of the blob with this field zeroed and without the trailer),
           in_scale, act_scale, logit_scale (float32), thr (int32), n_bufs, n_ops, 0
  buffers  n_bufs x _BUF "<8sHHHH", 16 bytes: name (NUL-padded ASCII), c, h, w, kind
           (I8, I16 or I32; I16 and I32 little-endian). Tensors are C*H*W, CHW order. Buffer 0 is
           the input.
  ops      n_ops x _OP "<BBBBBBBBIIII", 24 bytes: op, src, dst (buffer indices), phase
           (STAGE1, GATE, PH_COMPRESS), relu, stride, k, j, m, w, b, s (offsets; 0 when unused).
           Each op reads one earlier-written buffer, so the gate branch and the compression
           both read stage 1's output.
  front end (flag FRONTEND) _FE "<HHHHHHHhHHIIII", 36 bytes: the integer log-mel front end the
           model's input comes from (its rules: shared/frontend.py): sr, n, hop, pad, n_mels, k_lo,
           k_hi, offset (int16), gain, 0, then the offsets of its tables: window int16[n], twiddles
           int16[n] (cos k for k < n/2, then sin k), band uint8[n/2 + 1], weight int16[n/2 + 1]
           (int16 tables 2-aligned). Made by the host (ugate.frontend.params); the device only
           reads them.
  data     int8 weights, int32 biases (4-aligned), uint8 shifts, at the ops' offsets
  trailer  CRC32 (binascii.crc32, uint32) of every byte before it

Fixed point: every value below fits int32 for any int8 input, so 32-bit kernels are exact.
  Activations int8 with one symmetric scale per tensor; the input
           q = clamp(round(x / in_scale)) (host side, round half to even).
  CONV     3x3, stride `stride`, zero padding 1, out h = ceil(h / stride). Weights w[co][ci][ky][kx]
           int8, bias b[co] int32, shift n[co] (0..24). For each output:
             acc = sum(w * x);  r = (1 << n) >> 1  (round half up);  y = (acc + b + r) >> n
           (arithmetic shift), clamped to [0, 127] if relu else [-128, 127].
           Export: w_q = round(w / (2^-n * s_out / s_in)), n the largest with |w_q| <= 127 and
           |b_q| + 128 * 127 * K + r < 2^31 (K = terms summed), b_q = round(b * 2^n / s_out);
           at n = 0 w_q is clipped to [-127, 127]. Weights are never -128.
  DENSE    the same with w[o][i] over the flattened src (K = src size), dst c = outputs. The src
           is I8, or the I16 of a GPOOL (|x| <= 2^15, so the bound reads |b_q| + 2^15 * 127 * K + r).
  MAXPOOL  2x2, stride 2, floor: max of int8; same scale.
  S2D      2x2 space to depth, floor: dst[4c + 2a + b][i][j] = src[c][2i + a][2j + b] (torch's
           pixel_unshuffle order); same scale. A one-channel input's first conv then has 4 channels.
  GPOOL    dst (2C, 1, 1) I16, at the finer scale s / 2^j (s: src's scale, j: the op's j, 0..7,
           j <= k): dst[c] = (max over H*W of src[c]) << j; dst[C + c] = (sum * m + r) >> (k - j)
           with r = (1 << (k - j)) >> 1, m / 2^k ~ 1 / (H*W), m < 2^15, |sum| * m + r < 2^31.
           Why: a global mean is a few int8 units, so rounding it to s alone flips gate decisions;
           j extra fractional bits keep it (|dst| <= 128 * 2^7 * (1 + 2^-14) < 2^15).
  LOGIT    one output, no shift: logit = acc + b (int32, |acc| + |b| < 2^31) into the I32 dst
           of shape (1, 1, 1); weights w_q = round(w / s_w), s_w = max|w| / 127;
           real logit = logit * logit_scale. The gate is open when logit >= thr,
           thr = ceil(threshold / logit_scale).
  COMPRESS y = min(max(x - t[c], 0), 127), t[c] int8 at `w`, in x's scale. dst is the activation
           sent on (scale act_scale).
  Ops come in phase order (STAGE1, GATE, PH_COMPRESS); the device runs COMPRESS only when open.
"""
import struct
import binascii


try:
    from micropython import const
except ImportError:
    const = lambda x: x

MAGIC = b"UGB1"
VERSION = const(4)   # 3: the audio front-end section; 4: S2D
FRONTEND = const(1)   # header flag
_HDR = "<4sHHI8sfffiBBH"
_BUF = "<8sHHHH"
_OP = "<BBBBBBBBIIII"
_HDR_SIZE = const(40)
_BUF_SIZE = const(16)
_OP_SIZE = const(24)

# ops
CONV = const(1)
MAXPOOL = const(2)
GPOOL = const(3)
DENSE = const(4)
LOGIT = const(5)
COMPRESS = const(6)
S2D = const(7)
OPS = ("", "conv", "maxpool", "gpool", "dense", "logit", "compress", "s2d")
# phases: the device times each, and runs COMPRESS only when the gate is open
STAGE1 = const(0)
GATE = const(1)
PH_COMPRESS = const(2)
# buffer kinds
I8 = const(0)
I32 = const(1)
I16 = const(2)


def _ceil(a, b):
    return -(-a // b)


def _extents(op, src, dst, stride):
    """The (weight, bias, shift) bytes an op reads, and the dst (c, h, w, kind) it must have."""
    sc, sh, sw = src[1], src[2], src[3]
    if op == CONV:
        return (dst[1] * sc * 9, 4 * dst[1], dst[1]), (dst[1], _ceil(sh, stride), _ceil(sw, stride), I8)
    if op == MAXPOOL:
        return (0, 0, 0), (sc, sh // 2, sw // 2, I8)
    if op == GPOOL:
        return (0, 0, 0), (2 * sc, 1, 1, I16)
    if op == DENSE:
        return (dst[1] * sc * sh * sw, 4 * dst[1], dst[1]), (dst[1], 1, 1, I8)
    if op == LOGIT:
        return (sc * sh * sw, 4, 0), (1, 1, 1, I32)
    if op == S2D:
        return (0, 0, 0), (4 * sc, sh // 2, sw // 2, I8)
    return (sc, 0, 0), (sc, sh, sw, I8)   # COMPRESS


_FE = "<HHHHHHHhHHIIII"
_FE_SIZE = const(36)


def pack_frontend(p, at):
    """The section bytes for parameters p (a dict: sr, n, hop, pad, n_mels, k_lo, k_hi, offset, gain,
    window, twiddle, band, weight; tables as bytes) when the section starts at blob offset `at`.
    Returns the section: its record, then the tables."""
    data = bytearray()
    offs = []
    for key in ("window", "twiddle", "band", "weight"):
        data.extend(b"\0" * ((at + _FE_SIZE + len(data)) & 1))    # int16 tables 2-aligned
        offs.append(at + _FE_SIZE + len(data))
        data.extend(p[key])
    rec = struct.pack(_FE, p["sr"], p["n"], p["hop"], p["pad"], p["n_mels"], p["k_lo"], p["k_hi"],
                      p["offset"], p["gain"], 0, *offs)
    return rec + bytes(data)


def parse_frontend(buf, at, end):
    """The section at `at` of blob `buf` (tables as memoryview slices, nothing copied); ValueError
    names what is wrong. Returns (dict, offset after the record)."""
    sr, n, hop, pad, n_mels, k_lo, k_hi, offset, gain, _, w, t, b, m = struct.unpack_from(_FE, buf, at)
    if n < 16 or n & (n - 1) or not 0 < hop <= n or pad > n or not 0 < n_mels < 250 \
            or not 0 <= k_lo <= k_hi <= n // 2 + 1:
        raise ValueError("blob front end: bad parameters n=%d hop=%d pad=%d n_mels=%d bins %d..%d"
                         % (n, hop, pad, n_mels, k_lo, k_hi))
    bv = memoryview(buf)
    p = {"sr": sr, "n": n, "hop": hop, "pad": pad, "n_mels": n_mels, "k_lo": k_lo, "k_hi": k_hi,
         "offset": offset, "gain": gain}
    for key, off, ln in (("window", w, 2 * n), ("twiddle", t, 2 * n), ("band", b, n // 2 + 1),
                         ("weight", m, n + 2)):
        if off < at + _FE_SIZE or off + ln > end or (ln != n // 2 + 1 and off & 1):
            raise ValueError("blob front end: %s table [%d, %d) outside the blob" % (key, off, off + ln))
        p[key] = bv[off:off + ln]
    return p, at + _FE_SIZE


def parse(buf):
    """Check and parse a blob (bytes-like). Returns a dict: version, hash (bytes), size, in_scale,
    act_scale, logit_scale, thr, bufs [(name, c, h, w, kind)], ops [(op, src, dst, phase, relu,
    stride, k, j, m, w, b, s)]. Offsets point into `buf`: nothing is copied. ValueError names what is
    wrong."""
    n = len(buf)
    if n < _HDR_SIZE + 4:
        raise ValueError("blob truncated: %d bytes, a header needs %d" % (n, _HDR_SIZE + 4))
    magic, ver, flags, size, h, s_in, s_act, s_logit, thr, nb, no, _ = struct.unpack_from(_HDR, buf, 0)
    if magic != MAGIC:
        raise ValueError("not a ugate blob: magic %r, expected %r" % (magic, MAGIC))
    if ver != VERSION:
        raise ValueError("blob format version %d, this code reads version %d: re-export" % (ver, VERSION))
    if size != n:
        raise ValueError("blob size %d bytes, header says %d (truncated or padded)" % (n, size))
    crc = struct.unpack_from("<I", buf, n - 4)[0]
    if binascii.crc32(memoryview(buf)[:n - 4]) & 0xffffffff != crc:
        raise ValueError("blob CRC32 mismatch: corrupted, copy it again")
    bufs = []
    at = _HDR_SIZE
    for _ in range(nb):
        name, c, bh, bw, kind = struct.unpack_from(_BUF, buf, at)
        bufs.append((name.rstrip(b"\0").decode(), c, bh, bw, kind))
        at += _BUF_SIZE
    ops = []
    for i in range(no):
        rec = struct.unpack_from(_OP, buf, at)
        at += _OP_SIZE
        op, src, dst, phase, relu, stride, k, j, m, w, b, s = rec
        if not 0 < op < len(OPS) or src >= nb or dst >= nb or stride < 1 or j > 7 or j > k:
            raise ValueError("blob op %d: bad record %r" % (i, rec))
        nbytes, shape = _extents(op, bufs[src], bufs[dst], stride)
        if shape != bufs[dst][1:5]:
            raise ValueError("blob op %d (%s): output %r, expected %r" % (i, OPS[op], bufs[dst][1:5], shape))
        if bufs[src][4] != I8 and not (op == DENSE and bufs[src][4] == I16):
            raise ValueError("blob op %d (%s): input kind %d" % (i, OPS[op], bufs[src][4]))
        for off, ln in zip((w, b, s), nbytes):
            if ln and (off < at or off + ln > n - 4):
                raise ValueError("blob op %d (%s): data [%d, %d) outside the blob" % (i, OPS[op], off, off + ln))
        if nbytes[1] and b & 3:
            raise ValueError("blob op %d (%s): bias offset %d not 4-aligned" % (i, OPS[op], b))
        if ops and phase < ops[-1][3]:
            raise ValueError("blob op %d (%s): phase %d after phase %d" % (i, OPS[op], phase, ops[-1][3]))
        ops.append((op, src, dst, phase, relu, stride, k, j, m, w, b, s))
    fe = None
    if flags & FRONTEND:
        fe, at = parse_frontend(buf, at, n - 4)
    return {"frontend": fe, "version": ver, "hash": h, "size": n, "in_scale": s_in, "act_scale": s_act,
            "logit_scale": s_logit, "thr": thr, "bufs": bufs, "ops": ops}


def pack(bufs, ops, in_scale, act_scale, logit_scale, thr, fe=None):
    """Build a blob (host side). bufs: [(name, c, h, w, kind)]; ops: [(op, src, dst, phase, relu,
    stride, k, j, m, w_bytes, b_bytes, s_bytes)] with the data as bytes (b'' when unused); fe: the
    audio front end's parameters and tables (shared/frontend.py), or None."""
    import hashlib
    sec_at = _HDR_SIZE + _BUF_SIZE * len(bufs) + _OP_SIZE * len(ops)
    sec = pack_frontend(fe, sec_at) if fe else b""
    data_at = sec_at + len(sec)
    data, recs = bytearray(), bytearray()
    for op, src, dst, phase, relu, stride, k, j, m, *arrays in ops:
        offs = []
        for i, a in enumerate(arrays):
            if i == 1:
                data.extend(b"\0" * (-(data_at + len(data)) % 4))   # int32 biases 4-aligned
            offs.append(data_at + len(data) if len(a) else 0)
            data.extend(a)
        recs.extend(struct.pack(_OP, op, src, dst, phase, relu, stride, k, j, m, *offs))
    table = b"".join(struct.pack(_BUF, name.encode(), c, h, w, kind) for name, c, h, w, kind in bufs)
    size = data_at + len(data) + 4
    hdr = lambda h: struct.pack(_HDR, MAGIC, VERSION, FRONTEND if fe else 0, size, h, in_scale, act_scale, logit_scale, thr,
                                len(bufs), len(ops), 0)
    body = table + bytes(recs) + sec + bytes(data)
    h = hashlib.sha256(hdr(bytes(8)) + body).digest()[:8]
    out = hdr(h) + body
    return out + struct.pack("<I", binascii.crc32(out) & 0xffffffff)
