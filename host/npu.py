"""NPU stand-in: stage 2 in tinygrad on the CPU, fed the int8 activations that cross the wire.

The stage-2 file (`stage2.npz`, written by `ugate export`) is defined here, once:
  act_scale           float32 scalar: activation = int8 * act_scale
  act_shape           int (3,): (C, H, W) of the activations, = Net.activation_shape
  config              str: the NetConfig as json
  stage2.<key>        float32: every array of Net.stage2.state_dict() (BatchNorm running stats included)

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


def save_stage2(net, act_scale, path):
    state = {f"stage2.{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in net.stage2.state_dict().items()}
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
