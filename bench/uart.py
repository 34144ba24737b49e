"""A run folder through a virtual board paced like a UART, at each baud: samples/s, the wire's share of
the time, and per positive the sparse ACTIVATIONS frame against the same frame dense (int8).

    python bench/uart.py RUN_DIR [--limit 300] [--bauds 115200 921600]

In serve mode (ugate run) the host sends every input (a VECTOR frame), so the input dominates the line;
the positives' activations are what a board reading its own sensor (ugate npu, main.stream) sends."""
import argparse

from ugate.run import run

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--limit", type=int, default=300)
p.add_argument("--bauds", type=int, nargs="+", default=[115200, 921600])
a = p.parse_args()
for baud in a.bauds:
    r = run(a.model, "virtual", limit=a.limit, progress=False, baud=baud, out="/dev/null")
    sp, dn = r["wire_ms_per_positive"], r["dense_wire_ms_per_positive"]
    per_1000 = (dn - sp) * r["positives_sent"] / r["samples"]   # ms saved per sample, x1000 samples = s
    print(f"{baud:>7} baud: {r['samples']} samples, {r['mismatches']} mismatches, {r['samples_per_second']:.1f} samples/s, "
          f"wire {r['wire_share']:.0%} of the time; per positive {sp:.2f} ms sparse vs {dn:.2f} ms dense "
          f"({dn / sp:.1f}x, {dn - sp:.2f} ms saved), {per_1000:.2f} s saved per 1000 samples "
          f"({r['positives_sent']} of {r['samples']} sent)")
