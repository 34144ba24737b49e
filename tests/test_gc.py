"""The GC layer and the pieces of the joint loss, on tiny random tensors."""
import numpy as np
import pytest
import torch

from ugate import UgateError
from ugate.model import GCLayer, Net, NetConfig, gated_from_baseline
from ugate.train import calibrate_threshold, joint_loss, system_metrics

torch.set_num_threads(1)    # tiny tensors: threads only add overhead, badly so on a shared machine


def tiny(gate_conv=0):
    torch.manual_seed(0)
    return Net(NetConfig(in_shape=(1, 8, 8), n_classes=3, channels=[4, 6, 8], gate_conv=gate_conv), gated=True)


@pytest.mark.parametrize("gate_conv", [0, 5])
def test_shapes(gate_conv):
    net = tiny(gate_conv)
    logits, gate, z = net(torch.rand(7, 1, 8, 8))
    assert logits.shape == (7, 3) and gate.shape == (7,) and z.shape == (7, *net.activation_shape) == (7, 6, 2, 2)
    g, c = GCLayer(6, gate_hidden=4, gate_conv=gate_conv)(torch.rand(3, 6, 5, 5))
    assert g.shape == (3,) and c.shape == (3, 6, 5, 5)


def test_gated_from_baseline_keeps_weights():
    base = Net(NetConfig(in_shape=(1, 8, 8), n_classes=2, channels=[4, 6, 8]))
    net = gated_from_baseline(base)
    x = torch.rand(5, 1, 8, 8)
    base.eval(), net.eval()
    assert torch.equal(base.stage1(x), net.stage1(x))   # threshold starts at 0: compression is the identity after ReLU
    assert torch.allclose(base(x)[0], net(x)[0])


def test_gradients_reach_gate_and_backbone():
    net = tiny()
    y = torch.tensor([0, 1, 2, 0, 0, 1])
    loss, _ = joint_loss(net, torch.rand(6, 1, 8, 8), y)
    loss.backward()
    # gc.threshold starts at 0: its gradient must pass there, or compression never learns
    for name in ("gc.threshold", "gc.gate_fc1.weight", "gc.gate_fc2.weight", "stage1.0.conv.weight", "stage1.1.conv.weight", "stage2.0.conv.weight"):
        g = dict(net.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    # the gate's loss alone trains the backbone too (joint training is what made the gate work)
    net.zero_grad()
    joint_loss(net, torch.rand(6, 1, 8, 8), y, alpha=1.0, beta=0.0)[0].backward()
    assert net.stage1[0].conv.weight.grad.abs().sum() > 0


def test_sparsity_gives_exact_zeros():
    net = tiny()
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 3, (32,))
    zeros = lambda: (net(x)[2] == 0).float().mean().item()
    before = zeros()
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    for _ in range(60):
        opt.zero_grad()
        joint_loss(net, x, y, alpha=0.0, beta=10.0)[0].backward()
        opt.step()
    assert zeros() > max(0.9, before)


@pytest.mark.parametrize("n,target,confidence", [(1000, 0.99, 0.5), (1000, 0.99, 0.9), (37, 0.9, 0.8), (50, 1.0, 0.8), (5, 0.5, 0.8)])
def test_calibrate_threshold(n, target, confidence):
    from scipy.stats import binom
    s = np.random.default_rng(n).normal(size=n)
    t = calibrate_threshold(s, target, confidence)
    k = int((s < t).sum())                                  # calibration positives left below
    assert (s >= t).mean() >= target                        # recall on the calibration data itself
    assert k == 0 or binom.cdf(k, n, 1 - target) <= 1 - confidence   # k misses refute "recall < target"
    if k + 1 < n and (s > t).any():                         # the highest such threshold: one more miss would not
        assert binom.cdf(k + 1, n, 1 - target) > 1 - confidence or target == 1.0
    assert calibrate_threshold(s, target, min(confidence + 0.09, 0.999)) <= t   # more confidence, lower threshold


def test_misses_allowed_scales_with_the_calibration_set():
    from ugate.train import misses_allowed
    assert misses_allowed(300, 0.99, 0.8) <= 1              # few positives: almost no misses allowed
    assert 7 <= misses_allowed(1200, 0.99, 0.8) < 12       # many: approaching n * 1%
    assert misses_allowed(10, 0.99) == 0


def test_calibrate_threshold_needs_positives():
    with pytest.raises(UgateError):
        calibrate_threshold([], 0.99)


def test_system_metrics():
    y = np.array([0, 0, 0, 0, 1, 2, 1, 2])
    pred = np.array([0, 1, 0, 1, 1, 1, 1, 2])
    gate = np.array([-1, -1, 1, 1, 2, 2, -1, 3.0])
    act = np.zeros((8, 2, 2))
    act[4:6] = 1                     # two of four positives fully dense
    m = system_metrics(y, pred, gate, 0.5, act)
    # closed: 0,1,6 -> predict 0; open: 2 (pred 0 ok), 3 (pred 1 wrong), 4 ok, 5 wrong, 7 ok
    assert m == {"gated_accuracy": 5 / 8, "negatives_stopped": 0.5, "gate_recall": 0.75, "positive_zeros": 0.5}
