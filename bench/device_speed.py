"""Stage-1 time per sample on the MicroPython unix port, viper vs portable kernels, in the heap a
board has (-X heapsize=256K): the runtime's own ticks_us phase times, averaged.

  .venv/bin/python bench/device_speed.py                 # a random fashion-mnist-shaped model
  .venv/bin/python bench/device_speed.py --model runs/fm # DIR/stage1.blob
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ugate import export, reference
from ugate.model import Net, NetConfig

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = Path(sys.executable).parent / "micropython"

DEVICE_MAIN = """
import gc, sys
gc.collect()
base = gc.mem_alloc()
from runtime import Model
data = open("inputs.bin", "rb").read()
for k, n in (("viper", %d), ("portable", %d)):
    m = Model("stage1.blob", k)
    gc.collect()
    used = gc.mem_alloc() - base
    t = {"stage1": 0, "gate": 0, "compress": 0}
    for i in range(n):
        m.run(memoryview(data)[(i %% 8) * m.in_size:(i %% 8 + 1) * m.in_size])
        for p in t:
            t[p] += m.times[p]
    print(k, n, t["stage1"] / n, t["gate"] / n, t["compress"] / n, used, gc.mem_alloc() + gc.mem_free())
    del m
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="run folder with stage1.blob (default: random fashion-mnist-shaped model)")
    ap.add_argument("--samples", type=int, default=50, help="viper samples (portable runs a tenth)")
    args = ap.parse_args()
    raw = (Path(args.model) / "stage1.blob").read_bytes() if args.model else \
        random_blob(NetConfig(in_shape=(1, 28, 28), n_classes=2, channels=[8, 16, 32], split=2))
    _, model = reference.load(raw)
    c, h, w = model["bufs"][0][1:4]
    x = np.random.default_rng(0).integers(-128, 128, (8, c, h, w)).astype(np.int8)
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("device/kernels.py", "device/kernels_portable.py", "device/runtime.py", "shared/blob.py"):
            shutil.copy(ROOT / f, tmp)
        Path(tmp, "stage1.blob").write_bytes(raw)
        Path(tmp, "inputs.bin").write_bytes(x.tobytes())
        Path(tmp, "main.py").write_text(DEVICE_MAIN % (args.samples, max(1, args.samples // 10)))
        p = subprocess.run([str(MICROPYTHON), "-X", "heapsize=256K", "main.py"], cwd=tmp, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"micropython failed:\n{p.stdout}{p.stderr}")
    rows = {r.split()[0]: [float(v) for v in r.split()[1:]] for r in p.stdout.strip().split("\n")}
    macs = reference.macs(raw)
    print(f"model: {args.model or 'random fashion-mnist-shaped'}, input {c}x{h}x{w}, blob {len(raw)} bytes, "
          f"{macs} MACs a sample (stage 1 + gate)")
    for k, (n, s1, g, cp, used, heap) in rows.items():
        print(f"{k:9} stage1 {s1:10.0f} us  gate {g:7.0f} us  compress {cp:6.0f} us  "
              f"({macs / (s1 + g) :.1f} MAC/us, {int(n)} samples)  heap used {used / 1024:.1f} of {heap / 1024:.0f} KB")
    print(f"viper is {rows['portable'][1] / rows['viper'][1]:.1f}x faster than portable on stage 1 (target >= 10x)")


if __name__ == "__main__":
    main()
