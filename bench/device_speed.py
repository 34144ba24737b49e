"""Stage-1 time per sample on the MicroPython unix port (the virtual board), today's viper kernels vs
the baseline's viper kernels vs the portable ones, in one run, in the heap a board has
(-X heapsize=256K): per layer, each kernel call timed with ticks_us, the fastest of the samples (the
host is shared: the minimum is the least disturbed). With --chip esp32s3,
beside them the cycle model's estimate for the ESP32-S3 (ugate.cycles: the kernels' own xtensawin
machine code): MACs, instructions/MAC, cycles/MAC and µs at 240 MHz, per layer and in total.

  .venv/bin/python bench/device_speed.py                          # a random fashion-mnist-shaped model
  .venv/bin/python bench/device_speed.py --model runs/fm --chip esp32s3
  .venv/bin/python bench/device_speed.py --baseline none          # skip the baseline's kernels
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ugate import cycles, export, reference
from ugate.model import Net, NetConfig

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = Path(sys.executable).parent / "micropython"
BASELINE = "2ae684f"    # main before issue 10: the signed, bounds-checked viper kernels

DEVICE_MAIN = """
import gc, time
gc.collect()
base = gc.mem_alloc()
data = open("inputs.bin", "rb").read()
for k, mod, n in SETS:
    try:
        m = __import__(mod).Model("stage1.blob", k)
    except Exception as e:                  # a baseline older than one of the blob's ops
        print(mod + ":" + k, "skip", repr(e))
        continue
    gc.collect()
    used = gc.mem_alloc() - base
    plan = [c for ph in m._plan for c in ph]
    t = [1 << 30] * len(plan)
    for i in range(n):
        m.run(memoryview(data)[(i % 8) * m.in_size:(i % 8 + 1) * m.in_size])   # fills every buffer
        for j in range(len(plan)):
            f, x, y, w, b, s, p = plan[j]
            t0 = time.ticks_us()
            f(x, y, w, b, s, p)
            t[j] = min(t[j], time.ticks_diff(time.ticks_us(), t0))
    print(mod + ":" + k, n, used, gc.mem_alloc() + gc.mem_free(), " ".join(str(v) for v in t))
    del m, plan
    gc.collect()
