"""Always-on audio, measured on a long labelled recording through the virtual board (ugate listen):
misses and false accepts per hour at the gate and after stage 2, latency, board == host reference on
every detection, dropped strides, per-stride cost on this host; then the ESP32-S3 per stride from the
cycle model (front end + stage 1 + gate from the kernels' xtensawin code) against the stride's length.
Several detection rules side by side on the host reference (the board's rule, same bits).

  .venv/bin/ugate listen --generate 600 --wav runs/rec10.wav --labels runs/rec10.csv
  .venv/bin/python bench/listen.py --model runs/kw --wav runs/rec10.wav --labels runs/rec10.csv
"""
import argparse
import json

import numpy as np

from ugate import cycles, listen, npu, reference
from ugate.shared import frontend as F


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--wav", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--kernels", default="viper", choices=("viper", "portable"))
    ap.add_argument("--refractory", type=int, default=32)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--need", type=int, default=1)
    ap.add_argument("--of", type=int, default=1)
    ap.add_argument("--realtime", action="store_true")
    args = ap.parse_args()
    raw, meta = reference.load(f"{args.model}/stage1.blob")
    fe = meta["frontend"]
    pcm = listen.read_pcm(args.wav)
    seconds = len(pcm) / F.SR
    events = listen.read_labels(args.labels, {"marvin"}) or listen.read_labels(args.labels)
    hop_s = fe["hop"] / fe["sr"]
    _, open_, act = listen.reference_stream(raw, fe, pcm)
    stage2 = npu.load_stage2(f"{args.model}/stage2.npz")
    cls = np.zeros(len(open_), np.int64)
    print(f"{args.wav}: {seconds:.0f} s, {len(events)} keywords; rules on the host reference (the board's bits; stage 2 "
          f"in tinygrad on the windows a wake sends):")
    for every, need, of, refr in ((1, 1, 1, 32), (1, 2, 2, 32), (1, 3, 4, 32), (2, 1, 1, 32), (2, 2, 2, 32), (2, 2, 3, 32)):
        sent, wakes = listen.detect(open_, every, need, of, refr)
        todo = [t for t in sent if not cls[t]]
        for i in range(0, len(todo), 256):
            cls[todo[i:i + 256]] = stage2(act[todo[i:i + 256]].reshape(len(todo[i:i + 256]), -1)).argmax(1) + 1
        det = listen.confirmed(wakes, {t: int(cls[t]) - 1 for t in sent}, refr)
        for what, strides in (("wakes", wakes), ("confirmed", det)):
            s = listen.score([(t + 1) * hop_s for t in strides], events, seconds)
            print(f"  every {every}, {need} of {of}, hold {refr:>2} {what:<9}: misses {s['misses']:>3}/{s['keywords']} "
                  f"({s['miss_rate']:6.2%}), false accepts {s['false_accepts']:>4} ({s['false_accepts_per_hour']:7.1f}/h), "
                  f"latency median {s['latency_s']['median'] if s['latency_s'] else float('nan'):.2f} s"
                  + (f", {len(sent)} windows sent" if what == "wakes" else ""))
    print(f"through the virtual board ({args.kernels}, every {args.every}, {args.need} of {args.of}, hold {args.refractory}"
          f"{', real-time pace' if args.realtime else ''}):")
    out = listen.run("virtual", args.model, args.wav, args.labels, args.realtime, args.kernels, args.every, args.need,
                     args.of, args.refractory)
    for k in ("gate", "confirmed"):
        s = out[k]
        print(f"  {k:<10} misses {s['misses']}/{s['keywords']} ({s['miss_rate']:.2%}), false accepts {s['false_accepts']} "
              f"({s['false_accepts_per_hour']:.1f}/h), latency from onset {json.dumps(s['latency_s'])}")
    print(f"  board == host reference on every window sent: {out['device_equals_host']} ({len(out['sent'])} board, "
          f"{out['host_sent']} host); strides {out['board_strides']}/{out['strides']}, dropped {out['dropped_strides']}, "
          f"late {out['late_strides']}, lost on the link {out['lost']}")
    u = out["per_stride_us"]
    print(f"  this host (virtual board): front end {u['frontend']:.0f} us a stride, stage 1 {u['stage1']:.0f} us + gate "
          f"{u['gate']:.0f} us a run ({out['runs']} runs), real-time factor {out['real_time_factor']:.4f}")
    fe_rows, n = cycles.frontend_cycles(fe, pcm[:20 * F.SR])
    s1 = cycles.stage1_cycles(args.model)
    c_fe = sum(r["cycles_per_stride"] for r in fe_rows)
    c_s1 = sum(r["cycles"] for r in s1 if r["phase"] == 0)
    c_gate = sum(r["cycles"] for r in s1 if r["phase"] == 1)
    stride_us = 1e6 * hop_s
    tot = cycles.s3_time_us(c_fe + (c_s1 + c_gate) / args.every)
    print(f"ESP32-S3 at {cycles.MHZ} MHz, cycle model (ugate.cycles; {cycles.RULES[-1][2]}):")
    print(f"  front end {c_fe:.0f} cycles = {cycles.s3_time_us(c_fe):.0f} us, stage 1 {c_s1} = {cycles.s3_time_us(c_s1):.0f} us, "
          f"gate {c_gate} = {cycles.s3_time_us(c_gate):.0f} us: {tot:.0f} us a stride of {stride_us:.0f} us "
          f"({tot / stride_us:.1%} busy): the S3 {'keeps up' if tot < stride_us else 'does NOT keep up'} with real time "
          f"running stage 1 and the gate every {args.every} stride(s)")


if __name__ == "__main__":
    main()
