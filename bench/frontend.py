"""The integer audio front end, measured: device == host reference on every frame (the keyword test
set's clips regenerated as PCM, and a long recording), viper and portable, in the real MicroPython
(the virtual board's interpreter); integer vs a float64 log-mel of the same parameters (SNR and
correlation); the S3's cost per stride from the cycle model of the viper kernels' xtensawin code.

  .venv/bin/python bench/frontend.py --wav runs/rec10.wav            # test set + the recording
  .venv/bin/python bench/frontend.py --clips 200 --kernels viper     # quicker
"""
import argparse
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ugate import cycles, data, frontend, keywords
from ugate.listen import read_pcm
from ugate.shared import blob as B
from ugate.shared import frontend as F

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = Path(sys.executable).parent / "micropython"
DEVICE = ["shared/frontend.py", "shared/blob.py", "device/runtime.py", "device/audio.py", "device/audio_kernels.py",
          "device/audio_portable.py"]
RUN = """
import blob, audio
b = open("fe.bin", "rb").read()
fe, _ = blob.parse_frontend(b, 0, len(b))
print(audio.features("pcm.bin", "out.bin", fe, KERNELS))
"""


def on_device(pcm, p, kernels):
    """(int8 columns, seconds) of the MicroPython front end over the PCM stream."""
    with tempfile.TemporaryDirectory() as tmp:
        for f in DEVICE:
            shutil.copy(ROOT / f, tmp)
        Path(tmp, "fe.bin").write_bytes(B.pack_frontend(p, 0))
        Path(tmp, "pcm.bin").write_bytes(pcm.astype("<i2").tobytes())
        Path(tmp, "main.py").write_text(RUN.replace("KERNELS", repr(kernels)))
        t0 = time.perf_counter()
        r = subprocess.run([str(MICROPYTHON), "-X", "heapsize=256K", "main.py"], cwd=tmp, capture_output=True, text=True)
        sec = time.perf_counter() - t0
        if r.returncode:
            sys.exit(f"micropython failed: {r.stdout[-500:]} {r.stderr[-500:]}")
        return np.frombuffer(Path(tmp, "out.bin").read_bytes(), np.int8).reshape(-1, p["n_mels"]), sec


def test_clips(n):
    """The keyword set's test split (data.load's split, seed 0), up to n clips, as int16 PCM (n, SR),
    and the cached log stage they must reproduce."""
    x, c, _ = keywords.load()
    rng = np.random.default_rng(0)
    _, te = data._split(c, 0.2, rng)
    te = np.sort(te)[:n] if n else np.sort(te)
    with multiprocessing.Pool(2) as pool:
        audio = list(tqdm(pool.imap(keywords.clip_audio, [(int(c[i]), keywords.GEN_SEED, int(i)) for i in te], chunksize=8),
                          total=len(te), desc="regenerating test clips", unit="clip"))
    return frontend.to_pcm(np.stack(audio)), x[te, 0]


def compare(name, pcm, p, kernel_sets):
    ref = frontend.compute(frontend.frames(pcm, p).reshape(-1, p["n"]), p)
    for k in kernel_sets:
        dev, sec = on_device(pcm, p, k)
        same = (dev == ref[:len(dev)]).all(1) if len(dev) == len(ref) else np.zeros(len(ref), bool)
        print(f"  {name:<28} {k:<9} {len(ref):>6} frames, device == host on {same.mean():8.3%} "
              f"({len(ref) - same.sum()} differ), {1e3 * sec / len(ref):.2f} ms a frame on this host")
    return ref


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=0, help="test clips to use (default: the whole test split)")
    ap.add_argument("--wav", help="a long recording too (ugate listen --generate 600 --wav ...)")
    ap.add_argument("--kernels", nargs="+", default=["viper", "portable"])
    args = ap.parse_args()
    p = keywords.fe()
    print(f"front end: {p['sr']} Hz, frame {p['n']} (FFT {p['n']}), stride {p['hop']} ({1e3 * p['hop'] / p['sr']:.2f} ms), "
          f"{p['n_mels']} mel channels {F.FMIN}-{F.FMAX} Hz, gain {p['gain']}/256 per octave, offset {p['offset'] / 256:g} octaves")
    pcm, cached = test_clips(args.clips)
    print(f"  regenerated test clips equal the cached training log stage: {np.array_equal(frontend.log_features(pcm, p), cached)}")
    stream = pcm.reshape(-1)   # the clips back to back: every frame of every clip through one stream
    ref = compare(f"keyword test set ({len(pcm)} clips)", stream, p, args.kernels)
    fr = frontend.frames(stream, p).reshape(-1, p["n"])
    fl = np.clip(frontend.float_features(fr, p), -128, 127)
    err = ref - fl
    live = fl > -120      # where the float feature is not at the floor
    print(f"  integer vs float64 log-mel, same parameters: SNR {10 * np.log10(fl.var() / np.mean(err ** 2)):.1f} dB "
          f"(all frames), {10 * np.log10(fl[live].var() / np.mean(err[live] ** 2)):.1f} dB (above the floor); "
          f"correlation {np.corrcoef(ref.ravel(), fl.ravel())[0, 1]:.4f}; mean |error| {np.abs(err).mean():.2f} "
          f"int8 steps ({np.abs(err).mean() * 256 / p['gain'] / 256 * 3.01:.2f} dB)")
    if args.wav:
        compare(Path(args.wav).name, read_pcm(args.wav), p, args.kernels)
    rows, n = cycles.frontend_cycles(p, stream[:10 * F.SR])
    per = sum(r["cycles_per_stride"] for r in rows)
    stride_us = 1e6 * p["hop"] / p["sr"]
    print(f"ESP32-S3 cycle model (ugate.cycles, {n} strides of test clips; rules: {', '.join(r[0] for r in cycles.RULES[:4])}):")
    for r in rows:
        print(f"  {r['fn']:<10} {r['cycles_per_stride']:>10.0f} cycles a stride")
    print(f"  front end  {per:>10.0f} cycles a stride = {cycles.s3_time_us(per):.0f} us at {cycles.MHZ} MHz of a "
          f"{stride_us:.0f} us stride ({cycles.s3_time_us(per) / stride_us:.1%}); not modelled: "
          f"{cycles.RULES[-1][2]}")


if __name__ == "__main__":
    main()