"""


def random_blob(cfg, seed=0):
    """A gated Net with random weights and BatchNorm statistics, exported to int8."""
    torch.manual_seed(seed)
    net = Net(cfg, gated=True).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2)
    x = torch.rand(64, *cfg.in_shape)
    with torch.no_grad():
        threshold = float(net(x)[1].median())
    return export.build(net, export.calibrate(net, x.numpy()), threshold)


def test_samples(run_dir, n=8):
    """The first n test samples of a run folder's dataset, quantized as the chip gets them (int8), or
    None when the run has no model.pt to say which data."""
    pt = Path(run_dir) / "model.pt"
    if not pt.is_file():
        return None
    from ugate import data
    ck = torch.load(pt, map_location="cpu", weights_only=False)
    x = data.load(**ck["data"]).x_test[:n]
    _, model = reference.load(Path(run_dir) / "stage1.blob")
    return export.quantize_input(x, model["in_scale"])


def baseline_files(rev, dst):
    """kernels.py and runtime.py of git revision `rev` into dst (renamed *_base), or None."""
    out = {}
    for f in ("kernels", "runtime"):
        p = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:device/{f}.py"], capture_output=True, text=True)
        if p.returncode:
            return None
        out[f] = p.stdout
    Path(dst).mkdir(parents=True, exist_ok=True)
    Path(dst, "kernels.py").write_text(out["kernels"])
    Path(dst, "runtime.py").write_text(out["runtime"])
    return Path(dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="run folder with stage1.blob (default: random fashion-mnist-shaped model)")
    ap.add_argument("--samples", type=int, default=20, help="viper samples (portable runs a tenth)")
    ap.add_argument("--chip", choices=("esp32s3",), help="add the cycle model's ESP32-S3 estimate per layer")
    ap.add_argument("--baseline", default=BASELINE, help=f"git revision of the kernels to compare with (default {BASELINE}; none: skip)")
    args = ap.parse_args()
    raw = (Path(args.model) / "stage1.blob").read_bytes() if args.model else \
        random_blob(NetConfig(in_shape=(1, 28, 28), n_classes=2, channels=[8, 16, 32], split=2))
    _, model = reference.load(raw)
    c, h, w = model["bufs"][0][1:4]
    real = test_samples(args.model) if args.model else None
    x = real if real is not None else np.random.default_rng(0).integers(-128, 128, (8, c, h, w)).astype(np.int8)
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("device/kernels.py", "device/kernels_portable.py", "device/runtime.py", "shared/blob.py"):
            shutil.copy(ROOT / f, tmp)
        base = baseline_files(args.baseline, Path(tmp) / "base") if args.baseline != "none" else None
        sets = [("viper", "runtime", args.samples)]
        if base:
            (Path(tmp) / "kernels_base.py").write_text((base / "kernels.py").read_text())
            (Path(tmp) / "runtime_base.py").write_text((base / "runtime.py").read_text()
                                                       .replace("from kernels import", "from kernels_base import"))
            sets.append(("viper", "runtime_base", args.samples))
        elif args.baseline != "none":
            print(f"baseline {args.baseline}: not found in git, skipped")
        sets.append(("portable", "runtime", max(1, args.samples // 10)))
        Path(tmp, "stage1.blob").write_bytes(raw)
        Path(tmp, "inputs.bin").write_bytes(x.tobytes())
        Path(tmp, "main.py").write_text(f"SETS = {sets!r}\n" + DEVICE_MAIN)
        p = subprocess.run([str(MICROPYTHON), "-X", "heapsize=256K", "main.py"], cwd=tmp, capture_output=True, text=True)
        if p.returncode:
            sys.exit(f"micropython failed:\n{p.stdout}{p.stderr}")
        est = {}
        if args.chip:
            est["viper"] = cycles.stage1_cycles(raw, inputs=real)
            if base and "runtime_base:viper skip" not in p.stdout:
                est["base"] = cycles.stage1_cycles(raw, base / "kernels.py", inputs=real)
            if real is not None:                    # the signed pseudo-random input the model counted before
                signed = cycles.stage1_cycles(raw)
    meas = {}
    for line in p.stdout.strip().split("\n"):
        name, n, *rest = line.split()
        if n == "skip":
            print(f"{name} skipped: it cannot run this blob ({' '.join(rest)})")
            continue
        used, heap, *t = rest
        meas[name] = ([float(v) for v in t], int(n), int(used), int(heap))
    names = [model["bufs"][op[2]][0] for op in model["ops"]]
    macs = reference.macs(raw)
    print(f"model: {args.model or 'random fashion-mnist-shaped'}, input {c}x{h}x{w}, blob {len(raw)} bytes, "
          f"{macs} MACs a sample (stage 1 + gate)")
    cols = [("runtime:viper", "viper"), ("runtime_base:viper", "base"), ("runtime:portable", "portable")]
    cols = [(k, lbl) for k, lbl in cols if k in meas]
    print("measured on the virtual board (µs a sample, fastest of the samples; unix port on this host, not the chip):")
    print(f"  {'layer':8}" + "".join(f"{lbl:>12}" for _, lbl in cols))
    for j, nm in enumerate(names):
        print(f"  {nm:8}" + "".join(f"{meas[k][0][j]:12.1f}" for k, _ in cols))
    s1g = [j for j, op in enumerate(model["ops"]) if op[3] < 2]        # stage 1 + gate (not compress)
    tot = {lbl: sum(meas[k][0][j] for j in s1g) for k, lbl in cols}
    print(f"  {'s1+gate':8}" + "".join(f"{tot[lbl]:12.1f}" for _, lbl in cols))
    for k, lbl in cols:
        print(f"  {lbl}: heap used {meas[k][2] / 1024:.1f} of {meas[k][3] / 1024:.0f} KB, {meas[k][1]} samples")
    if "base" in tot:
        print(f"viper {tot['base'] / tot['viper']:.2f}x faster than the baseline's viper ({args.baseline}) on the virtual board")
    print(f"viper {tot['portable'] / tot['viper']:.1f}x faster than portable on the virtual board")
    src = f"the model's first {len(x)} test samples" if real is not None else "a pseudo-random signed input"
    print(f"input: {src}, min {int(x.min())}, max {int(x.max())}")
    for key, rows in est.items():
        lbl = "today's viper" if key == "viper" else f"baseline viper ({args.baseline})"
        print(f"\nESP32-S3 estimate, {lbl} (cycle model from the xtensawin code, {cycles.MHZ} MHz, counted on {src}):")
        print(f"  {'layer':8} {'op':9} {'MACs':>8} {'instr':>10} {'instr/MAC':>10} {'cyc/MAC':>8} {'est µs':>9} {'meas µs':>9}")
        mk = "runtime:viper" if key == "viper" else "runtime_base:viper"
        for j, r in enumerate(rows):
            per = lambda v: f"{v:10.1f}" if v is not None else f"{'':10}"
            print(f"  {r['name']:8} {r['op']:9} {r['macs']:8d} {r['instructions']:10d} {per(r['instructions_per_mac'])} "
                  f"{per(r['cycles_per_mac'])[2:]} {cycles.s3_time_us(r['cycles']):9.0f} {meas[mk][0][j]:9.1f}")
        print("  per layer: instructions/cycles outside loops a call; innermost loop: instructions/cycles a pass x passes")
        for r in rows:
            inner = max(r["loops"][::-1], key=lambda l: l[2])                 # the most-run loop, the deepest of ties
            print(f"    {r['name']:8} {r['fn']:11} call {r['per_call'][0]}/{r['per_call'][1]}, "
                  f"inner {inner[0]}/{inner[1]} x {inner[2]:g}" + (f", conv path: {r['path']}" if r.get("path") else ""))
        if key == "viper" and real is not None:
            print("  the same kernels counted on a pseudo-random signed input (every conv's first layer signed):")
            for r, q in zip(rows, signed):
                if r["op"] == "conv":
                    print(f"    {r['name']:8} {q['cycles_per_mac']:.2f} cyc/MAC ({q['path']} path) vs {r['cycles_per_mac']:.2f} "
                          f"on real data ({r['path']} path)")
        sel = [r for r in rows if r["phase"] < 2]
        m_, i_, c_ = sum(r["macs"] for r in sel), sum(r["instructions"] for r in sel), sum(r["cycles"] for r in sel)
        print(f"  {'s1+gate':8} {'':9} {m_:8d} {i_:10d} {i_ / m_:10.1f} {c_ / m_:8.1f} {cycles.s3_time_us(c_):9.0f} "
              f"{sum(meas[mk][0][j] for j in s1g):9.1f}")
        est[key] = c_
    if "base" in est:
        print(f"\nESP32-S3 estimate: stage 1 + gate {est['base'] / est['viper']:.2f}x fewer cycles than the baseline "
              f"(target >= 3x)")
    if est:
        print("cycle rules:\n" + "\n".join(f"  {n} (+{c}): {why}" if c else f"  {n}: {why}" for n, c, why in cycles.RULES))
        und = {n: len(f.undecoded) for n, f in cycles.viper_code(ROOT / "device" / "kernels.py").items()}
        print(f"instructions objdump could not decode (excluding the windowed ENTRY/CALLX8/RETW.N decoded by "
              f"ugate.cycles): {sum(und.values())}")


if __name__ == "__main__":
    main()
