"""The ESP32-S3 cycle model (ugate.cycles) against a hand count, and on a whole blob."""
import shutil

import pytest

from ugate import cycles

pytestmark = pytest.mark.skipif(not shutil.which(cycles.OBJDUMP), reason="apt-get install binutils-xtensa-lx106")

# mpy-cross -march=xtensawin compiles the loop body of f to 28 instructions (read off the objdump
# listing by hand: viper keeps x and n in a4/a5 and s, i and the range end on the stack):
#   l32i s32i s32i l32i s32i l32i mov.n mov.n add.n l8ui mov.n l32i add.n mov.n s32i  (s += x[i])
#   movi.n l32i add.n s32i                                                           (i += 1)
#   l32i l32i s32i s32i mov.n mov.n movi.n blt [movi.n skipped] bnez                  (i < n: loop)
# cycles: 28 + 2 taken branches (blt, bnez) x 2 + 6 load-use stalls = 38.
LOOP = """import micropython
@micropython.viper
def f(x: ptr8, n: int) -> int:
    s = 0
    for i in range(n):
        s += x[i]
    return s
"""


def test_hand_counted_loop(tmp_path):
    (tmp_path / "loop.py").write_text(LOOP)
    f = cycles.viper_code(tmp_path / "loop.py")["f"]
    assert not f.undecoded
    assert [i.op for i in f.insns if i.by == "windowed"][:1] == ["entry"] and f.insns[-1].op == "retw.n"
    assert len(f.loops) == 1
    outside, loop = cycles.body_costs(f)
    assert loop == (28, 38)
    # outside the loop: 38 straight-line instructions (entry, argument conversion, return) and the
    # loop's test once more, failing on exit: l32i l32i s32i s32i mov.n mov.n movi.n blt movi.n bnez
    assert outside[0] == 38 + 10
    assert [i.op for i in f.insns if f.loops[0][0] <= i.addr <= f.loops[0][1]].count("l8ui") == 1


def test_read_mpy_rejects_other_files():
    with pytest.raises(cycles.UgateError, match="not an .mpy v6"):
        cycles.read_mpy(b"MZ\x00\x00")


def test_stage1_cycles_on_a_blob(tiny_model):
    """Every op gets a count; the conv's inner loop runs once per (output, 2 input channels), so its
    instructions a MAC stay within what one unrolled term costs; totals add up."""
    rows = cycles.stage1_cycles(tiny_model[0])
    assert [r["op"] for r in rows][:2] == ["conv", "maxpool"] and rows[-1]["op"] == "compress"
    for r in rows:
        assert r["calls"] == 1 and r["cycles"] >= r["instructions"] > 0
        assert sum(i * n for i, _, n in r["loops"]) < r["instructions"]
    conv = [r for r in rows if r["op"] == "conv"]
    assert all(4 < r["instructions_per_mac"] < 40 for r in conv)   # a lane term: 11 instructions, 2 MACs
    assert cycles.s3_time_us(rows) == pytest.approx(sum(r["cycles"] for r in rows) / 240)


def test_conv_path_follows_the_input_sign(tiny_model):
    """The counting run feeds a signed input: the first conv takes conv_v's one-MAC-a-multiply path,
    the convs after a relu the two-MACs-a-multiply one (its loops multiply words and read the
    products' upper halves)."""
    lanes = cycles.lane_loops(cycles.viper_code(cycles.KERNELS)["conv_v"])
    convs = [r for r in cycles.stage1_cycles(tiny_model[0]) if r["op"] == "conv"]
    passes = [sum(n for (_, _, n), lane in zip(r["loops"], lanes) if lane) for r in convs]
    assert len(convs) >= 2 and any(lanes)
    assert passes[0] == 0 and all(n > 0 for n in passes[1:])
    assert convs[1]["instructions_per_mac"] < convs[0]["instructions_per_mac"]


def test_counting_on_the_models_own_samples(tiny_model):
    """Image inputs quantize to 0..127, so on the chip the first conv (one input channel) takes the
    lane path, two taps a multiply; counting on real samples must say so, and differ from the signed
    pseudo-random input's count (on 8x8 digits the lane path is not cheaper: its per-row work does not
    amortize; on 28x28 it is). The figures are per sample (averaged over the samples)."""
    from ugate import export, reference
    raw, ds, _ = tiny_model
    x = export.quantize_input(ds.x_test[:3], reference.load(raw)[1]["in_scale"])
    assert x.min() >= 0
    real = [r for r in cycles.stage1_cycles(raw, inputs=x) if r["op"] == "conv"]
    signed = [r for r in cycles.stage1_cycles(raw) if r["op"] == "conv"]
    assert real[0]["path"] == "lane" and signed[0]["path"] == "signed"
    assert real[0]["cycles_per_mac"] != signed[0]["cycles_per_mac"]
    assert all(r["path"] == "lane" and r["calls"] == 1 for r in real[1:])
    one = cycles.stage1_cycles(raw, inputs=x[:1])
    assert [r["macs"] for r in one] == [r["macs"] for r in cycles.stage1_cycles(raw, inputs=x)]


def test_space_to_depth_first_conv_takes_signed_lanes():
    """A one-channel input taken to space to depth gives the first conv 4 channels: on a signed input
    it takes the signed lanes (two MACs a multiply), the convs after it the lanes."""
    import numpy as np
    import torch
    from ugate import export
    from ugate.model import Net, NetConfig
    torch.manual_seed(0)
    net = Net(NetConfig(in_shape=(1, 16, 16), n_classes=2, channels=[8, 8, 8], pools=[False, True, True], s2d=True),
              gated=True).eval()
    x = np.random.default_rng(0).uniform(-1, 1, (16, 1, 16, 16)).astype(np.float32)
    rows = cycles.stage1_cycles(export.build(net, export.calibrate(net, x), 0.0))
    assert [r["op"] for r in rows][0] == "s2d"
    assert [r["path"] for r in rows if r["op"] == "conv"] == ["signed lanes", "lane", "lane"]
