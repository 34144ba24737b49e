"""The cut chosen by energy: train one gated model per cut point (and gate variant), export each to
int8, and put side by side what decides where to cut on an always-on board: negatives stopped at
the target recall, zeros, gated accuracy, stage-1 + gate MACs, blob bytes, the ESP32-S3's estimated
time (ugate.cycles: the viper kernels' own machine code) and energy a sample (the board's active
current from boards/), the energy per stopped negative (a sample's energy over the fraction of
negatives stopped: every negative pays stage 1 + gate, the unstopped ones wake the NPU on top),
and the bytes each positive sends.

`ugate split --dataset digits --out runs/split-digits` writes split.json, split.txt, split.png and one
run folder a row (split<S>-gate<G>)."""
import json
from pathlib import Path

import numpy as np

from ugate import UgateError

VOLTS = 3.3             # the board's supply: boards/*.toml give currents at 3.3 V
GATES = {"conv": 16, "noconv": 0}    # the gate with its own ConvBlock of 16 (the default), or without


def energy_uj(us, ma, volts=VOLTS):
    """µJ for `us` microseconds at `ma` milliamps: µs * mA * V / 1000."""
    return us * ma * volts / 1000


def bytes_per_positive(raw, ds, in_scale):
    """Mean sparse payload bytes (shared/sparse.py) of the test positives whose gate opens, in int8."""
    from ugate import export, reference
    from ugate.shared import sparse
    pos = ds.y_test > 0
    r = reference.run(raw, export.quantize_input(ds.x_test[pos], in_scale))
    if not r["open"].any():
        return float("nan")
    acts = r["act"][r["open"]].reshape(int(r["open"].sum()), -1)
    out = bytearray(sparse.size(acts.shape[1]))
    return float(np.mean([sparse.encode(a.tobytes(), len(a), out) for a in acts]))


def row(run_dir, ds, board, quiet=True):
    """One table row from a trained run folder: exports it, counts its cycles."""
    from ugate import cycles
    from ugate.export import export
    ex = export(run_dir, dataset=ds, quiet=quiet)
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    raw = (Path(run_dir) / "stage1.blob").read_bytes()
    from ugate import reference
    from ugate.export import quantize_input
    from ugate.power import COUNT_SAMPLES
    sample = quantize_input(ds.x_test[:COUNT_SAMPLES], reference.load(raw)[1]["in_scale"])
    est = [r for r in cycles.stage1_cycles(raw, inputs=sample) if r["phase"] < 2]     # stage 1 + gate, on the chip's path for this data
    us = cycles.s3_time_us(sum(r["cycles"] for r in est))
    q = ex["int8"]
    return {"run": str(run_dir), "split": m["split"], "gate": m["gate"], "baseline_accuracy": m["baseline_accuracy"],
            "gated_accuracy": q["gated_accuracy"], "negatives_stopped": q["negatives_stopped"],
            "gate_recall": q["gate_recall"], "positive_zeros": q["positive_zeros"], "macs": ex["stage1_macs"],
            "blob_bytes": ex["blob_bytes"], "s3_cycles": sum(r["cycles"] for r in est), "s3_us": us,
            "uj_per_sample": energy_uj(us, board.power["active_busy_ma"]),
            # every negative pays stage 1 + gate; only the stopped ones end there
            "uj_per_stopped_negative": energy_uj(us, board.power["active_busy_ma"]) / max(q["negatives_stopped"], 1e-9),
            "bytes_per_positive": bytes_per_positive(raw, ds, ex["in_scale"])}


def optimum(rows, max_drop):
    """Index of the least energy per stopped negative among rows whose gated accuracy is within
    `max_drop` of the best baseline accuracy (the accuracy target), or None."""
    target = max(r["baseline_accuracy"] for r in rows) - max_drop
    ok = [i for i, r in enumerate(rows) if r["gated_accuracy"] >= target]
    return min(ok, key=lambda i: rows[i]["uj_per_stopped_negative"]) if ok else None, target


def split(dataset, out_dir, splits=(1, 2), gates=("conv", "noconv"), epochs=None, limit=None, target_recall=0.99,
          max_drop=0.01, board="esp32s3-devkitc-1", seed=0, positive=None, quiet=False):
    """Train and measure every (cut, gate) pair; write split.json, split.txt, split.png in out_dir.
    Returns {rows, optimum (index or None), accuracy_target, board, ...}."""
    from ugate import data
    from ugate.boards import load_board
    from ugate.train import train
    b = load_board(board)
    if "active_busy_ma" not in b.power:
        raise UgateError(f"board {board}: no power.active_busy_ma to price the energy with")
    bad = [g for g in gates if g not in GATES]
    if bad:
        raise UgateError(f"gate variant {bad[0]!r}: one of {', '.join(GATES)}")
    from ugate.model import NetConfig
    n_blocks = len(NetConfig((1, 1, 1), 2).channels)
    bad = [s for s in splits if not 1 <= s < n_blocks]
    if bad:
        raise UgateError(f"--splits {bad[0]}: a cut goes after block 1 to {n_blocks - 1} of the {n_blocks} conv blocks")
    out = Path(out_dir)
    ds = data.load(str(dataset), positive=positive, seed=seed, limit=limit)
    rows = []
    for s in splits:
        for g in gates:
            run = out / f"split{s}-gate{g}"
            if not quiet:
                print(f"cut after block {s}, gate {g}: training -> {run}")
            m = train(dataset, run, epochs, target_recall, s, seed, positive, limit, quiet=quiet,
                      net_opts={"gate_conv": GATES[g]})
            m["gate"] = g
            (run / "metrics.json").write_text(json.dumps(m, indent=1) + "\n")
            rows.append(row(run, ds, b, quiet))
    best, target = optimum(rows, max_drop)
    res = {"dataset": ds.name, "board": b.name, "active_ma": b.power["active_busy_ma"], "volts": VOLTS,
           "target_recall": target_recall, "accuracy_target": target, "max_drop": max_drop, "epochs": epochs,
           "limit": limit, "optimum": best, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "split.txt").write_text(table(res) + "\n")
    plot(res, out / "split.png")
    return res


