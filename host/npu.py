"""NPU stand-in: stage 2 in tinygrad on the CPU, fed the int8 activations that cross the wire.

The stage-2 file (`stage2.npz`, written by `ugate export`) is defined here, once:
  act_scale           float32 scalar: activation = int8 * act_scale
  act_shape           int (3,): (C, H, W) of the activations, = Net.activation_shape
  config              str: the NetConfig as json
  stage2.<key>        float32: every array of Net.stage2.state_dict() (BatchNorm running stats included)
  blob_hash, model_sha256   str (hex): the stage1.blob (header model hash) and model.pt (sha256 of
                      the file) of the same export, so a run folder's parts are bound together
                      (ugate.export.check_run_folder)

`Stage2` folds each BatchNorm into its conv at load and runs the rest with TinyJit at fixed batch
sizes. `torch_stage2` runs the same file in torch, unfolded: the oracle for tests and the bench.
"""
import functools
import json
import zipfile

import numpy as np
from tinygrad import Tensor, TinyJit, dtypes
from tinygrad.engine.realize import get_runtime, resolve_params
from tinygrad.helpers import Context
from tinygrad.uop.ops import Ops

from ugate import UgateError

BN_EPS = 1e-5          # nn.BatchNorm2d's default, which ugate.model's ConvBlock uses
JIT_BATCHES = (32, 8, 1)   # a batch of N runs as greedy chunks of these sizes, each compiled on first use


