"""Stage-2 throughput: tinygrad (TinyJit, kernels replayed by ugate.npu) beside torch, same weights.

    .venv/bin/python bench/npu.py                    # fashion-mnist-shaped net, random weights
    .venv/bin/python bench/npu.py --model runs/fm    # runs/fm/stage2.npz
    .venv/bin/python bench/npu.py --beam 2           # BEAM-searched kernels (minutes the first time, cached)

Each call includes the numpy int8 input and the numpy logits out, as the NPU stand-in uses it. The
"plain TinyJit" row is tinygrad's own call path (Tensor in, .numpy() out), to show its overhead.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tinygrad import Tensor, TinyJit
from tinygrad.helpers import Context

from ugate import UgateError
from ugate.model import Net, NetConfig
from ugate.npu import load_stage2, save_stage2, torch_stage2


def activations(n, shape, seed):
    """int8 activations as after the GC layer: non-negative, ~95% exact zeros."""
    rng = np.random.default_rng(seed)
    return (rng.integers(1, 128, (n, *shape)) * (rng.random((n, *shape)) < 0.05)).astype(np.int8)


def per_call(f, act, calls):
    """Median seconds a call, over `calls` calls, after a warm-up."""
    for _ in range(max(3, calls // 10)): f(act)
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        f(act)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="run folder with stage2.npz (default: a random fashion-mnist-shaped net)")
    p.add_argument("--beam", type=int, default=0, help="tinygrad BEAM width for the kernels (0: hand-coded optimizations)")
    p.add_argument("--calls", type=int, default=300, help="timed calls at batch 1 (batch 32: a tenth)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads; 1 (default) like tinygrad's CPU kernels, 0: torch's own choice")
    args = p.parse_args()
    if args.torch_threads: torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model / "stage2.npz" if args.model else Path(tmp) / "stage2.npz"
        if not args.model:
            torch.manual_seed(0)
            save_stage2(Net(NetConfig(in_shape=(1, 28, 28), n_classes=2)).eval(), 0.05, path)
        t = time.perf_counter()
        tg = load_stage2(path, beam=args.beam)
        th = torch_stage2(path)
        tg(activations(33, tg.act_shape, seed=0))   # compiles batch 32 and 1
        print(f"stage 2 of {path}: activations {tg.act_shape}, {tg.n_classes} classes; load + compile {time.perf_counter() - t:.1f} s, "
              f"BEAM={args.beam}, torch {torch.__version__} with {torch.get_num_threads()} threads")

    print(f"{'':30} {'batch':>5} {'ms/call':>8} {'samples/s':>10}")
    for n in (1, 32):
        act = activations(n, tg.act_shape, seed=n)
        assert (tg.predict(act) == th(act).argmax(1)).all()
        plain = TinyJit(tg.forward)   # one jit a batch size, as in ugate.npu; same kernels
        with Context(BEAM=args.beam):
            for _ in range(2): plain(Tensor(act))
        rows = {"tinygrad (ugate.npu)": tg, "torch": th, "tinygrad, plain TinyJit call": lambda a: plain(Tensor(a)).numpy()}
        ms = {}
        for name, f in rows.items():
            ms[name] = per_call(f, act, args.calls if n == 1 else args.calls // 10) * 1e3
            print(f"{name:30} {n:5} {ms[name]:8.3f} {n / ms[name] * 1e3:10.0f}")
        print(f"{'torch / tinygrad time':30} {n:5} {ms['torch'] / ms['tinygrad (ugate.npu)']:8.2f}x")


if __name__ == "__main__":
    try:
        main()
    except UgateError as e:
        sys.exit(f"bench/npu.py: error: {e}")
