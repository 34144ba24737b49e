"""Device code as .py vs .mpy on a board (a virtual one unless --port): heap free after importing every
device module, and the import time, each in a fresh interpreter (soft reset), median of --repeat.

    python bench/mpy.py [--port PORT] [--repeat 5]"""
import argparse
import statistics
import tempfile

from ugate.board import VirtualBoard, connect
from ugate.deploy import deploy, device_files

MODULES = sorted({p.stem for p in device_files()} - {"__init__"})
CODE = ("import gc, time\ngc.collect()\nf0 = gc.mem_free()\nt0 = time.ticks_us()\n" + "".join(f"import {m}\n" for m in MODULES) +
        "dt = time.ticks_diff(time.ticks_us(), t0)\ngc.collect()\nprint(f0, gc.mem_free(), dt)")

p = argparse.ArgumentParser()
p.add_argument("--port", default="virtual")
p.add_argument("--repeat", type=int, default=5)
a = p.parse_args()


def measure(port):
    rows = {}
    for fmt in ("py", "mpy"):
        deploy(port, progress=False, mpy=fmt == "mpy")
        runs = []
        for _ in range(a.repeat):
            with connect(port) as t:   # soft reset: a fresh heap
                runs.append([int(v) for v in t.exec(CODE).split()])
        f0, f1, dt = (statistics.median(r[k] for r in runs) for k in range(3))
        rows[fmt] = (f0, f1, dt)
        print(f"{fmt:>4}: heap free {f1:.0f} B after importing {len(MODULES)} modules "
              f"(import took {f0 - f1:.0f} B of {f0:.0f}), import time {dt / 1000:.1f} ms")
    d = rows["py"][1], rows["mpy"][1]
    print(f".mpy leaves {d[1] - d[0]:.0f} B more heap free, imports {rows['py'][2] / rows['mpy'][2]:.1f}x faster")


if a.port == "virtual":
    with VirtualBoard(tempfile.mkdtemp(prefix="ugate-mpy-")) as vb:
        measure(vb.port)
else:
    measure(a.port)
