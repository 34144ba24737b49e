"""Hardware in the loop: the same int8 test vectors go to a board and to the host integer reference,
and every output (gate logit, decision, compressed activations) must agree bit for bit. On a
mismatch the board is asked for every layer's buffer on that sample, naming the first that differs.

Defaults fit a real chip: viper kernels only, on a seeded subset sized from the board's own speed
(measured on the first PROBE samples) to finish in about --minutes; --all and --kernels both on request."""
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


def frontend_check(port, fe, pcm, kernels, put=None):
    """The board's audio front end (device/audio.py) on int16 PCM `pcm` against the host reference,
    every stride's int8 column bit for bit; on a mismatch the board traces that stride stage by stage
    and the first differing stage is named (window sample, FFT bin, power bin, mel channel, log).
    put(name, data): how to place a file on the board (default: over the raw REPL)."""
    from ugate import frontend
    from ugate.board import connect
    ref = frontend.compute(frontend.frames(pcm, fe).reshape(-1, fe["n"]), fe)
    load = "import audio, blob\n_fe = blob.parse(open('model.blob', 'rb').read())['frontend']\n"
    with connect(port) as t:
        (put or t.fs_writefile)("fe.pcm", pcm.astype("<i2").tobytes())
        t0 = time.perf_counter()
        _exec(t, load + f"audio.features('fe.pcm', 'fe.out', _fe, {kernels!r})")
        seconds = time.perf_counter() - t0
        dev = np.frombuffer(t.fs_readfile("fe.out"), np.int8).reshape(-1, fe["n_mels"])
        bad = np.flatnonzero((dev != ref[:len(dev)]).any(1)) if len(dev) == len(ref) else np.array([min(len(dev), len(ref))])
        rep = {"kernels": kernels, "strides": len(ref), "board_strides": len(dev), "mismatched_strides": len(bad),
               "seconds": seconds}
        if len(bad):
            k = int(bad[0])
            _exec(t, load + f"audio.trace('fe.pcm', 'fe.trace', _fe, {k}, {kernels!r})")
            rep["first_difference"] = frontend.first_difference(frontend.read_trace(t.fs_readfile("fe.trace"), fe), pcm, k, fe) \
                or f"stride {k}: every stage agrees when traced alone: the streaming ring differs"
        t.fs_rmfile("fe.pcm")
    return rep


def _exec(t, code, timeout=3600):
    """Run code on the board with a long timeout (the portable front end takes minutes on long audio)."""
    _, err = t.exec_raw(code, timeout=timeout)
    if err:
        raise UgateError(f"the board failed: {err.decode(errors='replace').strip().splitlines()[-1]}")


def test_signal(seconds=10, seed=0):
    """int16 PCM that exercises the front end's ranges: noise at many levels, tones, a chirp, full-scale
    clipping, DC and silence, in one-second pieces."""
    from ugate import frontend
    from ugate.shared.frontend import SR
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    pieces = [lambda: frontend.to_pcm(10 ** rng.uniform(-4, 0) * rng.standard_normal(SR)),
              lambda: frontend.to_pcm(rng.uniform(0.01, 1) * np.sin(2 * np.pi * rng.uniform(50, 7900) * t)),
              lambda: frontend.to_pcm(0.9 * np.sin(2 * np.pi * (100 + 3900 * t) * t)),
              lambda: np.clip(rng.standard_normal(SR) * 40000, -32768, 32767).astype(np.int16),
              lambda: np.full(SR, rng.integers(-32768, 32768), np.int16), lambda: np.zeros(SR, np.int16)]
    return np.concatenate([pieces[i % len(pieces)]() for i in range(int(seconds))])


def check_board(board, reported, port):
    """The board definition must fit what the board says it is (os.uname().machine)."""
    want = board.chip.replace("-", "").lower()
    got = reported.replace("-", "").lower()
    if (want not in got) if want != "virtual" else ("linux" not in got):
        raise UgateError(f"{port} reports {reported!r}, not a {board.chip} ({board.name}): wrong --board or wrong port")


