"""HIL across a localhost labgrid farm: every test sample of a run folder on N virtual boards (places
through labgrid-coordinator, an exporter and ser2net) against one board of the same farm, in one run.

    python bench/farm.py RUN_DIR [--boards 4] [--limit N]

Prints mismatches, wall time and samples/s for 1 and N places. On a shared 2-core host expect well
under N x: every board is a MicroPython process, and the host side checks every sample."""
import argparse
import time

from ugate.farm import acquired, hil_farm, local_farm

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--boards", type=int, default=4)
p.add_argument("--limit", type=int)
a = p.parse_args()
with local_farm(a.boards) as (address, names):
    rows = []
    for places in (names, names[:1]):
        t0 = time.perf_counter()
        rep = hil_farm(a.model, places, address, limit=a.limit, progress=False)
        r = rep["runs"][0]
        rows.append((len(places), r["samples"], r["mismatches"], r["seconds"], time.perf_counter() - t0))
        assert acquired(address) == []
for n, samples, mism, s, total in rows:
    print(f"{n} place(s): {samples} samples, {mism} mismatches, streaming {s:.1f} s ({samples / s:.0f} samples/s), "
          f"with deploy and start {total:.1f} s")
print(f"speed-up with {rows[0][0]} places: {rows[1][3] / rows[0][3]:.2f}x")
