"""The integer audio front end: host reference vs the device's viper and portable kernels bit for bit
(random and real PCM: silence, full-scale clipping, DC, tones), the tone in the right mel channel,
the ring streaming equal to whole-window computation, the blob section, the tables."""
import math

import numpy as np
import pytest

from conftest import ROOT, run_micropython
from ugate import UgateError, frontend as H
from ugate.shared import blob as B
from ugate.shared import frontend as F

DEVICE = [ROOT / "shared" / "frontend.py", ROOT / "shared" / "blob.py", ROOT / "device" / "runtime.py",
          ROOT / "device" / "audio.py", ROOT / "device" / "audio_kernels.py", ROOT / "device" / "audio_portable.py"]
P = H.params()


def signals():
    """About 4 s of PCM that exercises every range: tones, white noise, full-scale clipping, a DC
    offset, silence, a quiet hiss, a chirp."""
    rng = np.random.default_rng(3)
    t = np.arange(F.SR) / F.SR
    parts = [H.to_pcm(0.5 * np.sin(2 * np.pi * 440 * t[:8000])), rng.integers(-32768, 32768, 6000).astype(np.int16),
             np.where(np.sin(2 * np.pi * 100 * t[:6000]) > 0, 32767, -32768).astype(np.int16),   # clipped square
             np.full(5000, 32767, np.int16), np.full(3000, -32768, np.int16), np.full(4000, 1234, np.int16),
             np.zeros(6000, np.int16), H.to_pcm(1e-4 * rng.standard_normal(5000)),
             H.to_pcm(0.9 * np.sin(2 * np.pi * (200 + 1800 * t[:16000]) * t[:16000]))]
    return np.concatenate(parts)


def device_features(tmp_path, pcm, kernels, p=P):
    """The board's columns for a PCM stream (audio.features on MicroPython), front end p."""
    (tmp_path / "fe.bin").write_bytes(B.pack_frontend(p, 0))
    (tmp_path / "pcm.bin").write_bytes(pcm.astype("<i2").tobytes())
    out = run_micropython(f"""
import blob, audio
b = open("fe.bin", "rb").read()
fe, _ = blob.parse_frontend(b, 0, len(b))
print(audio.features("pcm.bin", "out.bin", fe, {kernels!r}))
""", DEVICE, cwd=tmp_path)
    assert int(out.split()[-1]) == len(pcm) // F.HOP
    return np.frombuffer((tmp_path / "out.bin").read_bytes(), np.int8).reshape(-1, F.N_MELS)


@pytest.mark.parametrize("kernels", ["viper", "portable"])
def test_device_equals_host(tmp_path, kernels):
    pcm = signals()
    ref = H.compute(H.frames(pcm, P).reshape(-1, F.N), P)
    dev = device_features(tmp_path, pcm, kernels)
    bad = np.flatnonzero((dev != ref).any(1))
    assert not len(bad), f"stride {bad[0]}: device {dev[bad[0]]} vs host {ref[bad[0]]}"
    assert ref.min() == -128 and ref.max() > 60     # silence at the floor, loud frames well up


def test_fitted_mapping_standardizes_and_the_board_follows(tmp_path):
    """A model's int8 mapping fitted on its training log stage: the features come out standardized
    (mean ~0, spread ~1 / SCALE steps), and the board, given the fitted gain and offset, emits them."""
    pcm = signals()
    log = H.log_features(pcm, P)
    q0 = H.to_int8(log, P).astype(float)
    p = H.fit(log, P)
    q = H.to_int8(log, p)
    assert np.array_equal(H.features(pcm, p), q) and abs(q0.mean()) > 8       # the defaults are not centred
    assert abs(q.mean()) < 4 and 0.8 < q.std() * F.SCALE < 1.25
    dev = device_features(tmp_path, pcm, "viper", p)
    assert np.array_equal(dev, q.T)


def test_trace_names_no_stage_when_equal(tmp_path):
    """audio.trace's stage by stage dump equals the reference's intermediates (what HIL compares)."""
    pcm = signals()
    (tmp_path / "fe.bin").write_bytes(B.pack_frontend(P, 0))
    (tmp_path / "pcm.bin").write_bytes(pcm.astype("<i2").tobytes())
    run_micropython("""
import blob, audio
b = open("fe.bin", "rb").read()
fe, _ = blob.parse_frontend(b, 0, len(b))
audio.trace("pcm.bin", "tr.bin", fe, 20)
""", DEVICE, cwd=tmp_path)
    assert H.first_difference(H.read_trace((tmp_path / "tr.bin").read_bytes(), P), pcm, 20, P) is None


def test_tone_lands_in_its_mel_channel():
    t = np.arange(F.SR) / F.SR
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    centres = 700 * (10 ** (np.linspace(mel(F.FMIN), mel(F.FMAX), F.N_MELS + 2)[1:-1] / 2595) - 1)
    for f in (250, 700, 1500, 3000):
        q = H.features(H.to_pcm(0.3 * np.sin(2 * np.pi * f * t)), P)
        assert q[:, 5:].mean(1).argmax() == np.abs(centres - f).argmin()


def test_silence_dc_and_clipping_ranges():
    """Silence is the floor; a DC offset only reaches the lowest bins (below the first channel);
    full-scale clipping stays inside int32 at every stage (compute asserts it)."""
    z = H.compute(np.zeros((2, F.N), np.int16), P)
    assert (z == -128).all()
    dc = H.compute(np.full((1, F.N), 20000, np.int16), P)
    square = H.compute(np.where(np.arange(F.N) % 8 < 4, 32767, -32768)[None].astype(np.int16), P)   # 2 kHz
    assert dc.max() < -30 and square.max() > 80 and int(square.max()) - int(dc.max()) > 100
    _, tr = H.compute(np.full((1, F.N), -32768, np.int16), P, trace=True)
    assert tr["mel"].max() < 2 ** 31 and tr["power"].max() <= 2 ** 27


