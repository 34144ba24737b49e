"""Device kernels and runtime, in real MicroPython, against the integer reference: kernel by kernel
on random and extreme cases, then whole models bit for bit, with both kernel sets."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MICROPYTHON, ROOT, run_micropython
from ugate import export, reference
from ugate.model import Net, NetConfig

DEVICE = [ROOT / "device" / "kernels.py", ROOT / "device" / "kernels_portable.py", ROOT / "device" / "runtime.py",
          ROOT / "shared" / "blob.py"]
I32 = 2 ** 31


def _x(rng, shape, mode):
    if mode == "min":
        return np.full(shape, -128, np.int8)
    if mode == "max":
        return np.full(shape, 127, np.int8)
    if mode == "relu":                              # after a relu: conv_v's two-MACs-a-multiply path
        return rng.integers(0, 128, shape).astype(np.int8)
    return rng.integers(-128, 128, shape).astype(np.int8)


def _wbn(rng, cout, k, mode, xmax=128):
    """Weights, the largest biases the export allows for inputs |x| <= xmax, shifts: saturating in
    `mode` min/max."""
    w = rng.integers(-127, 128, (cout, k)).astype(np.int8)
    n = rng.integers(0, 25, cout).astype(np.uint8)
    n[0], n[-1] = 0, 24
    if mode in ("min", "max"):
        w[:] = 127 if mode == "max" else -127
        w[0] = -w[0]
    room = I32 - 1 - xmax * 127 * k - ((1 << n.astype(np.int64)) >> 1)
    b = (rng.random(cout) * 2 - 1) * room
    if mode != "rand":
        b = np.where(np.arange(cout) % 2, room, -room)
    return w, b.astype(np.int64).astype(np.int32), n


def kernel_cases(seed=0):
    """[(kernel name, x, w, b, s, params, expected y)] covering every kernel, stride, relu and edge."""
    rng, cases = np.random.default_rng(seed), []
    for mode in ("relu", "relu", "max", "signed", "signed"):   # signed: a first layer's input, unsaturated
        for cin, cout, h, w, st, relu in [(1, 3, 5, 7, 1, 1), (3, 4, 6, 6, 2, 0), (8, 3, 5, 4, 1, 1), (16, 2, 3, 5, 2, 0),
                                           (4, 7, 3, 4, 1, 1), (17, 2, 4, 3, 1, 1), (2, 1, 1, 1, 1, 0),
                                           # one input channel, two taps a word: stride 2, padding channels, edges
                                           (1, 5, 6, 9, 2, 1), (1, 9, 4, 1, 2, 0), (1, 2, 1, 3, 1, 1), (1, 8, 12, 13, 1, 1)]:
            x = _x(rng, (1, cin, h, w), mode)
            wq, b, n = _wbn(rng, cout, cin * 9, mode if mode == "max" else "rand", xmax=128)
            if mode in ("relu", "signed"):          # outputs mostly inside [-128, 127], so every bit shows
                n[:] = max(0, int(np.log2(np.sqrt(cin * 9) * 64 * 73 / 40)))
                b = rng.integers(-2 ** (int(n[0]) + 6), 2 ** (int(n[0]) + 6), cout).astype(np.int32)
            if mode == "signed" and cin == 4:     # a weight of -128 (no blob has one): no signed lanes
                wq[1, 5] = -128
            y = reference.conv(x, wq.reshape(cout, cin, 3, 3), b, n, st, relu)
            cases.append(("conv", x, wq, b, n, [cin, h, w, cout, st, y.shape[2], y.shape[3], relu], y))
    for mode in ("rand", "rand", "min", "max"):
        for cin, cout, h, w, st, relu in [(1, 3, 5, 7, 1, 1), (3, 4, 6, 6, 2, 0), (2, 2, 7, 4, 2, 1), (4, 2, 1, 1, 1, 0),
                                           (1, 16, 3, 9, 2, 1), (17, 1, 5, 3, 1, 0), (16, 5, 7, 9, 2, 1), (1, 3, 3, 70, 2, 1)]:
            x = _x(rng, (1, cin, h, w), mode)
            wq, b, n = _wbn(rng, cout, cin * 9, mode)
            y = reference.conv(x, wq.reshape(cout, cin, 3, 3), b, n, st, relu)
            cases.append(("conv", x, wq, b, n, [cin, h, w, cout, st, y.shape[2], y.shape[3], relu], y))
        for c, h, w in [(2, 4, 4), (3, 5, 7), (1, 3, 2)]:
            x = _x(rng, (1, c, h, w), mode)
            cases.append(("maxpool", x, None, None, None, [c, h, w], reference.maxpool(x)))
            x = _x(rng, (1, c, 2 * h - c % 2, 2 * w + 1), mode)      # odd sides: floor
            cases.append(("s2d", x, None, None, None, [c, 2 * h - c % 2, 2 * w + 1], reference.s2d(x)))
        for (c, h, w), j in [((3, 7, 7), 7), ((2, 28, 28), 0), ((1, 1, 1), 7), ((2, 40, 40), 3)]:
            x = _x(rng, (1, c, h, w), mode)
            m, k = export.mean_multiplier(h * w)
            cases.append(("gpool", x, None, None, None, [c, h * w, m, k, j], reference.gpool(x, m, k, j)))
        for nin, nout, relu in [(10, 4, 1), (33, 5, 0)]:
            x = _x(rng, (1, nin), mode)
            wq, b, n = _wbn(rng, nout, nin, mode)
            cases.append(("dense", x, wq, b, n, [nin, nout, relu], reference.dense(x, wq, b, n, relu)))
        for nin, nout, relu in [(12, 3, 1), (8, 4, 0), (33, 5, 1), (7, 2, 0)]:   # over a GPOOL's int16 output
            x = _x(rng, (1, nin), mode).astype(np.int16) << 7
            x[0, 0] = 2 ** 15 - 1 if mode != "min" else x[0, 0]
            wq, b, n = _wbn(rng, nout, nin, mode, xmax=2 ** 15)
            cases.append(("dense16", x, wq, b, n, [nin, nout, relu], reference.dense(x, wq, b, n, relu)))
        x = _x(rng, (1, 17), mode)
        wq, b, _ = _wbn(rng, 1, 17, mode)
        cases.append(("logit", x, wq, b, None, [17], reference.logit(x, wq, b)))
        x = _x(rng, (1, 3, 4, 5), mode)
        t = np.array([-128, 0, 127] if mode != "rand" else rng.integers(-128, 128, 3), np.int8)
        cases.append(("compress", x, t, None, None, [3, 20], reference.compress(x, t)))
    return cases


KERNEL_MAIN = """
import json, binascii
from array import array
import kernels, kernels_portable
NAMES = ("conv", "maxpool", "gpool", "dense", "logit", "compress", "s2d", "dense16")
h = lambda s: binascii.unhexlify(s) if s else bytearray(4)
for c in json.load(open("cases.json")):
    out = []
    for ks in (kernels, kernels_portable):
        y = array("i", [0]) if c["k"] == "logit" else bytearray(c["ny"])
        op = NAMES.index(c["k"])
        ks.KERNELS[op](h(c["x"]), y, *ks.prepare(op + 1, h(c["w"]), h(c["b"]), h(c["s"]), array("i", c["p"])))
        out.append(str(y[0]) if c["k"] == "logit" else binascii.hexlify(y).decode())
    print(" ".join(out))
