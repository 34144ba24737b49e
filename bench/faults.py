"""The link on a noisy line: `ugate run` (the host sends each input) and `ugate npu` (the board streams)
through a seeded fault-injecting bridge (ugate.faults: flipped, dropped and inserted bytes and stalls,
at the same byte error rate both ways) between the host and a virtual board. One row per rate and
mode: samples, positives lost (counted by the host), wrong decisions (any result that differs from
the host reference), retransmits (both ends), corrupt frames (both ends) and samples/s against the
clean line (the median of --repeat runs with successive seeds; the other columns are their sums).
A run that gives up prints its one line instead.

    .venv/bin/python bench/faults.py --model runs/digits [--limit 400] [--rates 0 1e-4 1e-3 1e-2] [--seed 1]
        [--repeat 3] [--npu-times 10]
"""
import argparse
import tempfile
import time

import numpy as np

from ugate import UgateError
from ugate.board import VirtualBoard
from ugate.deploy import deploy
from ugate.faults import Bridge


def run_mode(port, model, limit):
    from ugate.run import run
    r = run(model, port, limit=limit, progress=False, out="/dev/null")
    return {"samples": r["samples"], "lost": r["lost"], "wrong": r["mismatches"], "retransmits": r["retransmits"],
            "corrupt": r["corrupt_frames"], "per_s": r["samples_per_second"]}


def npu_mode(port, model, exp, stage2, times):
    """The test set `times` over as the board's sensor input (a stream long enough to time)."""
    from ugate.board import connect
    from ugate.npu import follow
    with connect(port) as t:
        t.fs_writefile("sensor.bin", np.tile(exp.xq, (times, 1, 1, 1)).tobytes())
    lines = []
    st, _, seconds = follow(port, model, emit=lines.append)
    n = len(exp)
    ref_open = np.flatnonzero(exp.ref["open"])
    ref_class = dict(zip(ref_open, stage2.predict(exp.ref["act"][ref_open]))) if len(ref_open) else {}
    wrong = sum(d["sample"] % n not in ref_class or d["gate_logit"] != exp.ref["logit"][d["sample"] % n]
                or ("class" in d and d["class"] != ref_class[d["sample"] % n]) for d in lines)
    if st["samples"] != n * times:
        raise UgateError(f"the board judged {st['samples']} samples, not {n * times}")
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
    ap.add_argument("--npu-times", type=int, default=10, help="npu rows stream the test set this many times over")
    ap.add_argument("--repeat", type=int, default=3, help="runs a row (other seeds); samples/s is their median")
    a = ap.parse_args()
    from ugate.npu import load_stage2
    from ugate.run import Experiment
    exp = Experiment(a.model, a.limit, progress=False)
    stage2 = load_stage2(f"{a.model}/stage2.npz")
    print(f"{a.model}: {len(exp)} test samples ({int(exp.ref['open'].sum())} positives by the reference), once a run "
          f"(run) or {a.npu_times} times over (npu), {a.repeat} runs a row with seeds from {a.seed}; the same byte error "
          f"rate both ways, flip/drop/insert/stall mixed evenly")
    print(f"{'mode':<5} {'rate':>7} {'samples':>8} {'lost':>5} {'wrong':>6} {'retx':>6} {'corrupt':>8} "
          f"{'faults':>7} {'samples/s':>10} {'vs clean':>9}")
    clean = {}
    with tempfile.TemporaryDirectory() as tmp, VirtualBoard(tmp) as vb:   # a board folder of our own
        deploy(vb.port, a.model, progress=False)
        for mode in a.modes:
            for rate in a.rates:
                rows, t0 = [], time.perf_counter()
                try:
                    for k in range(a.repeat):
                        with Bridge(vb.port, rate, rate, seed=a.seed + k) as br:
                            r = run_mode(br.port, a.model, a.limit) if mode == "run" else npu_mode(br.port, a.model, exp, stage2, a.npu_times)
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
