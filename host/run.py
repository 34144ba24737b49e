"""End to end: the test set streams through a board (stage 1 + gate in int8 on the device), the
positives' compressed activations cross the wire, stage 2 runs on the NPU stand-in (tinygrad), and
every device result is checked against the host integer reference. Writes DIR/run.json."""
import contextlib
import json
import time
from pathlib import Path

import numpy as np

from ugate import UgateError

PHASES = ("stage1", "gate", "encode", "transmit")


class Experiment:
    """A run folder's exported model with its test data, and what the host reference says of it.
    The expected side of every device comparison (run and hil)."""

    def __init__(self, model_dir, limit=None, seed=0, progress=True):
        from ugate import data, model, reference
        from ugate.export import export, quantize_input
        self.dir = Path(model_dir)
        if not (self.dir / "model.pt").is_file():
            raise UgateError(f"no {self.dir / 'model.pt'}: train first (ugate train --dataset NAME --out {self.dir})")
        if not (self.dir / "stage1.blob").is_file() or not (self.dir / "stage2.npz").is_file():
            export(self.dir, quiet=not progress)
        from ugate.export import check_run_folder
        check_run_folder(self.dir)   # a stale or foreign part is one line, before any work
        _, ck = model.load(self.dir / "model.pt")
        ds = data.load(**ck["data"])
        x, self.y = ds.x_test, ds.y_test
        if limit and limit < len(x):   # a seeded subset, every class kept in proportion
            idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:limit])
            x, self.y = x[idx], self.y[idx]
        self.blob, self.meta = reference.load(self.dir / "stage1.blob")
        self.xq = quantize_input(x, self.meta["in_scale"])
        self.ref = reference.run(self.blob, self.xq, progress=progress)
        self.dataset = ck["data"]
        self.class_names = ds.class_names

    def __len__(self):
        return len(self.xq)

    def agrees(self, i, result, act):
        """Whether a board's RESULT for sample i (and its activations, when its gate opened) equal
        the reference's, bit for bit."""
        ref = self.ref
        return (result["logit"] == ref["logit"][i] and bool(result["decision"]) == ref["open"][i]
                and (not result["decision"] or bytes(act) == ref["act"][i].tobytes()))


@contextlib.contextmanager
def board_port(port, board_dir=None, baud=None):
    """`port` itself, or a virtual board's pty for the block when port is "virtual" (paced to baud if given)."""
    if port != "virtual":
        yield port
        return
    from ugate.board import VirtualBoard
    with VirtualBoard(dir=board_dir, baud=baud) as vb:
        yield vb.port


def check_port_first(port):
    """A missing or busy port is found before minutes of reference work, not after."""
    if port != "virtual":
        from ugate.board import check_port
        check_port(port)


def run(model_dir, port="virtual", kernels="viper", limit=None, progress=True, out=None, baud=None):
    """Stream the test set through device and NPU stand-in; return (and write) the run report. baud: the
    line rate (a virtual board is paced to it), for the wire's share of the time."""
    from tqdm import tqdm
    from ugate.deploy import deploy
    from ugate.npu import load_stage2
    from ugate.session import session
    from ugate.shared import wire

    check_port_first(port)
    exp = Experiment(model_dir, limit, progress=progress)
    stage2 = load_stage2(exp.dir / "stage2.npz")
    ref = exp.ref
    ref_pred = np.zeros(len(exp), np.int64)
    if ref["open"].any():
        ref_pred[ref["open"]] = stage2.predict(ref["act"][ref["open"]])

    pred = np.zeros(len(exp), np.int64)
    opened = np.zeros(len(exp), bool)
    times = {p: [] for p in PHASES}
    npu_s, mismatches, lost, in_a_row, first_mismatch = [], 0, 0, 0, None
    stage2.predict(np.zeros((1, ref["act"][0].size), np.int8))   # compile the batch-1 JIT before timing
    with board_port(port, baud=baud) as p:
        deploy(p, exp.dir, progress=progress)
        with session(p, kernels, blob_hash=exp.meta["hash"]) as (link, info):
            t_start = time.perf_counter()
            bar = tqdm(range(len(exp)), desc="stream", unit="sample", disable=not progress)
            for i in bar:
                try:
                    r, act = link.infer(exp.xq[i].tobytes())
                    in_a_row = 0
                except UgateError:   # one sample lost after every retry; three in a row: the board is gone
                    lost, in_a_row = lost + 1, in_a_row + 1
                    if in_a_row == 3:
                        raise
                    continue
                opened[i] = r["decision"]
                for ph in PHASES[:2]:
                    times[ph].append(r["t_" + ph])
                if opened[i]:
                    t0 = time.perf_counter()
                    pred[i] = stage2.predict(np.frombuffer(bytes(act), np.int8)[None])[0]
                    npu_s.append(time.perf_counter() - t0)
                    for ph in PHASES[2:]:
                        times[ph].append(r["t_" + ph])
                if not exp.agrees(i, r, act):
                    mismatches += 1
                    first_mismatch = first_mismatch or i
                if i % 50 == 0:   # negatives stopped so far, and mismatches: what a watcher wants to see
                    seen = exp.y[:i + 1] == 0
                    bar.set_postfix(stopped=f"{(~opened[:i + 1][seen]).mean():.1%}" if seen.any() else "-", mismatches=mismatches)
            elapsed = time.perf_counter() - t_start
            dev = link.device_stats()
            host = dict(link.stats)
            wire_bytes = dict(link.dec.wire_bytes)

    y, n = exp.y, len(exp)
    neg, pos = y == 0, y > 0
    sent = int(opened.sum())
    act_bytes = wire_bytes.get(wire.ACTIVATIONS, 0)
    in_size, act_size = int(exp.xq[0].size), int(ref["act"][0].size)
    report = {
        "model": str(exp.dir), "dataset": exp.dataset, "port": port, "kernels": kernels,
        "board": info["board"], "firmware": info["version"],
        "samples": n,
        "negatives_stopped": float((~opened[neg]).mean()) if neg.any() else None,
        "gate_recall": float(opened[pos].mean()) if pos.any() else None,
        "positives_sent": sent,
        "accuracy": float((pred == y).mean()),
        "reference_accuracy": float((ref_pred == y).mean()),
        "mismatches": mismatches, "first_mismatch": first_mismatch,
        "lost": lost,
        "retransmits": host["retransmits"] + dev["retransmits"],
        "corrupt_frames": host["corrupt"] + dev["corrupt"],
        "duplicates": host["duplicates"] + dev["duplicates"],
        "bytes_on_wire": sum(wire_bytes.values()),           # device -> host, every frame
        "activation_bytes_on_wire": act_bytes,                 # the ACTIVATIONS frames alone
        "bytes_per_positive": act_bytes / sent if sent else None,
        "raw_input_bytes": n * in_size,                        # streaming every raw int8 input instead
        "dense_activation_bytes": sent * act_size,             # the same positives, dense int8
        "compression_vs_dense": sent * act_size / act_bytes if act_bytes else None,
        "timings_us": {ph: float(np.mean(v)) if v else 0.0 for ph, v in times.items()},
        "npu_ms_per_positive": 1e3 * float(np.mean(npu_s)) if npu_s else 0.0,
        "samples_per_second": n / elapsed,   # streaming alone: deploy and start-up not counted
        "stream_seconds": elapsed,
    }
    if baud:
        report.update(wire_time(report, exp, baud))
    (Path(out) if out else exp.dir / "run.json").write_text(json.dumps(report, indent=2))
    return report