def table(res):
    pct = lambda v: f"{100 * v:6.2f}"
    lines = [f"{res['dataset']}: gated models by cut, int8 on the device, gate recall target {res['target_recall']:.2f}; "
             f"S3 time from the cycle model at 240 MHz, energy at {res['active_ma']} mA x {res['volts']} V "
             f"({res['board']} power.active_busy_ma)",
             f"{'cut':>3} {'gate':>6} {'stopped%':>8} {'recall%':>7} {'zeros%':>6} {'acc%':>6} {'MACs':>8} {'blob B':>6} "
             f"{'S3 µs':>7} {'µJ':>6} {'µJ/stop':>7} {'B/pos':>6}"]
    for i, r in enumerate(res["rows"]):
        mark = "  <- energy optimum" if i == res["optimum"] else ""
        lines.append(f"{r['split']:3d} {r['gate']:>6} {pct(r['negatives_stopped']):>8} {pct(r['gate_recall']):>7} "
                     f"{pct(r['positive_zeros']):>6} {pct(r['gated_accuracy']):>6} {r['macs']:8d} {r['blob_bytes']:6d} "
                     f"{r['s3_us']:7.0f} {r['uj_per_sample']:6.0f} {r['uj_per_stopped_negative']:7.0f} {r['bytes_per_positive']:6.1f}{mark}")
    lines.append(f"accuracy target: gated accuracy >= {100 * res['accuracy_target']:.2f}% (best baseline - "
                 f"{100 * res['max_drop']:.1f} points); " +
                 ("no row meets it" if res["optimum"] is None else
                  "optimum: the least µJ per stopped negative among the rows that meet it"))
    return "\n".join(lines)


def plot(res, path):
    from ugate.plots import _plt
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(res["rows"]):
        ax.scatter(r["uj_per_stopped_negative"], 100 * r["gated_accuracy"], s=20 + r["negatives_stopped"] * 80,
                   color="tab:red" if i == res["optimum"] else "tab:blue")
        ax.annotate(f"cut {r['split']}, gate {r['gate']}\n{100 * r['negatives_stopped']:.1f}% stopped",
                    (r["uj_per_stopped_negative"], 100 * r["gated_accuracy"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.margins(x=0.25, y=0.15)                      # room for the labels
    ax.axhline(100 * res["accuracy_target"], color="k", ls="--", lw=0.8, label="accuracy target")
    ax.set(xlabel="est. µJ per stopped negative on the ESP32-S3 (stage 1 + gate)", ylabel="gated accuracy (%)",
           title=f"{res['dataset']}: where to cut (red: energy optimum)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p):
    p.add_argument("--dataset", required=True, help="fashion-mnist, lfw-faces, digits, keywords, a folder or an .npz")
    p.add_argument("--out", help="folder for the table, plot and one run folder a row (default runs/split-DATASET)")
    p.add_argument("--splits", type=int, nargs="+", default=[1, 2], help="cut points: GC layer after this many blocks (default 1 2)")
    p.add_argument("--gates", nargs="+", default=list(GATES), help=f"gate variants (default {' '.join(GATES)})")
    p.add_argument("--epochs", type=int, help="epochs per phase (default: ugate train's)")
    p.add_argument("--limit", type=int, help="cap each data split at about N samples (quick runs)")
    p.add_argument("--target-recall", type=float, default=0.99)
    p.add_argument("--max-drop", type=float, default=0.01, help="accuracy target: best baseline minus this (default 0.01)")
    p.add_argument("--board", default="esp32s3-devkitc-1", help="board whose active current prices the energy")
    p.add_argument("--positive", nargs="+", help="positive class name(s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args):
    import torch
    torch.set_num_threads(min(2, torch.get_num_threads()))
    res = split(args.dataset, args.out or f"runs/split-{Path(args.dataset).name}", args.splits, args.gates, args.epochs,
                args.limit, args.target_recall, args.max_drop, args.board, args.seed, args.positive, args.quiet)
    print(table(res))
    print(f"wrote split.json, split.txt, split.png in {args.out or f'runs/split-{Path(args.dataset).name}'}")