"""


def test_kernels_match_reference(tmp_path):
    cases = kernel_cases()
    hx = lambda a: "" if a is None else np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes().hex()
    (tmp_path / "cases.json").write_text(json.dumps(
        [{"k": k, "x": hx(x), "w": hx(w), "b": hx(b), "s": hx(s), "p": [int(v) for v in p], "ny": int(y.size) * (2 if k == "gpool" else 1)}
         for k, x, w, b, s, p, y in cases]))
    lines = run_micropython(KERNEL_MAIN, DEVICE + [tmp_path / "cases.json"]).split("\n")
    for (k, x, w, b, s, p, y), line in zip(cases, lines):
        want = str(int(y.reshape(-1)[0])) if k == "logit" else y.astype("<i2" if k == "gpool" else np.int8).tobytes().hex()
        viper, portable = line.split(" ")
        assert viper == want, f"viper {k} {p}"
        assert portable == want, f"portable {k} {p}"
    assert len(lines) >= len(cases)


def random_model(cfg, seed=0):
    """A gated Net with random weights and BatchNorm statistics, exported as a blob with the gate
    threshold at the median logit, so about half the samples open it."""
    torch.manual_seed(seed)
    net = Net(cfg, gated=True).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
    with torch.no_grad():
        net.gc.threshold.uniform_(0, 0.2)
    x = torch.rand(64, *cfg.in_shape)
    with torch.no_grad():
        threshold = float(net(x)[1].median())
    return net, export.build(net, export.calibrate(net, x.numpy()), threshold), x.numpy()


MODEL_MAIN = """
import micropython
from runtime import Model
data = open("inputs.bin", "rb").read()
for k in ("viper", "portable")[:%d]:
    m = Model("stage1.blob", k)
    for i in range(len(data) // m.in_size):
        inp = memoryview(data)[i * m.in_size:(i + 1) * m.in_size]
        micropython.heap_lock()          # the per-sample loop must not allocate
        m.run(inp)
        micropython.heap_unlock()
        print(k, i, m.logit, int(m.open), " ".join(bytes(m.buffer(n)).hex() for n in m.names[1:] if n != "logit"))
"""


def check_model(tmp_path, raw, x, kernels=2):
    """Run the blob on the device for both kernel sets; every buffer of every sample must equal the
    reference's (for `act`, when the gate is open)."""
    _, model = reference.load(raw)
    xq = export.quantize_input(x, model["in_scale"])
    ref = reference.run(raw, xq)
    (tmp_path / "stage1.blob").write_bytes(raw)
    (tmp_path / "inputs.bin").write_bytes(xq.tobytes())
    out = run_micropython(MODEL_MAIN % kernels, DEVICE + [tmp_path / "stage1.blob", tmp_path / "inputs.bin"])
    names = [b[0] for b in model["bufs"]][1:]
    names.remove("logit")                          # compared as the returned logit
    n = 0
    for line in out.strip().split("\n"):
        k, i, logit, opened, *bufs = line.split(" ")
        i = int(i)
        assert (int(logit), bool(int(opened))) == (ref["logit"][i], ref["open"][i]), f"{k} sample {i}"
        want = {nm: ref["layers"][nm][i] for nm in names if nm != "act" or ref["open"][i]}
        diff = reference.first_difference(want, dict(zip(names, map(bytes.fromhex, bufs))))
        assert diff is None, f"{k} sample {i}: {diff}"
        n += 1
    assert n == kernels * len(x)
    return ref


def test_tiny_trained_model_bit_exact(tmp_path, tiny_model):
    raw, ds, _ = tiny_model
    ref = check_model(tmp_path, raw, ds.x_test[:40])
    assert ref["open"].any() and not ref["open"].all()    # both paths of the gate exercised


@pytest.mark.parametrize("cfg", [
    NetConfig(in_shape=(1, 12, 12), n_classes=3, channels=[4, 6, 8], strides=[1, 2, 1], pools=[True, False, True],
              split=2, gate_conv=5, gate_hidden=6),
    NetConfig(in_shape=(2, 9, 11), n_classes=2, channels=[3, 5], strides=[2, 1], pools=[False, True], split=1,
              gate_hidden=4),
    NetConfig(in_shape=(1, 16, 18), n_classes=2, channels=[8, 8, 8], pools=[False, True, True], s2d=True, split=2,
              gate_conv=3, gate_hidden=4)])
def test_random_models_bit_exact(tmp_path, cfg):
    net, raw, x = random_model(cfg)
    ref = check_model(tmp_path, raw, x[:12])
    assert ref["open"].any() and not ref["open"].all()


def test_fashion_sized_model_fits_heap(tmp_path):
    """The bundled fashion-mnist shape runs bit-exact in a 256 KB heap (viper only: portable is slow)."""
    cfg = NetConfig(in_shape=(1, 28, 28), n_classes=2, channels=[8, 16, 32], pools=[False, True, True], s2d=True,
                    split=2)
    net, raw, x = random_model(cfg)
    check_model(tmp_path, raw, x[:4], kernels=1)


def test_model_rejects_bad_input(tmp_path, tiny_model):
    (tmp_path / "stage1.blob").write_bytes(tiny_model[0])
    out = run_micropython("""
from runtime import Model
m = Model("stage1.blob")
print(m.in_shape, m.in_size, m.act_shape, m.act_size, len(m.hash))
try:
    m.run(bytes(3))
except ValueError as e:
    print("ValueError", e)
try:
    Model("stage1.blob", "fast")
except ValueError as e:
    print("ValueError", e)
""", DEVICE + [tmp_path / "stage1.blob"])
    assert "(1, 8, 8) 64" in out and "ValueError input has 3 bytes, the model takes 64" in out
    assert "kernels 'fast'" in out


def test_portable_fallback_without_viper(tmp_path, tiny_model):
    """A port without viper cannot compile kernels.py: the runtime says so and runs the portable set."""
    (tmp_path / "stage1.blob").write_bytes(tiny_model[0])
    (tmp_path / "kernels.py").write_text("@micropython.viper\ndef f(x: ptr8):\n    pass\nx = (\n")   # a SyntaxError
    out = run_micropython("""
from runtime import Model
m = Model("stage1.blob", "viper")
print(m.kernels, m.run(bytes(m.in_size)))
""", DEVICE[1:] + [tmp_path / "stage1.blob", tmp_path / "kernels.py"])
    logit = reference.run(tiny_model[0], np.zeros((1, 1, 8, 8), np.int8))["logit"][0]
    assert out.startswith("viper kernels unavailable (") and out.split("\n")[1] == f"portable {logit}"


def test_device_files_compile_for_xtensawin(tmp_path):
    mpy_cross = Path(MICROPYTHON).parent / "mpy-cross"
    for f in [*DEVICE, *sorted((ROOT / "device").glob("*.py")), *sorted((ROOT / "shared").glob("*.py"))]:
        p = subprocess.run([str(mpy_cross), "-march=xtensawin", "-o", str(tmp_path / "out.mpy"), str(f)],
                           capture_output=True, text=True)
        assert p.returncode == 0, f"{f.name}: {p.stderr}"