def test_streaming_window_equals_whole_window(tmp_path):
    """The device's sliding window after stride t equals the features of the whole last second."""
    pcm = signals()[:3 * F.SR]
    (tmp_path / "fe.bin").write_bytes(B.pack_frontend(P, 0))
    (tmp_path / "pcm.bin").write_bytes(pcm.astype("<i2").tobytes())
    run_micropython("""
import blob, audio
from array import array
b = open("fe.bin", "rb").read()
fe, _ = blob.parse_frontend(b, 0, len(b))
f = audio.Frontend(fe)
x = array("h", bytes(2 * f.hop))
with open("pcm.bin", "rb") as src, open("win.bin", "wb") as dst:
    while src.readinto(x) == 2 * f.hop:
        f.push(x)
        dst.write(f.window)
""", DEVICE, cwd=tmp_path)
    win = np.frombuffer((tmp_path / "win.bin").read_bytes(), np.int8).reshape(-1, F.N_MELS, F.FRAMES)
    for t in (F.FRAMES - 1, 50, len(win) - 1):   # whole 1 s clips ending at stride t
        clip = pcm[(t + 1) * F.HOP - F.SR:(t + 1) * F.HOP]
        whole = H.features(clip, P)
        if t >= F.FRAMES:   # frame 0 of a clip sees zeros where the stream had samples: skip it
            assert np.array_equal(win[t][:, 1:], whole[:, 1:])
        else:
            assert np.array_equal(win[t], whole)
    from ugate.listen import windows
    assert np.array_equal(windows(H.compute(H.frames(pcm, P).reshape(-1, F.N), P))[:, 0], win)


def test_blob_carries_the_front_end():
    bufs = [("input", 1, 4, 4, B.I8), ("act", 1, 4, 4, B.I8)]
    ops = [(B.COMPRESS, 0, 1, B.PH_COMPRESS, 0, 1, 0, 0, 0, b"\x01", b"", b"")]
    raw = B.pack(bufs, ops, F.SCALE, 0.5, 0.1, 0, P)
    m = B.parse(raw)
    fe = m["frontend"]
    assert m["version"] == B.VERSION and fe["n"] == F.N and fe["hop"] == F.HOP and fe["n_mels"] == F.N_MELS
    assert bytes(fe["window"]) == P["window"] and bytes(fe["weight"]) == P["weight"]
    assert B.parse(B.pack(bufs, ops, 0.5, 0.5, 0.1, 0))["frontend"] is None
    from ugate.export import model_hash
    assert model_hash(raw) == m["hash"]
    bad = bytearray(raw)
    at = 40 + 16 * 2 + 24                       # the section record, after the op table
    bad[at + 20:at + 24] = (len(raw) + 8).to_bytes(4, "little")   # window table past the end
    from test_blob import reseal
    with pytest.raises(ValueError, match="window table"):
        B.parse(reseal(bytes(bad)))


def test_tables():
    assert F.LOG2 == tuple(round(256 * math.log2(1 + i / 32)) for i in range(33))
    win, cos, sin, band, weight = H.tables(P)
    assert win.max() <= 32767 and win.min() >= 0 and abs(cos[0]) == 32767 and sin[F.N // 4] == 32767
    inside = band[P["k_lo"]:P["k_hi"]]
    assert (inside != F.NOBAND).all() and (np.diff(inside.astype(int)) >= 0).all()
    assert H.params(n_mels=40, fmax=7500)["k_hi"] > P["k_hi"]
    with pytest.raises(ValueError):
        H.params(n=500)


def test_float_twin_is_close():
    """The integers track a float64 log-mel of the same parameters (SNR on noise, bench/frontend.py
    measures it on speech)."""
    rng = np.random.default_rng(0)
    fr = H.frames(H.to_pcm(0.05 * rng.standard_normal(2 * F.SR)), P).reshape(-1, F.N)
    q, fl = H.compute(fr, P), np.clip(H.float_features(fr, P), -128, 127)
    assert 10 * np.log10(fl.var() / np.mean((q - fl) ** 2)) > 20


@pytest.mark.parametrize("kernels", ["viper", "portable"])
def test_mic_slots_to_int16(tmp_path, kernels):
    """audio.Mic's conversion of an INMP441's 32-bit I2S slots (24 bits left-justified) to int16:
    slot >> shift, clamped, on the device's kernels (the I2S peripheral itself needs a chip)."""
    rng = np.random.default_rng(0)
    slots = np.concatenate([rng.integers(-2 ** 23, 2 ** 23, F.HOP - 4) << 8, [2 ** 31 - 256, -2 ** 31, 256, -256]]).astype("<i4")
    (tmp_path / "slots.bin").write_bytes(slots.tobytes())
    (tmp_path / "fe.bin").write_bytes(B.pack_frontend(P, 0))
    run_micropython(f"""
import blob, audio
from array import array
b = open("fe.bin", "rb").read()
fe, _ = blob.parse_frontend(b, 0, len(b))
f = audio.Frontend(fe, {kernels!r})
raw = open("slots.bin", "rb").read()
x = array("h", bytes(2 * f.hop))
with open("out.bin", "wb") as o:
    for shift in (16, 14):
        f.p[11] = shift
        f.mic32(raw, x, raw, raw, raw, f.p)
        o.write(x)
""", DEVICE, cwd=tmp_path)
    out = np.frombuffer((tmp_path / "out.bin").read_bytes(), "<i2").reshape(2, -1)
    for row, shift in zip(out, (16, 14)):
        assert np.array_equal(row, np.clip(slots.astype(np.int64) >> shift, -32768, 32767))