PROBE = 20          # samples timed before sizing a budgeted run


def order(n, seed=0):
    """Sample indices in the seeded order that budgeted runs take them in: a prefix of it is the same
    subset as `--limit` picks (Experiment), every class kept in proportion."""
    return np.random.default_rng(seed).permutation(n)


def check(port, exp, kernels, progress=True, board=None, indices=None, budget=None, log=None):
    """Stream exp's samples `indices` (default all) through the board with one kernel set; return that
    pass's report. budget (seconds): time the first PROBE of them, then keep only as many as fit."""
    from tqdm import tqdm
    from ugate.session import session
    idx = np.arange(len(exp)) if indices is None else np.asarray(indices)
    times = {p: [] for p in PHASES}
    first, mismatches, positives = None, 0, 0
    with session(port, kernels, blob_hash=exp.meta["hash"]) as (link, info):
        if board is not None:
            check_board(board, info["board"], port)
        if budget is not None and log is not None:
            log(f"hil {kernels} on {port}: timing {min(PROBE, len(idx))} of {len(idx)} samples to fit {budget:.0f} s "
                f"(--all for every sample)")
        t0 = time.perf_counter()
        bar = tqdm(total=len(idx), desc=f"hil {kernels} {port}", unit="sample", disable=not progress)
        k, probe = 0, min(PROBE, len(idx) - 1)
        while k < len(idx):
            if k == probe > 0:
                rate = k / (time.perf_counter() - t0)
                if budget is not None:
                    idx = np.concatenate([idx[:k], np.sort(idx[k:max(k, int(budget * rate))])])
                    bar.total = len(idx)
                if log is not None:
                    log(f"hil {kernels} on {port}: {len(idx)} samples{' (sized to the time budget)' if budget else ''} "
                        f"at {rate:.0f} samples/s, ETA {(len(idx) - k) / rate:.0f} s")
                if k == len(idx):
                    break
            i = int(idx[k])
            r, act = link.infer(exp.xq[i].tobytes())
            positives += bool(r["decision"])
            for p in PHASES if r["decision"] else PHASES[:2]:
                times[p].append(r["t_" + p])
            if not exp.agrees(i, r, act):
                mismatches += 1
                first = i if first is None else min(first, i)
            bar.update()
            k += 1
        bar.close()
        seconds = time.perf_counter() - t0
        stats = link.device_stats()
    rep = {"kernels": kernels, "samples": len(idx), "positives": positives, "mismatches": mismatches, "first_mismatch": first,
           "heap_free": info["heap_free"], "board": info["board"], "seconds": seconds,
           "timings_us": {p: float(np.mean(v)) if v else 0.0 for p, v in times.items()},
           "corrupt_frames": stats["corrupt"] + link.stats["corrupt"], "retransmits": stats["retransmits"] + link.stats["retransmits"]}
    if first is not None:
        rep["first_difference"] = f"sample {first}: " + layer_difference(port, kernels, exp, first)
    return rep


def hil(model_dir, port="virtual", kernels=("viper",), limit=None, deploy_first=True, progress=True,
        board=None, budget=None, log=None):
    """Returns a report: {"passed": bool, "runs": [per kernel set], "heap_total": bytes}. board: a
    name in boards/ that the board on the port must match. budget: seconds per kernel set, the
    sample count sized from the board's measured speed (None: every sample, or limit). log: a
    print-like function told the sample count and ETA."""
    from ugate.board import connect
    from ugate.boards import load_board
    from ugate.deploy import deploy
    board = load_board(board) if board else None   # a bad name is one line here, before any I/O
    check_port_first(port)
    exp = Experiment(model_dir, limit, progress=progress)
    indices = order(len(exp)) if budget else None
    with board_port(port) as p:
        if deploy_first:
            deploy(p, exp.dir, progress=progress)
        runs = [check(p, exp, k, progress, board, indices, budget, log) for k in kernels]
        fe = exp.meta.get("frontend")   # audio models: the board's front end too, bit for bit
        fronts = [frontend_check(p, fe, test_signal(), k) for k in kernels] if fe else []
        with connect(p) as t:
            total = t.eval("__import__('gc').mem_free() + __import__('gc').mem_alloc()")
    return {"passed": all(r["mismatches"] == 0 for r in runs) and all(r["mismatched_strides"] == 0 for r in fronts),
            "runs": runs, "frontend": fronts, "heap_total": total, "model": str(exp.dir), "port": port}


