"""The integer audio front end on the host: the executable form of shared/frontend.py (its docstring
is the rule), numpy int64 vectorised over frames, asserting that every intermediate fits int32 (so
the chip's 32-bit viper, and viper on a 64-bit host, give the same bits). Also the tables the blob
carries, and a float log-mel of the same parameters to measure what the integers cost."""
import numpy as np

from ugate.reference import check_int
from ugate.shared import frontend as F

STAGES = ("window", "fft", "power", "mel", "log", "feature")   # HIL names the first that differs


def params(n=F.N, hop=F.HOP, n_mels=F.N_MELS, fmin=F.FMIN, fmax=F.FMAX, sr=F.SR, gain=F.GAIN, offset=F.OFFSET):
    """The front end's parameters with its tables (bytes), as shared.blob.pack_frontend takes them."""
    if n & (n - 1) or not 0 < hop <= n or not 0 < fmin < fmax <= sr / 2:
        raise ValueError(f"front end: n {n} must be a power of two, 0 < hop {hop} <= n, 0 < fmin < fmax <= sr/2")
    mel, hz = lambda f: 2595 * np.log10(1 + f / 700), lambda m: 700 * (10 ** (m / 2595) - 1)
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    f = np.arange(n // 2 + 1) * sr / n
    seg = np.searchsorted(edges, f, side="right") - 1          # edges[seg] <= f < edges[seg + 1]
    inside = (seg >= 0) & (seg <= n_mels)
    band = np.where(inside, seg, F.NOBAND).astype(np.uint8)
    c = np.clip(seg, 0, n_mels)
    weight = np.where(inside, np.minimum(np.rint(32768 * (f - edges[c]) / (edges[c + 1] - edges[c])), 32767), 0)
    k = np.flatnonzero(inside)
    q15 = lambda v: np.clip(np.rint(32768 * v), -32767, 32767).astype("<i2")
    i = np.arange(n // 2)
    p = dict(sr=sr, n=n, hop=hop, pad=n - hop, n_mels=n_mels, k_lo=int(k[0]), k_hi=int(k[-1]) + 1,
             offset=offset, gain=gain, window=q15(np.minimum(np.hanning(n), 32767 / 32768)).tobytes(),
             twiddle=np.concatenate([q15(np.cos(2 * np.pi * i / n)), q15(np.sin(2 * np.pi * i / n))]).tobytes(),
             band=band.tobytes(), weight=weight.astype("<i2").tobytes())
    sums = _mel_matrix(p).sum(1)
    if sums.max() >= 16 * 32768:
        raise ValueError(f"front end: a mel channel sums {sums.max() / 32768:.1f} bins (< 16 keeps it in int32): more channels")
    return p


def tables(p):
    """The tables of p as int64 arrays: window, cos, sin, band, weight."""
    t = lambda key, dt: np.frombuffer(bytes(p[key]), dt).astype(np.int64)
    tw, n = t("twiddle", "<i2"), p["n"]
    return t("window", "<i2"), tw[:n // 2], tw[n // 2:], t("band", np.uint8), t("weight", "<i2")


def _mel_matrix(p):
    """(n_mels, bins) Q15 weights the band/weight tables amount to (for the float twin and checks)."""
    _, _, _, band, weight = tables(p)
    m = np.zeros((p["n_mels"] + 2, p["n"] // 2 + 1), np.int64)
    for k in range(p["k_lo"], p["k_hi"]):
        c = band[k]
        m[c + 1, k] += weight[k]
        m[c, k] += 32768 - weight[k]
    return m[1:-1]


def to_pcm(audio):
    """float audio in [-1, 1] -> int16 PCM (round half to even, clipped)."""
    return np.clip(np.rint(np.asarray(audio, np.float64) * 32768), -32768, 32767).astype(np.int16)


def frames(pcm, p):
    """int16 PCM (..., L) -> (..., L // hop, n) frames: frame t is samples [t hop - pad, (t + 1) hop),
    zero before the clip (1 s -> 32 frames; a stream's frame t is complete when its stride t is)."""
    n, hop, pad = p["n"], p["hop"], p["pad"]
    pcm = np.asarray(pcm, np.int16)
    count = pcm.shape[-1] // hop
    a = np.zeros(pcm.shape[:-1] + (count * hop + pad,), np.int16)
    a[..., pad:] = pcm[..., :count * hop]
    return np.lib.stride_tricks.sliding_window_view(a, n, axis=-1)[..., ::hop, :]


def mul15(a, w):
    """round(a * w / 2^15), half up, the way 32-bit code computes it (shared/frontend.py)."""
    return (a >> 15) * w + (((a & 0x7FFF) * w + 16384) >> 15)


def _bitlen(v):
    """Bit length of each v >= 0 (int64 array)."""
    out = np.zeros(v.shape, np.int64)
    v = v.copy()
    while (v > 0).any():
        out += v > 0
        v >>= 1
    return out


def compute(frames_, p, trace=False):
    """int16 frames (F, n) -> int8 features (F, n_mels). trace: a dict of every stage's values too."""
    win, cos, sin, band, weight = tables(p)
    n, n_mels = p["n"], p["n_mels"]
    x = np.asarray(frames_, np.int64).reshape(-1, n)
    y = (x * win + 16384) >> 15                                    # window
    check_int("window", y, 17)
    rev = np.frombuffer(F.bitrev(n), np.uint16)
    re, im = y[:, rev].copy(), np.zeros_like(y)
    m = 2
    while m <= n:                                                  # radix-2 DIT butterflies
        half, step = m // 2, n // m
        c, s = cos[::step][:half], sin[::step][:half]
        re, im = re.reshape(len(x), n // m, m), im.reshape(len(x), n // m, m)
        br, bi = re[..., half:], im[..., half:]
        tr = mul15(br, c) + mul15(bi, s)
        ti = mul15(bi, c) - mul15(br, s)
        ar, ai = re[..., :half], im[..., :half]
        re = np.concatenate([ar + tr, ar - tr], -1).reshape(len(x), n)
        im = np.concatenate([ai + ti, ai - ti], -1).reshape(len(x), n)
        for v in (tr, ti, re, im):
            check_int(f"FFT stage {m}", v, 31)
        m *= 2
    re, im = re[:, :n // 2 + 1], im[:, :n // 2 + 1]
    big = np.maximum(np.abs(re), np.abs(im)).max(1)
    shift = np.maximum(_bitlen(big) - 13, 0)[:, None]            # block exponent
    power = (re >> shift) ** 2 + (im >> shift) ** 2
    check_int("power", power, 29)
    mel = np.zeros((len(x), n_mels + 2), np.int64)
    for k in range(p["k_lo"], p["k_hi"]):
        c = int(band[k])
        up = mul15(power[:, k], weight[k])
        mel[:, c + 1] += up
        mel[:, c] += power[:, k] - up
        check_int("mel", mel)
    mel = mel[:, 1:-1]
    e = np.maximum(_bitlen(mel) - 1, 0)
    u = np.where(e >= 13, mel >> np.maximum(e - 13, 0), mel << np.maximum(13 - e, 0))
    f = u - 8192
    i = f >> 8
    lg = np.asarray(F.LOG2, np.int64)
    log = 256 * e + lg[np.clip(i, 0, 31)] + (((lg[np.clip(i + 1, 0, 32)] - lg[np.clip(i, 0, 31)]) * (f & 255) + 128) >> 8)
    log = np.where(mel > 0, log + 512 * shift, 0)
    check_int("log", log, 16)
    q = to_int8(log, p)
    if not trace:
        return q
    return q, {"window": y, "fft": np.stack([re, im], -1), "shift": shift[:, 0], "power": power, "mel": mel,
               "log": log, "feature": q}


def to_int8(log, p):
    """The last stage: log2 mel power (Q8) -> int8 features, by p's gain and offset."""
    return np.clip((p["gain"] * (np.asarray(log, np.int64) - p["offset"]) + 128) >> 8, -128, 127).astype(np.int8)


def features(pcm, p):
    """int16 clips (..., L) -> int8 (..., n_mels, L // hop): the model input layout (mel by frame)."""
    return to_int8(log_features(pcm, p), p)


def log_features(pcm, p):
    """int16 clips (..., L) -> int16 (..., n_mels, L // hop): the log stage (Q8 log2 mel power) in the
    model input layout, which does not depend on gain and offset (so a cache of it serves any fit)."""
    fr = frames(pcm, p)
    _, t = compute(fr.reshape(-1, p["n"]), p, trace=True)
    return np.swapaxes(t["log"].astype(np.int16).reshape(fr.shape[:-1] + (p["n_mels"],)), -1, -2)


def fit(log, p):
    """p with the int8 mapping fitted to a training set's log stage `log`: offset its mean, gain so that
    the features' spread is 1 / SCALE steps (the model sees x = q * SCALE standardized, as it trained
    best), both integers the blob carries. The standardization lives in the front end, so the board
    emits exactly what training saw."""
    log = np.asarray(log, np.float64)
    offset = int(np.clip(np.rint(log.mean()), -32768, 32767))
    gain = int(np.clip(np.rint(256 / F.SCALE / max(log.std(), 1.0)), 1, 32767))    # gain * (log - offset) fits int32
    return {**p, "offset": offset, "gain": gain}


def float_features(frames_, p):
    """The same front end in float64 (Hann, FFT, mel power, log2), in feature units before rounding
    and clamping: what the integers approximate."""
    win, _, _, _, _ = tables(p)
    x = np.asarray(frames_, np.float64).reshape(-1, p["n"]) * np.hanning(p["n"])
    power = np.abs(np.fft.rfft(x)) ** 2
    mel = power @ (_mel_matrix(p).T / 32768)
    return p["gain"] * (np.log2(np.maximum(mel, 1e-9)) - p["offset"] / 256)


def read_trace(raw, p):
    """The bytes device/audio.py trace() writes -> the stages, as compute(trace=True) names them."""
    n, nm = p["n"], p["n_mels"]
    at, out = 0, {}
    for key, count, dt in (("window", n, "<i4"), ("re", n, "<i4"), ("im", n, "<i4"), ("power", n // 2 + 1, "<i4"),
                           ("shift", 1, "<i4"), ("mel", nm + 2, "<i4"), ("feature", nm, np.int8)):
        out[key] = np.frombuffer(raw, dt, count, at).astype(np.int64)
        at += count * np.dtype(dt).itemsize
    rev = np.frombuffer(F.bitrev(n), np.uint16)
    out["window"] = out["window"][rev]             # bit-reversed on the device: back to sample order
    out["fft"] = np.stack([out.pop("re")[:n // 2 + 1], out.pop("im")[:n // 2 + 1]], -1)
    out["mel"] = out["mel"][1:-1]
    return out


def first_difference(dev, pcm, stride, p):
    """The first stage where a device trace of `stride` of `pcm` differs from the reference, as a
    line naming it (window sample, FFT bin, block exponent, power bin, mel channel, log of a mel
    channel), or None if every stage agrees."""
    _, ref = compute(frames(pcm, p)[stride:stride + 1], p, trace=True)
    names = {"window": "window sample", "fft": "FFT bin", "shift": "block exponent", "power": "power bin",
             "mel": "mel channel", "feature": "log (int8 feature) of mel channel"}
    for key, what in names.items():
        d, r = dev[key], ref[key][0]
        bad = np.flatnonzero((d != r).reshape(len(r), -1).any(1)) if r.ndim else np.flatnonzero([d[0] != r])
        if len(bad):
            k = int(bad[0])
            return f"stride {stride}: first difference at {what} {k}: device {d[k].tolist()}, host {r[k].tolist()}"
    return None
