"""A host that dies mid-stream: `ugate npu` streaming from a virtual board is killed with SIGKILL,
SIGTERM or SIGHUP (and SIGINT, Ctrl-C) at a random moment, then the next command (`ugate board info`,
which needs the raw REPL back, then the next `ugate npu`, which needs the device loop) must succeed
on its first try. Prints, per signal: kills, next commands that failed, and the seconds they took.

    .venv/bin/python bench/crash.py --model runs/digits [--times 20]
"""
import argparse
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UGATE = str(Path(sys.executable).with_name("ugate"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="an exported run folder")
    ap.add_argument("--times", type=int, default=20, help="kills per signal")
    ap.add_argument("--signals", nargs="+", default=["SIGKILL", "SIGTERM", "SIGHUP", "SIGINT"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import numpy as np
    from ugate.board import VirtualBoard, connect
    from ugate.deploy import deploy
    from ugate.run import Experiment
    rng = random.Random(a.seed)
    exp = Experiment(a.model, progress=False)
    with tempfile.TemporaryDirectory() as tmp, VirtualBoard(tmp) as vb:
        deploy(vb.port, a.model, progress=False)
        with connect(vb.port) as t:   # a long stream: the test set 20 times over
            t.fs_writefile("sensor.bin", np.tile(exp.xq, (20, 1, 1, 1)).tobytes())
        npu = [UGATE, "npu", "--port", vb.port, "--model", str(a.model), "--out", "/dev/null"]
        print(f"{a.model}: killing `ugate npu` streaming {20 * len(exp)} samples from a virtual board, "
              f"{a.times} times a signal; then `ugate board info` and the next `ugate npu` start, first try each")
        print(f"{'signal':<8} {'kills':>5} {'failed':>6} {'info s (median, max)':>21}")
        for name in a.signals:
            failed, took = [], []
            for i in range(a.times):
                p = subprocess.Popen(npu, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                line = p.stderr.readline().decode()
                if "streaming" not in line:   # the command before did not leave a usable board
                    p.wait()
                    failed.append(f"npu start: {line.strip() or p.stderr.read().decode().strip()}")
                    continue
                time.sleep(rng.uniform(0.05, 0.6))
                p.send_signal(getattr(signal, name))
                p.wait(timeout=60)
                t0 = time.perf_counter()
                q = subprocess.run([UGATE, "board", "info", "--port", vb.port], capture_output=True, text=True)
                took.append(time.perf_counter() - t0)
                if q.returncode:
                    failed.append(f"board info: {q.stderr.strip()}")
            print(f"{name:<8} {a.times:>5} {len(failed):>6} {statistics.median(took):>11.1f} {max(took):>8.1f}", flush=True)
            for f in failed[:3]:
                print(f"         {f}")


if __name__ == "__main__":
    main()
