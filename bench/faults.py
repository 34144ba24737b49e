"""The link on a noisy line: `ugate run` (the host sends each input) and `ugate npu` (the board streams)
through a seeded fault-injecting bridge (ugate.faults: flipped, dropped and inserted bytes and stalls,
at the same byte error rate both ways) between the host and a virtual board. One row per rate and
mode: samples, positives lost (counted by the host), wrong decisions (any result that differs from
the host reference), retransmits (both ends), corrupt frames (both ends) and samples/s against the
clean line (the median of --repeat runs with successive seeds; the other columns are their sums).
A run that gives up prints its one line instead.

    .venv/bin/python bench/faults.py --model runs/digits [--limit 400] [--rates 0 1e-4 1e-3 1e-2] [--seed 1]
"""
import argparse
import tempfile
import time

import numpy as np

from ugate import UgateError
from ugate.board import VirtualBoard
from ugate.faults import Bridge


def run_mode(port, model, limit):
    from ugate.run import run
    r = run(model, port, limit=limit, progress=False, out="/dev/null")
    return {"samples": r["samples"], "lost": r["lost"], "wrong": r["mismatches"], "retransmits": r["retransmits"],
            "corrupt": r["corrupt_frames"], "per_s": r["samples_per_second"]}


def npu_mode(port, model, limit, exp, stage2):
    from ugate.npu import follow
    lines = []
    st, _, seconds = follow(port, model, limit, emit=lines.append)
    ref_open = np.flatnonzero(exp.ref["open"])
    ref_class = dict(zip(ref_open, stage2.predict(exp.ref["act"][ref_open]))) if len(ref_open) else {}
    wrong = sum(d["sample"] not in ref_class or d["gate_logit"] != exp.ref["logit"][d["sample"]]
                or ("class" in d and d["class"] != ref_class[d["sample"]]) for d in lines)
    return {"samples": st["samples"], "lost": st["lost"], "wrong": wrong,
            "retransmits": st["host"]["retransmits"] + st["device"]["retransmits"],
            "corrupt": st["host"]["corrupt"] + st["device"]["corrupt"], "per_s": st["samples"] / seconds}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="an exported run folder")
    ap.add_argument("--limit", type=int, default=400, help="test samples a row")
    ap.add_argument("--rates", type=float, nargs="+", default=[0, 1e-4, 1e-3, 1e-2])
    ap.add_argument("--modes", nargs="+", default=["run", "npu"], choices=["run", "npu"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs a row (other seeds); samples/s is their median")
    a = ap.parse_args()
    from ugate.npu import load_stage2
    from ugate.run import Experiment
    exp = Experiment(a.model, a.limit, progress=False)
    stage2 = load_stage2(f"{a.model}/stage2.npz")
    print(f"{a.model}: {len(exp)} samples a row, {int(exp.ref['open'].sum())} positives by the reference; "
          f"byte error rate both ways, seed {a.seed}; flip/drop/insert/stall mixed evenly")
    print(f"{'mode':<5} {'rate':>7} {'samples':>8} {'lost':>5} {'wrong':>6} {'retx':>6} {'corrupt':>8} "
          f"{'faults':>7} {'samples/s':>10} {'vs clean':>9}")
    clean = {}
    with tempfile.TemporaryDirectory() as tmp, VirtualBoard(tmp) as vb:   # a board folder of our own
        for mode in a.modes:
            for rate in a.rates:
                rows, t0 = [], time.perf_counter()
                try:
                    for k in range(a.repeat):
                        with Bridge(vb.port, rate, rate, seed=a.seed + k) as br:
                            r = run_mode(br.port, a.model, a.limit) if mode == "run" else npu_mode(br.port, a.model, a.limit, exp, stage2)
                        rows.append(r | {"faults": sum(sum(v.values()) for v in br.faults.values())})
                except UgateError as e:
                    print(f"{mode:<5} {rate:>7g} stopped after {time.perf_counter() - t0:.0f} s (run {k + 1}): {e}")
                    continue
                total = {key: sum(r[key] for r in rows) for key in ("samples", "lost", "wrong", "retransmits", "corrupt", "faults")}
                per_s = float(np.median([r["per_s"] for r in rows]))
                clean.setdefault(mode, per_s)
                print(f"{mode:<5} {rate:>7g} {total['samples']:>8} {total['lost']:>5} {total['wrong']:>6} {total['retransmits']:>6} "
                      f"{total['corrupt']:>8} {total['faults']:>7} {per_s:>10.1f} {per_s / clean[mode]:>9.1%}", flush=True)


if __name__ == "__main__":
    main()
