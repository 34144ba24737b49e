"""Hardware in the loop: the same int8 test vectors go to a board and to the host integer reference,
and every output (gate logit, decision, compressed activations) must agree bit for bit. On a
mismatch the board is asked for every layer's buffer on that sample, naming the first that differs."""
import time

import numpy as np

from ugate import UgateError
from ugate.run import PHASES, Experiment, board_port, check_port_first


def layer_difference(port, kernels, exp, i):
    """Re-run sample i on the board over the raw REPL and name the first buffer that differs."""
    from ugate.board import connect
    from ugate.reference import first_difference
    expected = {name: v[i] for name, v in exp.ref["layers"].items()}
    with connect(port) as t:
        t.exec(f"import runtime\n_m = runtime.Model('model.blob', {kernels!r})\n_m.run({exp.xq[i].tobytes()!r})")
        got = {name: t.eval(f"bytes(_m.buffer({name!r}))") for name in expected}
    return first_difference(expected, got) or "every layer agrees when re-run alone: the link or the device loop differs"


def check_board(board, reported, port):
    """The board definition must fit what the board says it is (os.uname().machine)."""
    want = board.chip.replace("-", "").lower()
    got = reported.replace("-", "").lower()
    if (want not in got) if want != "virtual" else ("linux" not in got):
        raise UgateError(f"{port} reports {reported!r}, not a {board.chip} ({board.name}): wrong --board or wrong port")


def check(port, exp, kernels, progress=True, board=None):
    """Stream exp through the board with one kernel set; return that pass's report."""
    from tqdm import tqdm
    from ugate.session import session
    times = {p: [] for p in PHASES}
    first, mismatches = None, 0
    with session(port, kernels, blob_hash=exp.meta["hash"]) as (link, info):
        if board is not None:
            check_board(board, info["board"], port)
        t0 = time.perf_counter()
        for i in tqdm(range(len(exp)), desc=f"hil {kernels}", unit="sample", disable=not progress):
            r, act = link.infer(exp.xq[i].tobytes())
            for p in PHASES if r["decision"] else PHASES[:2]:
                times[p].append(r["t_" + p])
            if not exp.agrees(i, r, act):
                mismatches += 1
                first = i if first is None else first
        seconds = time.perf_counter() - t0
        stats = link.device_stats()
    rep = {"kernels": kernels, "samples": len(exp), "mismatches": mismatches, "first_mismatch": first,
           "heap_free": info["heap_free"], "board": info["board"], "seconds": seconds,
           "timings_us": {p: float(np.mean(v)) if v else 0.0 for p, v in times.items()},
           "corrupt_frames": stats["corrupt"] + link.stats["corrupt"], "retransmits": stats["retransmits"] + link.stats["retransmits"]}
    if first is not None:
        rep["first_difference"] = f"sample {first}: " + layer_difference(port, kernels, exp, first)
    return rep


def hil(model_dir, port="virtual", kernels=("viper", "portable"), limit=None, deploy_first=True, progress=True,
        board=None):
    """Returns a report: {"passed": bool, "runs": [per kernel set], "heap_total": bytes}. board: a
    name in boards/ that the board on the port must match."""
    from ugate.board import connect
    from ugate.boards import load_board
    from ugate.deploy import deploy
    board = load_board(board) if board else None   # a bad name is one line here, before any I/O
    check_port_first(port)
    exp = Experiment(model_dir, limit, progress=progress)
    with board_port(port) as p:
        if deploy_first:
            deploy(p, exp.dir, progress=progress)
        runs = [check(p, exp, k, progress, board) for k in kernels]
        with connect(p) as t:
            total = t.eval("__import__('gc').mem_free() + __import__('gc').mem_alloc()")
    return {"passed": all(r["mismatches"] == 0 for r in runs), "runs": runs, "heap_total": total,
            "model": str(exp.dir), "port": port}


def summary(rep):
    lines = []
    for r in rep["runs"]:
        t = r["timings_us"]
        lines.append(f"  {r['kernels']:<9} {r['samples']} samples, {r['mismatches']} mismatches, "
                     f"{r['samples'] / r['seconds']:.0f} samples/s; device us: stage1 {t['stage1']:.0f}, gate {t['gate']:.0f}, "
                     f"encode {t['encode']:.0f}, transmit {t['transmit']:.0f}; heap in use "
                     f"{(rep['heap_total'] - r['heap_free']) / 1024:.1f} of {rep['heap_total'] / 1024:.0f} KiB")
        if "first_difference" in r:
            lines.append(f"    first mismatch: {r['first_difference']}")
    return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="run folder from ugate train (exported if needed)")
    parser.add_argument("--port", default="virtual", help="serial port of a board, or virtual (default)")
    parser.add_argument("--board", help="board name from boards/ (checked against what the board reports)")
    parser.add_argument("--kernels", default="both", choices=("viper", "portable", "both"))
    parser.add_argument("--limit", type=int, help="only this many test samples (a seeded subset)")
    parser.add_argument("--no-deploy", action="store_true", help="test what is on the board as it is")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args):
    if args.limit is not None and args.limit < 1:
        raise UgateError(f"--limit must be at least 1, not {args.limit}")
    kernels = ("viper", "portable") if args.kernels == "both" else (args.kernels,)
    rep = hil(args.model, args.port, kernels, args.limit, not args.no_deploy, not args.quiet, args.board)
    print(f"ugate hil: {args.model} on {args.port}: {'PASS' if rep['passed'] else 'FAIL'}")
    print(summary(rep))
    return 0 if rep["passed"] else 1
