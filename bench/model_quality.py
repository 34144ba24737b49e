"""Model quality per bundled dataset: `ugate train` with the defaults, one row a dataset and seed.

    .venv/bin/python bench/model_quality.py [--datasets fashion-mnist keywords] [--seeds 0 1] [--epochs N]

Targets (fashion-mnist, keywords): negatives_stopped >= 0.96 at gate_recall >= 0.99 on test,
positive_zeros >= 0.97, gated_accuracy >= baseline_accuracy - 0.005. Run folders go to runs/bench/."""
import argparse
import sys
import tempfile

import torch

from ugate import data
from ugate.train import train

TARGETED = ("fashion-mnist", "keywords")
COLS = ("baseline_accuracy", "gated_accuracy", "negatives_stopped", "gate_recall", "positive_zeros", "threshold", "wall_s")


def targets_met(m):
    return (m["negatives_stopped"] >= 0.96 and m["gate_recall"] >= 0.99 and m["positive_zeros"] >= 0.97
            and m["gated_accuracy"] >= m["baseline_accuracy"] - 0.005)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(data.DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, help="epochs per phase (default: the trainer's)")
    p.add_argument("--out", default=None, help="parent of the run folders (default: a temporary folder)")
    args = p.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="ugate-bench-")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"{'dataset':<14}{'seed':>5}" + "".join(f"{c[:17]:>19}" for c in COLS) + "  targets")
    for name in args.datasets:
        for seed in args.seeds:
            m = train(name, f"{out}/{name}-{seed}", epochs=args.epochs, seed=seed, quiet=True)
            print(f"{name:<14}{seed:>5}" + "".join(f"{m[c]:>19.4f}" for c in COLS) + f"  {('met' if targets_met(m) else 'missed') if name in TARGETED else '-'}",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
