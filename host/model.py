"""The networks: a plain CNN split into stage 1 (microcontroller) and stage 2 (NPU), and the
Gated Compression layer inserted between them.

Everything in stage 1 and the GC layer uses only ops the int8 export and the device kernels know
(docs/design.md, "Op set"): an optional 2x2 space to depth of the input, ConvBlock (conv 3x3 +
BatchNorm + ReLU + optional 2x2 max pool), global max / mean pooling, Linear + ReLU, and the shifted
ReLU of the compression. Stage 2 is free (it runs in float on the NPU stand-in) but stays plain so
tinygrad can mirror it.
"""
from dataclasses import dataclass, field, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class NetConfig:
    in_shape: tuple            # (C, H, W)
    n_classes: int             # 1 (negative) + number of positive classes
    channels: list = field(default_factory=lambda: [8, 16, 32])   # one ConvBlock a width
    pools: list = field(default_factory=lambda: [True, True, True])
    strides: list = field(default_factory=lambda: [1, 1, 1])
    hidden: int = 64            # stage 2 classifier width
    split: int = 2              # GC layer after this many blocks (stage 1 = blocks[:split])
    gate_hidden: int = 64
    gate_conv: int = 16         # >0: a ConvBlock of this width on the gate branch before pooling
                                # (fashion-mnist: 95 -> 98% of negatives stopped at 99% recall)
    s2d: bool = False           # the input as 2x2 space to depth (4C, H/2, W/2) before block 0: a
                                # one-channel first conv gets 4 (docs/design.md, "Viper kernels")

    def to_dict(self):
        return asdict(self)


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, pool=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.bn = nn.BatchNorm2d(cout)   # folded into conv at export
        self.pool = pool

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return F.max_pool2d(x, 2) if self.pool else x


def global_pool(x):
    """Max beside mean pooling: the max is what lets a gate see a small, local positive."""
    return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)


class GCLayer(nn.Module):
    """Gated Compression: a gate (one logit: continue or stop) and a compression unit (shifted ReLU
    with a learned per-channel threshold, so small activations become exact zeros)."""

    def __init__(self, channels, gate_hidden=64, gate_conv=16):
        super().__init__()
        self.gate_conv = ConvBlock(channels, gate_conv, pool=False) if gate_conv else None
        gate_in = 2 * (gate_conv or channels)
        self.gate_fc1 = nn.Linear(gate_in, gate_hidden)
        self.gate_fc2 = nn.Linear(gate_hidden, 1)
        self.threshold = nn.Parameter(torch.zeros(channels))   # used as max(threshold, 0)

    def gate(self, x):
        g = self.gate_conv(x) if self.gate_conv is not None else x
        return self.gate_fc2(F.relu(self.gate_fc1(global_pool(g)))).squeeze(1)

    def compress(self, x):
        # clamp, not relu: its gradient passes at 0, where the threshold starts (relu's is 0 there)
        return F.relu(x - self.threshold.clamp(min=0).view(1, -1, 1, 1))

    def forward(self, x):
        """Returns (gate logit [N], compressed activations [N,C,H,W])."""
        return self.gate(x), self.compress(x)


def _out_shape(cfg, n_blocks):
    c, h, w = cfg.in_shape
    if cfg.s2d:
        c, h, w = 4 * c, h // 2, w // 2
    for i in range(n_blocks):
        c = cfg.channels[i]
        h, w = -(-h // cfg.strides[i]), -(-w // cfg.strides[i])
        if cfg.pools[i]:
            h, w = h // 2, w // 2
    return c, h, w


class Net(nn.Module):
    """Baseline CNN: blocks, then a small classifier. `gc` is None for the baseline."""

    def __init__(self, cfg: NetConfig, gated=False):
        super().__init__()
        self.cfg = cfg
        cins = [cfg.in_shape[0] * (4 if cfg.s2d else 1)] + cfg.channels[:-1]
        blocks = [ConvBlock(ci, co, s, p) for ci, co, s, p in zip(cins, cfg.channels, cfg.strides, cfg.pools)]
        self.stage1 = nn.Sequential(*blocks[:cfg.split])
        c, h, w = _out_shape(cfg, len(cfg.channels))
        self.stage2 = nn.Sequential(*blocks[cfg.split:], nn.Flatten(), nn.Linear(c * h * w, cfg.hidden),
                                    nn.ReLU(), nn.Linear(cfg.hidden, cfg.n_classes))
        self.gc = GCLayer(cfg.channels[cfg.split - 1], cfg.gate_hidden, cfg.gate_conv) if gated else None

    @property
    def activation_shape(self):
        """Shape of what crosses the wire: stage 1's output (C, H, W)."""
        return _out_shape(self.cfg, self.cfg.split)

    def forward(self, x):
        """Returns (class logits [N,K], gate logit [N] or None, compressed activations or None).
        The class logits are computed for every sample; gating is applied by the caller."""
        a = self.stage1(F.pixel_unshuffle(x, 2) if self.cfg.s2d else x)
        if self.gc is None:
            return self.stage2(a), None, None
        gate, z = self.gc(a)
        return self.stage2(z), gate, z


def gated_from_baseline(baseline: Net) -> Net:
    """Insert a GC layer after block `cfg.split` of a trained baseline, keeping its weights."""
    net = Net(baseline.cfg, gated=True)
    net.load_state_dict(baseline.state_dict(), strict=False)
    return net


def load_matching(net: Net, state) -> int:
    """Copy every tensor of `state` whose name and shape match into `net` (a start from another
    model: a different input size or class count leaves the parts that differ as initialized)."""
    own = net.state_dict()
    same = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(same, strict=False)
    return len(same)


def save(net: Net, path, **extra):
    """Checkpoints carry their config, so load() rebuilds the same model."""
    torch.save({"config": net.cfg.to_dict(), "gated": net.gc is not None, "state": net.state_dict(), **extra}, path)


def load(path) -> tuple:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = NetConfig(**{**ck["config"], "in_shape": tuple(ck["config"]["in_shape"])})
    net = Net(cfg, gated=ck["gated"])
    net.load_state_dict(ck["state"])
    return net.eval(), ck