def save_stage2(net, act_scale, path, **bound):
    """bound: blob_hash=..., model_sha256=... (hex strings) of the same export."""
    state = {f"stage2.{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in net.stage2.state_dict().items()}
    state |= {k: np.array(v) for k, v in bound.items()}
    with open(path, "wb") as f:   # a file object, so numpy does not append ".npz" to the name
        np.savez(f, act_scale=np.float32(act_scale), act_shape=np.array(net.activation_shape, np.int64),
                 config=np.array(json.dumps(net.cfg.to_dict())), **state)


def _shapes(cfg, act_shape):
    """Every key of the stage-2 state dict and its shape, as ugate.model.Net builds it from cfg."""
    (c, h, w), shapes, blocks = act_shape, {}, range(cfg["split"], len(cfg["channels"]))
    for j, i in enumerate(blocks):
        co, s = cfg["channels"][i], cfg["strides"][i]
        shapes |= {f"{j}.conv.weight": (co, c, 3, 3), f"{j}.conv.bias": (co,), f"{j}.bn.num_batches_tracked": ()}
        shapes |= {f"{j}.bn.{n}": (co,) for n in ("weight", "bias", "running_mean", "running_var")}
        c, h, w = co, -(-h // s), -(-w // s)
        if cfg["pools"][i]: h, w = h // 2, w // 2
    fc = len(blocks) + 1   # after the blocks: Flatten, Linear, ReLU, Linear
    return shapes | {f"{fc}.weight": (cfg["hidden"], c * h * w), f"{fc}.bias": (cfg["hidden"],),
                     f"{fc + 2}.weight": (cfg["n_classes"], cfg["hidden"]), f"{fc + 2}.bias": (cfg["n_classes"],)}


def read_stage2(path):
    """-> (config dict, act_scale, act_shape, {key: float32 array}), checked against each other."""
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        cfg, scale, shape = json.loads(str(d["config"])), float(d["act_scale"]), tuple(int(v) for v in d["act_shape"])
        want = _shapes(cfg, shape)
    except FileNotFoundError:
        raise UgateError(f"{path}: no such file (`ugate export DIR` writes DIR/stage2.npz)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as e:
        raise UgateError(f"{path}: not a stage-2 file ({type(e).__name__}: {e}); re-run `ugate export`") from None
    state = {k[len("stage2."):]: v for k, v in d.items() if k.startswith("stage2.")}
    for k, s in want.items():
        if k not in state: raise UgateError(f"{path}: stage2.{k} is missing; re-run `ugate export`")
        if state[k].shape != s: raise UgateError(f"{path}: stage2.{k} has shape {state[k].shape}, its config needs {s}")
    return cfg, scale, shape, state


def _batch(act, shape):
    a = np.asarray(act)
    if a.dtype != np.int8 or a.ndim == 0 or a.size % int(np.prod(shape)):
        raise UgateError(f"stage 2 takes int8 activations of shape (N, {', '.join(map(str, shape))}), "
                         f"got {a.dtype} {a.shape}")
    return a.reshape(-1, *shape)


class Stage2:
    """Stage 2 of one stage-2 file in tinygrad: call it with int8 activations, get float32 logits."""
    def __init__(self, cfg, act_scale, act_shape, state, beam=0):
        self.act_scale, self.act_shape, self.n_classes, self.beam = act_scale, tuple(act_shape), cfg["n_classes"], beam
        t = lambda a: Tensor(np.ascontiguousarray(a, np.float32), device="CPU")
        self.blocks = []
        for j, i in enumerate(range(cfg["split"], len(cfg["channels"]))):
            p = lambda name, j=j: state[f"{j}.{name}"]
            g = p("bn.weight") / np.sqrt(p("bn.running_var") + BN_EPS)   # BN(conv(x)) = conv'(x): scale w, shift b
            w, b = p("conv.weight") * g[:, None, None, None], (p("conv.bias") - p("bn.running_mean")) * g + p("bn.bias")
            self.blocks.append((t(w), t(b), cfg["strides"][i], cfg["pools"][i]))
        fc = len(self.blocks) + 1
        self.w1, self.b1 = t(state[f"{fc}.weight"].T), t(state[f"{fc}.bias"])
        self.w2, self.b2 = t(state[f"{fc + 2}.weight"].T), t(state[f"{fc + 2}.bias"])
        Tensor.realize(*[x for blk in self.blocks for x in blk[:2]], self.w1, self.b1, self.w2, self.b2)
        self._compiled = {}

    def forward(self, x: Tensor) -> Tensor:
        """int8 activations (N, C, H, W) -> logits (N, n_classes)."""
        x = x.cast(dtypes.float32) * self.act_scale
        for w, b, stride, pool in self.blocks:
            x = x.conv2d(w, b, stride=stride, padding=1).relu()
            if pool: x = x.max_pool2d()
        return x.flatten(1).linear(self.w1, self.b1).relu().linear(self.w2, self.b2)

    def _compile(self, n):
        """A fixed input buffer, TinyJit's captured kernels for it, and numpy views of input and output.
        Calling the jit costs ~0.2 ms of Python a call here (input checks, op dispatch, stats), 3x
        torch's whole batch-1 forward, so we replay its kernels ourselves: ~5 us of overhead each."""
        x = Tensor.zeros(n, *self.act_shape, dtype=dtypes.int8, device="CPU").contiguous().realize()
        jit = TinyJit(self.forward)
        with Context(BEAM=self.beam):
            for _ in range(2): out = jit(x)   # the first call runs, the second captures
        kernels = []
        for call in jit.captured.linear.src:
            prg = call.src[0]
            assert prg.op is Ops.PROGRAM, f"cannot replay {prg.op} (is HCQ2 set?)"
            bufs = resolve_params(call, (x.uop.base,))
            args = [bufs[i].buffer.ensure_allocated()._buf for i in prg.arg.globals]
            global_size, local_size = prg.arg.launch_dims({})
            kernels.append(functools.partial(get_runtime("CPU", prg), *args, global_size=global_size, local_size=local_size,
                                             vals=prg.arg.vals({})))
        view = lambda t, dt: np.frombuffer(t.uop.buffer.as_memoryview(force_zero_copy=True), dt).reshape(t.shape)
        return x, out, kernels, view(x, np.int8), view(out, np.float32)   # x and out keep the views' memory alive

    def __call__(self, act) -> np.ndarray:
        """int8 activations (N, C, H, W), (N, C*H*W) or one sample flat -> float32 logits (N, n_classes)."""
        a = _batch(act, self.act_shape)
        logits, i = np.empty((len(a), self.n_classes), np.float32), 0
        while i < len(a):
            n = next(n for n in JIT_BATCHES if n <= len(a) - i)
            if n not in self._compiled: self._compiled[n] = self._compile(n)
            _, _, kernels, x, out = self._compiled[n]
            x[:] = a[i:i + n]
            for k in kernels: k()
            logits[i:i + n], i = out, i + n
        return logits

    def predict(self, act) -> np.ndarray:
        return self(act).argmax(axis=1)


def load_stage2(path, beam=0) -> Stage2:
    """beam > 0: tinygrad's BEAM search of each kernel's schedule on first compile (minutes; cached on disk)."""
    cfg, scale, shape, state = read_stage2(path)
    return Stage2(cfg, scale, shape, state, beam=beam)


def torch_stage2(path):
    """The same stage 2 in torch, BatchNorm unfolded: act -> logits, like Stage2.__call__."""
    import torch
    from ugate.model import Net, NetConfig
    cfg, scale, shape, state = read_stage2(path)
    net = Net(NetConfig(**{**cfg, "in_shape": tuple(cfg["in_shape"])}))
    net.stage2.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    net.eval()

    def run(act):
        with torch.inference_mode():
            return net.stage2(torch.from_numpy(_batch(act, shape)).float() * scale).numpy()
    return run


# --- the stand-in process: frames in from a serial port, decisions out as JSON lines ---

def listen(link, stage2, class_names, emit, labels=None, quiet=2.0, give_up=30.0):
    """Consume a streaming board's frames until its closing STATS: run stage 2 on every positive's
    activations and emit one decision dict each. Stopped samples send nothing; their numbers are the
    gaps between positives (sample numbers count modulo 2^16 on the wire). We acknowledge every
    ACTIVATIONS, RESULT and STATS and NAK a corrupt frame, so the board retransmits what we missed;
    at the end its counters are reconciled with what arrived, and every positive that never arrived
    whole is counted in "lost". After `quiet` s without a frame we ask for STATS (the board answers
    once its input is done); after `give_up` s the board is gone. Returns the statistics."""
    import time
    from ugate.shared import sparse, wire
    link.ack |= {wire.RESULT, wire.STATS}
    link.nak = True
    acts, opened = {}, []
    stats = {"gate_open": 0, "correct_open": 0, "lost": 0, "activation_bytes": 0, "npu_ms": 0.0}
    sample, last, heard = -1, -1, time.monotonic()   # sample number of the last RESULT, its 16-bit seq
    while True:
        f = link.recv(timeout=quiet)
        if f is None:
            if time.monotonic() - heard > give_up:
                raise UgateError(f"{link.name}: the board went quiet mid-stream ({give_up:g} s without a frame; "
                                 f"{link.stats['corrupt']} corrupt frames so far)")
            link.resync()   # in case a damaged code byte holds the board mid-group
            link.send(wire.STATS)
            continue
        heard = time.monotonic()
        typ, _, p = f
        if typ == wire.ACTIVATIONS:
            vseq, sp = wire.rd_activations(p)
            acts[vseq] = np.frombuffer(bytes(sparse.decode(sp)), np.int8)
            stats["activation_bytes"] += len(p)
        elif typ == wire.RESULT:
            r = wire.rd_result(p)
            step = (r["seq"] - last) & 0xFFFF if last >= 0 else r["seq"] + 1
            if not step:   # a retransmission that our ACK crossed
                continue
            sample, last = sample + step, r["seq"]
            d = {"sample": sample, "gate_logit": r["logit"], "gate_open": bool(r["decision"]),
                 "device_us": {k: r["t_" + k] for k in ("stage1", "gate", "encode", "transmit")}}
            if r["seq"] not in acts:   # the board gave up on them
                stats["lost"] += 1
                d["lost"] = True
            else:
                t0 = time.perf_counter()
                logits = stage2(acts.pop(r["seq"])[None])[0]
                stats["npu_ms"] += 1e3 * (time.perf_counter() - t0)
                d["class"] = int(logits.argmax())
                d["label"] = class_names[d["class"]]
                d["logits"] = [round(float(v), 4) for v in logits]
                if labels is not None:
                    d["truth"] = class_names[labels[d["sample"]]]
                    stats["correct_open"] += d["class"] == labels[d["sample"]]
            stats["gate_open"] += 1
            opened.append(d["sample"])
            emit(d)
        elif typ == wire.STATS:
            dev = stats["device"] = wire.rd_stats(p)
            stats["samples"] = dev["samples"]
            stats["never_arrived"] = max(dev["opens"] - stats["gate_open"], 0)   # positives we never heard of
            stats["lost"] += stats["never_arrived"]
            stats["gate_open"] = max(stats["gate_open"], dev["opens"])
            if labels is not None:   # a stopped (or lost) sample is predicted negative: right when it is one
                stopped = np.ones(len(labels), bool)
                stopped[opened] = False
                stats["accuracy"] = (stats["correct_open"] + int((labels[stopped] == 0).sum())) / max(len(labels), 1)
            return stats
        elif typ == wire.ERROR:
            code, msg = wire.rd_error(p)
            raise UgateError(f"{link.name}: device error: {msg}")


def follow(port, model_dir, replay=None, kernels="viper", emit=lambda d: None, progress=False):
    """Put `replay` test vectors on the board as its sensor input (None: use what is there), stream
    them through the board and stage 2. Returns (listen's statistics, the board's INFO, seconds)."""
    import time
    from pathlib import Path
    from ugate.deploy import deploy
    from ugate.export import check_run_folder
    from ugate.run import Experiment, check_port_first
    from ugate.session import session
    model_dir = Path(model_dir)
    if replay is not None and replay < 1:
        raise UgateError(f"--replay must be at least 1, not {replay}")
    check_port_first(port)
    meta = check_run_folder(model_dir)
    stage2 = load_stage2(model_dir / "stage2.npz")
    from ugate import model as M
    class_names = M.load(model_dir / "model.pt")[1].get("class_names") or [f"class {k}" for k in range(stage2.n_classes)]
    stage2(np.zeros((1, int(np.prod(stage2.act_shape))), np.int8))   # compile before the board streams
    labels = None
    if replay is not None:
        exp = Experiment(model_dir, replay, progress=progress)
        class_names, labels, replay = exp.class_names, exp.y, len(exp)   # a test set may have fewer
        deploy(port, model_dir, progress=progress)
        from ugate.board import connect
        with connect(port) as t:
            t.fs_writefile("sensor.bin", exp.xq.tobytes())
    with session(port, kernels, blob_hash=meta["hash"], entry="stream") as (link, info):
        import sys
        print(f"ugate npu: {port} ({info['board']}) streaming; decisions as JSON lines", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        stats = listen(link, stage2, class_names, emit, labels)
        stats["host"] = dict(link.stats)
        if replay is not None and stats["samples"] < replay:   # the board stopped hearing us
            raise UgateError(f"{port}: the board stopped streaming after {stats['samples']} of {replay} samples: "
                             f"{stats['device']['undelivered']} positives went unacknowledged after every retry "
                             f"({stats['host']['corrupt'] + stats['device']['corrupt']} corrupt frames): check the cable")
        return stats, info, time.perf_counter() - t0


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port of a board running ugate, or virtual")
    parser.add_argument("--model", required=True, help="run folder with stage2.npz and stage1.blob (ugate export)")
    parser.add_argument("--replay", type=int, metavar="N",
                        help="put N test vectors on the board as its sensor input first (default on a virtual board: 200)")
    parser.add_argument("--kernels", default="viper", choices=("viper", "portable"))
    parser.add_argument("--out", help="write the JSON lines here instead of stdout")


def main(args):
    import sys
    from ugate.run import board_port
    out = open(args.out, "w") if args.out else sys.stdout
    emit = lambda d: print(json.dumps(d), file=out, flush=True)
    replay = args.replay if args.replay is not None else (200 if args.port == "virtual" else None)
    try:
        with board_port(args.port) as p:
            stats, info, _ = follow(p, args.model, replay, args.kernels, emit)
    finally:
        if out is not sys.stdout:
            out.close()
    n, k = max(stats["samples"], 1), max(stats["gate_open"], 1)
    line = (f"ugate npu: {stats['samples']} samples, {stats['gate_open']} through the gate "
            f"({1 - stats['gate_open'] / n:.1%} stopped on the board, nothing sent for them), "
            f"{stats['activation_bytes'] / k:.1f} activation bytes a positive, stage 2 {stats['npu_ms'] / k:.3f} ms a positive")
    if "accuracy" in stats:   # a stopped sample is predicted negative: right when it is one
        line += f", accuracy {stats['accuracy']:.2%}"
    print(line, file=sys.stderr)
    if stats["lost"]:
        print(f"ugate npu: {stats['lost']} of {stats['gate_open']} positives lost on the link ({stats['never_arrived']} never "
              f"arrived, the board gave up on {stats['device']['undelivered']} after every retry; "
              f"{stats['host']['corrupt'] + stats['device']['corrupt']} corrupt frames): check the cable", file=sys.stderr)
        return 1
    return 0
