"""The integer reference: the living definition of the blob's fixed point (ugate.shared.blob),
like tinygrad's ops_python. numpy int64, vectorised over a batch; every intermediate is checked to
fit int32, so the device's 32-bit kernels (and viper on a 64-bit host) must give the same bits.

Dot products go through float64 matmul: every product and partial sum is an integer below 2^53,
so the result is exact and BLAS-fast."""
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ugate import UgateError
from ugate.shared import blob as B


def check_int(what, x, bits=32):
    """Raise OverflowError if any value of x (int64 array) leaves int32 (int16 with bits=16)."""
    if x.size and (x.min() < -2 ** (bits - 1) or x.max() >= 2 ** (bits - 1)):
        raise OverflowError(f"{what} leaves int{bits}: range [{x.min()}, {x.max()}]")


def _dot(w, x, xmax):
    """w (O, K) @ x (N, K, P) -> (N, O, P) exact int64, and per (N, O) a bound that every partial
    sum, in any order, stays within: sum |w| times the sample's largest |x| (xmax (N,))."""
    acc = (w.astype(np.float64) @ x).astype(np.int64)
    return acc, (np.abs(w.astype(np.int64)).sum(1)[None, :] * xmax[:, None])[:, :, None]


def _absmax(x):
    return np.abs(x.reshape(len(x), -1)).max(1).astype(np.int64)


def _requant(what, acc, bound, b, n, relu):
    """acc (N, O, P), b and n (O,): y = clamp((acc + b + r) >> n)."""
    b, n = b.astype(np.int64)[:, None], n.astype(np.int64)[:, None]
    half = (1 << n) >> 1                            # rounding add: round half up (0 when n = 0)
    check_int(f"{what}: |acc| + |bias| + rounding", bound + np.abs(b) + half)
    y = (acc + b + half) >> n                       # arithmetic shift right by the channel's n
    return np.clip(y, 0 if relu else -128, 127)


def conv(x, w, b, n, stride=1, relu=True, what="conv"):
    """3x3 conv, zero padding 1. x (N, C, H, W) int; w (O, C, 3, 3) int8; b int32 (O,); n (O,)."""
    N, C, H, W = x.shape
    ho, wo = -(-H // stride), -(-W // stride)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
                     for ky in range(3) for kx in range(3)], axis=2).reshape(N, C * 9, ho * wo)
    acc, bound = _dot(w.reshape(len(w), -1), cols, _absmax(x))
    return _requant(what, acc, bound, b, n, relu).reshape(N, len(w), ho, wo)


