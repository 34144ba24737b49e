"""Stage 2 in tinygrad against torch on the same stage-2 file, and the file format's errors."""
import json

import numpy as np
import pytest
import torch

from ugate import UgateError
from ugate.model import Net, NetConfig
from ugate.npu import load_stage2, read_stage2, save_stage2, torch_stage2

SCALE = 0.05


def random_net(n_classes, seed):
    """A small net with random BatchNorm statistics, so the fold at load is really tested."""
    torch.manual_seed(seed)
    net = Net(NetConfig(in_shape=(1, 28, 28), n_classes=n_classes, channels=[8, 16, 32], split=2, hidden=16))
    for m in net.stage2.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for p, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.5, 0.5), (m.running_mean, -0.5, 0.5), (m.running_var, 0.2, 2.0)):
                p.data.uniform_(lo, hi)
    return net.eval()


def activations(n, shape, seed):
    """int8 activations as after the GC layer: non-negative, ~95% exact zeros."""
    rng = np.random.default_rng(seed)
    return (rng.integers(1, 128, (n, *shape)) * (rng.random((n, *shape)) < 0.05)).astype(np.int8)


@pytest.fixture(scope="module", params=[2, 3])
def stage2_file(request, tmp_path_factory):
    net = random_net(request.param, seed=request.param)
    path = tmp_path_factory.mktemp("npu") / "stage2.npz"
    save_stage2(net, SCALE, path)
    return net, path


@pytest.fixture(scope="module")
def models(stage2_file):
    """Compiled once a module: tinygrad's JIT compile is the slow part."""
    net, path = stage2_file
    return net, load_stage2(path), torch_stage2(path)


@pytest.mark.parametrize("n", [1, 45])   # 45 = 32 + 8 + 5 x 1: every JIT batch size
def test_tinygrad_matches_torch(models, n):
    net, tg, th = models
    act = activations(n, net.activation_shape, seed=n)
    with torch.inference_mode():
        direct = net.stage2(torch.from_numpy(act).float() * SCALE).numpy()
    got, want = tg(act), th(act)
    assert got.shape == (n, net.cfg.n_classes) and got.dtype == np.float32
    np.testing.assert_allclose(want, direct, rtol=0, atol=0)   # the torch twin is the saved net
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert (tg.predict(act) == want.argmax(1)).all()


def test_input_layouts_and_repeat_calls(models):
    net, tg, _ = models
    act = activations(9, net.activation_shape, seed=7)
    first = tg(act)
    np.testing.assert_array_equal(tg(act.reshape(9, -1)), first)                     # flat samples
    # other chunks (9 = 8 + 1 vs 9 x 1) run other kernels, which may sum in another order
    np.testing.assert_allclose(np.concatenate([tg(a) for a in act]), first, rtol=1e-5, atol=1e-6)   # one at a time
    np.testing.assert_allclose(tg(act[::-1])[::-1], first, rtol=1e-5, atol=1e-6)   # no state leaks between calls
    assert tg(act[:0]).shape == (0, net.cfg.n_classes)


def test_round_trip(stage2_file):
    net, path = stage2_file
    cfg, scale, shape, state = read_stage2(path)
    assert cfg == json.loads(json.dumps(net.cfg.to_dict())) and shape == net.activation_shape
    assert scale == np.float32(SCALE)
    sd = net.stage2.state_dict()
    assert state.keys() == sd.keys()
    for k, v in sd.items():
        assert state[k].dtype == np.float32
        np.testing.assert_array_equal(state[k], v.numpy().astype(np.float32))


def test_bad_input(models):
    net, tg, _ = models
    act = activations(1, net.activation_shape, seed=0)
    for bad in (act.astype(np.float32), act[..., :-1], np.int8(3)):
        with pytest.raises(UgateError, match="int8 activations of shape"):
            tg(bad)


def test_bad_files(tmp_path, stage2_file):
    net, path = stage2_file
    with pytest.raises(UgateError, match="no such file"):
        load_stage2(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(UgateError, match="not a stage-2 file"):
        load_stage2(tmp_path / "junk.npz")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:300])
    with pytest.raises(UgateError, match="not a stage-2 file"):
        load_stage2(tmp_path / "cut.npz")
    with np.load(path) as z:
        d = dict(z)
    np.savez(tmp_path / "noconf.npz", **{k: v for k, v in d.items() if k != "config"})
    with pytest.raises(UgateError, match="not a stage-2 file"):
        load_stage2(tmp_path / "noconf.npz")
    np.savez(tmp_path / "missing_key.npz", **{k: v for k, v in d.items() if k != "stage2.0.bn.running_var"})
    with pytest.raises(UgateError, match=r"stage2\.0\.bn\.running_var is missing"):
        load_stage2(tmp_path / "missing_key.npz")
    other = json.loads(str(d["config"])) | {"hidden": 17}   # weights of another net
    np.savez(tmp_path / "shape.npz", **(d | {"config": np.array(json.dumps(other))}))
    with pytest.raises(UgateError, match=r"has shape \(16, 288\), its config needs \(17, 288\)"):
        load_stage2(tmp_path / "shape.npz")