def wire_time(r, exp, baud):
    """What the line costs at baud (10 bits a byte): both directions' share of the streaming time, and per
    positive the ACTIVATIONS frame against the same frame carrying the activations dense, int8."""
    from ugate.shared import wire
    size = lambda typ, payload: wire.encode_frame(typ, 0, payload)[1]
    host_bytes = r["samples"] * size(wire.VECTOR, exp.xq[0].tobytes()) + r["positives_sent"] * size(wire.ACK, wire.wr_ack(0))
    s = lambda nbytes: nbytes * 10 / baud
    sent = max(r["positives_sent"], 1)
    return {"baud": baud, "wire_share": s(host_bytes + r["bytes_on_wire"]) / r["stream_seconds"],
            "wire_ms_per_positive": 1e3 * s(r["activation_bytes_on_wire"] / sent),
            "dense_wire_ms_per_positive": 1e3 * s(size(wire.ACTIVATIONS, wire.wr_activations(0, bytes(exp.ref["act"][0].size))))}


def summary(r):
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f} %"
    rows = [("samples", f"{r['samples']}"), ("negatives stopped", pct(r["negatives_stopped"])),
            ("gate recall", pct(r["gate_recall"])), ("positives sent", f"{r['positives_sent']}"),
            ("accuracy (device + NPU)", pct(r["accuracy"])), ("accuracy (host reference)", pct(r["reference_accuracy"])),
            ("mismatches vs reference", f"{r['mismatches']}"), ("lost / retransmits", f"{r['lost']} / {r['retransmits']}"),
            ("bytes per positive", "n/a" if r["bytes_per_positive"] is None else
             f"{r['bytes_per_positive']:.1f} (dense int8 {r['dense_activation_bytes'] // max(r['positives_sent'], 1)}, "
             f"{r['compression_vs_dense'] or 0:.1f}x smaller)"),
            ("bytes on wire / raw input", f"{r['bytes_on_wire']} / {r['raw_input_bytes']} "
             f"({r['raw_input_bytes'] / max(r['bytes_on_wire'], 1):.1f}x less)"),
            ("device us: stage1 gate encode tx", " ".join(f"{r['timings_us'][p]:.0f}" for p in PHASES)),
            ("NPU ms per positive", f"{r['npu_ms_per_positive']:.3f}"),
            ("throughput", f"{r['samples_per_second']:.0f} samples/s")]
    if "baud" in r:
        rows += [(f"wire at {r['baud']} baud", f"{r['wire_share']:.0%} of the time (inputs in, results and positives out)"),
                 ("wire ms per positive", f"{r['wire_ms_per_positive']:.2f} sparse, {r['dense_wire_ms_per_positive']:.2f} dense int8")]
    return "\n".join(f"  {k:<34} {v}" for k, v in rows)


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="run folder from ugate train (exported if needed)")
    parser.add_argument("--port", default="virtual", help="serial port of a board, or virtual (default)")
    parser.add_argument("--kernels", default="viper", choices=("viper", "portable"), help="device kernel set")
    parser.add_argument("--limit", type=int, help="stream only this many test samples (a seeded subset)")
    parser.add_argument("--baud", type=int, help="line rate: paces a virtual board to it; reports the wire's share of the time")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args):
    if args.limit is not None and args.limit < 1:
        raise UgateError(f"--limit must be at least 1, not {args.limit}")
    r = run(args.model, args.port, args.kernels, args.limit, progress=not args.quiet, baud=args.baud)
    print(f"ugate run: {args.model} on {args.port} ({r['board']}, {args.kernels} kernels)")
    print(summary(r))
    print(f"wrote {Path(args.model) / 'run.json'}")
    return 0 if r["mismatches"] == 0 and r["lost"] == 0 else 1