def maxpool(x):
    """2x2, stride 2, floor."""
    a = x[:, :, :x.shape[2] // 2 * 2, :x.shape[3] // 2 * 2]
    return np.maximum(np.maximum(a[:, :, 0::2, 0::2], a[:, :, 0::2, 1::2]), np.maximum(a[:, :, 1::2, 0::2], a[:, :, 1::2, 1::2]))


def gpool(x, m, k, j=0, what="gpool"):
    """(N, C, H, W) -> (N, 2C, 1, 1) int16 at scale s / 2^j: global max << j, then the global mean
    as (sum * m + r) >> (k - j)."""
    x = x.astype(np.int64)
    total = x.sum(axis=(2, 3))
    half = (1 << (k - j)) >> 1                      # rounding add: round half up
    check_int(f"{what}: |sum| * m + rounding", np.abs(total) * m + half)
    mean = (total * m + half) >> (k - j)            # arithmetic shift: the division by H*W, j bits kept
    y = np.concatenate([x.max(axis=(2, 3)) << j, mean], axis=1)[:, :, None, None]
    check_int(f"{what}: output", y, 16)
    return y


def dense(x, w, b, n, relu=True, what="dense"):
    """x (N, ...) flattened; w (O, K) int8."""
    acc, bound = _dot(w, x.reshape(len(x), -1, 1).astype(np.float64), _absmax(x))
    return _requant(what, acc, bound, b, n, relu).reshape(len(x), len(w), 1, 1)


def logit(x, w, b, what="logit"):
    """One output, no shift: the int32 acc + b."""
    acc, bound = _dot(w.reshape(1, -1), x.reshape(len(x), -1, 1).astype(np.float64), _absmax(x))
    check_int(f"{what}: |acc| + |bias|", bound + abs(int(b[0])))
    return (acc + int(b[0])).reshape(len(x), 1, 1, 1)


def compress(x, t):
    """Shifted ReLU: min(max(x - t[c], 0), 127)."""
    return np.clip(x.astype(np.int64) - t.astype(np.int64)[None, :, None, None], 0, 127)


def s2d(x):
    """2x2 space to depth, floor: (N, C, H, W) -> (N, 4C, H // 2, W // 2), channel 4c + 2a + b."""
    n, c, h, w = x.shape
    x = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
    return x.transpose(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)


def load(blob):
    """(raw bytes, parsed dict) from a path, bytes or an already loaded (raw, parsed) pair."""
    if isinstance(blob, tuple):
        return blob
    if isinstance(blob, (str, Path)):
        try:
            blob = Path(blob).read_bytes()
        except OSError as e:
            raise UgateError(f"cannot read blob {blob}: {e.strerror}") from None
    try:
        return bytes(blob), B.parse(blob)
    except ValueError as e:
        raise UgateError(str(e)) from None


def params(raw, model, op):
    """The numpy views of one op's weights, biases, shifts (or thresholds), by the blob's offsets."""
    kind, src, dst, _, _, stride, k, j, m, wo, bo, so = op
    (nw, nb, ns), _ = B._extents(kind, model["bufs"][src], model["bufs"][dst], stride)
    arr = lambda off, cnt, dt: np.frombuffer(raw, dt, cnt, off) if cnt else None
    return arr(wo, nw, np.int8), arr(bo, nb // 4, "<i4"), arr(so, ns, np.uint8)


def _run_op(raw, model, i, x):
    kind, src, dst, _, relu, stride, k, j, m, *_ = op = model["ops"][i]
    w, b, n = params(raw, model, op)
    name = model["bufs"][dst][0]
    if kind == B.CONV:
        return conv(x, w.reshape(len(b), -1, 3, 3), b, n, stride, relu, name)
    if kind == B.MAXPOOL:
        return maxpool(x)
    if kind == B.GPOOL:
        return gpool(x, m, k, j, name)
    if kind == B.DENSE:
        return dense(x, w.reshape(len(b), -1), b, n, relu, name)
    if kind == B.LOGIT:
        return logit(x, w, b, name)
    if kind == B.S2D:
        return s2d(x)
    return compress(x, w)


def run(blob, x, batch=500, progress=False):
    """Run the blob on int8 inputs x (N, C, H, W). Returns a dict: logit (N,) int64, open (N,)
    bool, act (N, C, H, W) int8 (computed for every sample, valid where open), layers {buffer
    name: (N, c, h, w)} for every buffer in blob order, input included."""
    raw, model = load(blob)
    bufs = model["bufs"]
    x = np.asarray(x)
    if x.shape[1:] != bufs[0][1:4]:
        raise UgateError(f"input shape {x.shape[1:]} does not match the blob's {bufs[0][1:4]}")
    dtypes = {B.I8: np.int8, B.I16: np.int16, B.I32: np.int32}
    layers = {name: np.empty((len(x), c, h, w), dtypes[kind]) for name, c, h, w, kind in bufs}
    for lo in tqdm(range(0, len(x), batch), desc="reference", disable=not progress, leave=False):
        vals = {0: x[lo:lo + batch].astype(np.int64)}
        for i, op in enumerate(model["ops"]):
            vals[op[2]] = _run_op(raw, model, i, vals[op[1]])
        for j, v in vals.items():
            layers[bufs[j][0]][lo:lo + batch] = v
    out = next(op for op in model["ops"] if op[0] == B.LOGIT)
    act = next(op for op in model["ops"] if op[0] == B.COMPRESS)
    g = layers[bufs[out[2]][0]].reshape(-1).astype(np.int64)
    return {"logit": g, "open": g >= model["thr"], "act": layers[bufs[act[2]][0]], "layers": layers}


def first_difference(expected, got):
    """expected: {buffer name: array (c, h, w)} for one sample, in run order; got: the same names,
    arrays or raw bytes. None when equal, else one line naming the first differing buffer and
    element (c, y, x)."""
    for name, e in expected.items():
        if name not in got:
            return f"{name}: missing from the device's buffers"
        e, g = np.asarray(e), got[name]
        g = np.frombuffer(g, e.dtype) if isinstance(g, (bytes, bytearray, memoryview)) else np.asarray(g)
        if g.size != e.size:
            return f"{name}: {g.size} values, expected {e.size}"
        bad = np.flatnonzero(g.reshape(-1) != e.reshape(-1))
        if len(bad):
            at = np.unravel_index(bad[0], e.shape)
            return f"{name}[{', '.join(map(str, at))}]: device {g.reshape(-1)[bad[0]]}, reference {e[at]}"
    return None


def macs(blob):
    """Multiply-accumulates a sample in the conv, dense and logit ops (stage 1 and the gate)."""
    _, model = load(blob)
    bufs, n = model["bufs"], 0
    for kind, src, dst, *_ in model["ops"]:
        (_, c, h, w, _), (_, co, ho, wo, _) = bufs[src], bufs[dst]
        n += {B.CONV: co * ho * wo * c * 9, B.DENSE: co * c * h * w, B.LOGIT: c * h * w}.get(kind, 0)
    return n