def summary(rep):
    lines = []
    for r in rep["runs"]:
        t = r["timings_us"]
        lines.append(f"  {r['kernels']:<9} {r['samples']} samples, {r['mismatches']} mismatches, "
                     f"{r['samples'] / r['seconds']:.0f} samples/s; device us: stage1 {t['stage1']:.0f}, gate {t['gate']:.0f}, "
                     f"encode {t['encode']:.0f}, transmit {t['transmit']:.0f}; heap in use "
                     f"{(rep['heap_total'] - r['heap_free']) / 1024:.1f} of {rep['heap_total'] / 1024:.0f} KiB")
        for pl in r.get("places", []):
            lines.append(f"    {pl['port']}: {pl['samples']} samples in {pl['seconds']:.1f} s")
        if "first_difference" in r:
            lines.append(f"    first mismatch: {r['first_difference']}")
    for r in rep.get("frontend", []):
        lines.append(f"  front end {r['kernels']:<9} {r['strides']} strides, {r['mismatched_strides']} mismatched"
                     + (f"; {r['first_difference']}" if "first_difference" in r else ""))
    return "\n".join(lines)


MINUTES = 3         # default time budget per kernel set: a few minutes on whatever board is attached


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="run folder from ugate train (exported if needed)")
    parser.add_argument("--port", default="virtual", help="serial port of a board (a path, rfc2217:// or socket:// URL), or virtual (default)")
    parser.add_argument("--board", help="board name from boards/ (checked against what the board reports)")
    parser.add_argument("--kernels", default="viper", choices=("viper", "portable", "both"), help="device kernel set(s); default viper")
    n = parser.add_mutually_exclusive_group()
    n.add_argument("--minutes", type=float, default=MINUTES, help=f"time budget per kernel set: a seeded subset sized from "
                   f"the board's measured speed (default {MINUTES})")
    n.add_argument("--limit", type=int, help="exactly this many test samples (a seeded subset)")
    n.add_argument("--all", action="store_true", help="every test sample")
    parser.add_argument("--place", action="append", help="a labgrid place to acquire and test on (repeat for a farm: "
                        "the samples are split across the places, run in parallel, one report); instead of --port")
    parser.add_argument("--coordinator", help="labgrid coordinator HOST:PORT (default $LG_COORDINATOR or 127.0.0.1:20408)")
    parser.add_argument("--no-deploy", action="store_true", help="test what is on the board as it is")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args):
    if args.limit is not None and args.limit < 1:
        raise UgateError(f"--limit must be at least 1, not {args.limit}")
    if args.minutes <= 0:
        raise UgateError(f"--minutes must be positive, not {args.minutes:g}")
    kernels = ("viper", "portable") if args.kernels == "both" else (args.kernels,)
    budget = None if args.all or args.limit else 60 * args.minutes
    from tqdm import tqdm
    log = tqdm.write   # above a progress bar, not through it
    if args.place:
        from ugate.farm import hil_farm
        rep = hil_farm(args.model, args.place, args.coordinator, kernels, args.limit, not args.no_deploy, not args.quiet,
                       args.board, budget, log)
    else:
        rep = hil(args.model, args.port, kernels, args.limit, not args.no_deploy, not args.quiet, args.board, budget, log)
    print(f"ugate hil: {args.model} on {rep['port']}: {'PASS' if rep['passed'] else 'FAIL'}")
    print(summary(rep))
    return 0 if rep["passed"] else 1
