"""The main job on bundled data: train the baseline and the gated model, export stage 1 to int8,
stream the test set through a virtual board (real MicroPython behind a pty) and the tinygrad NPU
stand-in, and print one report of all three."""
import json
from pathlib import Path


def add_arguments(parser):
    parser.add_argument("--dataset", default="fashion-mnist", help="dataset name or path (default fashion-mnist)")
    parser.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    parser.add_argument("--port", default="virtual", help="board to stream through (default: a virtual board)")
    parser.add_argument("--limit", type=int, help="stream only this many test samples")
    parser.add_argument("--retrain", action="store_true", help="train again even if the run folder has a model")


def main(args):
    from ugate.export import export
    from ugate.run import run, summary
    from ugate.train import train
    out = Path(args.out)
    if args.retrain or not (out / "model.pt").is_file():
        print(f"== 1/3 train on {args.dataset} -> {out}")
        train(args.dataset, out)
    else:
        print(f"== 1/3 reusing the model in {out} (--retrain to train again)")
    print("== 2/3 export stage 1 + gate to int8")
    export(out)
    print(f"== 3/3 stream the test set through the {'virtual board' if args.port == 'virtual' else args.port} and the NPU stand-in")
    r = run(out, args.port, limit=args.limit)
    m = json.loads((out / "metrics.json").read_text())
    e = json.loads((out / "export.json").read_text())
    print(f"\nugate demo: {m['dataset']}, GC layer after block {m['split']}")
    print(f"  {'':<34} {'float':>9} {'int8 (host)':>12}")
    for k in ("gated_accuracy", "negatives_stopped", "gate_recall", "positive_zeros"):
        print(f"  {k:<34} {e['float'][k]:>9.2%} {e['int8'][k]:>12.2%}")
    print(f"  {'baseline accuracy (no gate)':<34} {m['baseline_accuracy']:>9.2%}")
    print(f"\n  through the board and the wire:")
    print(summary(r))
    print(f"\n  plots: {out / 'gate_hist.png'}, {out / 'stop_vs_recall.png'}; reports: metrics.json, export.json, run.json")
    from ugate import power   # the estimate only (no meter): datasheet + chip model, cheap
    from ugate.boards import load_board
    print("  " + power.headline(power.estimate(out, load_board("esp32s3-devkitc-1-uart"), rate=1.0)))
    return 0 if r["mismatches"] == 0 and r["lost"] == 0 else 1
