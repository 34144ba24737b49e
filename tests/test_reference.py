"""The integer reference: each op against an independent computation, its rounding by hand, and
the int32 check firing where a sum would overflow."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ugate import reference as R


def test_conv_matches_torch():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (3, 2, 7, 6))
    w = rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)
    b, n = rng.integers(-5000, 5000, 4).astype(np.int32), np.array([0, 1, 5, 12], np.uint8)
    for stride in (1, 2):
        acc = F.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                       stride=stride, padding=1).numpy().astype(np.int64) + b[:, None, None]
        n4 = n.astype(np.int64)[:, None, None]
        want = np.floor((acc + np.where(n4 > 0, 2.0 ** (n4 - 1), 0)) / 2.0 ** n4)
        assert (R.conv(x, w, b, n, stride, relu=False) == np.clip(want, -128, 127)).all()
        assert (R.conv(x, w, b, n, stride, relu=True) == np.clip(want, 0, 127)).all()


def test_rounding_is_half_up_with_arithmetic_shift():
    # acc + b: 5 -> 3 (2.5 up), -5 -> -2 (-2.5 up), -6 -> -3, 7 >> 0 -> 7; 300 clamps
    x = np.array([[5], [-5], [-6], [7], [300]]).reshape(5, 1, 1, 1)
    n = np.array([1], np.uint8)
    out = [R.dense(v, np.ones((1, 1), np.int8), np.zeros(1, np.int32), n, relu=False).item() for v in x]
    assert out == [3, -2, -3, 4, 127]
    assert R.dense(x[3], np.ones((1, 1), np.int8), np.zeros(1, np.int32), np.zeros(1, np.uint8), False).item() == 7


def test_pools_and_compress():
    x = np.arange(-20, 25).reshape(1, 1, 5, 9)
    assert R.maxpool(x).tolist() == [[[[-10, -8, -6, -4], [8, 10, 12, 14]]]]
    g = R.gpool(x, 1 << 10, 10 + 5)                   # m / 2^k = 1/32: sum 90 * 1/32 = 2.8125 -> 3
    assert g.reshape(-1).tolist() == [24, 3]
    g = R.gpool(x, 1 << 10, 10 + 5, 3)               # 3 fractional bits: max 24 * 8, mean 22.5 -> 23
    assert g.reshape(-1).tolist() == [192, 23]
    assert R.compress(np.array([-3, 0, 4, 127]).reshape(1, 4, 1, 1), np.array([-128, 1, 2, -1], np.int8)) \
        .reshape(-1).tolist() == [125, 0, 2, 127]


def test_int32_check_fires():
    x = np.full((1, 8, 4, 4), -128)
    w = np.full((1, 8, 3, 3), 127, np.int8)
    with pytest.raises(OverflowError, match="conv9"):
        R.conv(x, w, np.array([2 ** 31 - 8 * 9 * 128 * 127], np.int32), np.array([0], np.uint8), what="conv9")
    R.conv(x, w, np.array([2 ** 31 - 1 - 8 * 9 * 128 * 127], np.int32), np.array([0], np.uint8))   # just fits
    with pytest.raises(OverflowError, match="gpool"):
        R.gpool(np.full((1, 1, 40, 40), 127), 2 ** 15 - 1, 15)
    with pytest.raises(OverflowError, match="int16"):
        R.gpool(np.full((1, 1, 2, 2), 127), 1 << 13, 15, 9)
    with pytest.raises(OverflowError, match="logit"):
        R.logit(np.full((1, 200), -128), np.full(200, 127, np.int8), np.array([2 ** 31 - 1000], np.int32))


def test_first_difference_names_layer_and_element():
    ref = {"conv0": np.zeros((2, 2, 2), np.int8), "act": np.ones((2, 2, 2), np.int8)}
    assert R.first_difference(ref, {"conv0": bytes(8), "act": bytes([1] * 8)}) is None
    assert R.first_difference(ref, {"conv0": bytes(8), "act": bytes([1] * 5 + [9, 1, 1])}) == \
        "act[1, 0, 1]: device 9, reference 1"
    assert "missing" in R.first_difference(ref, {"conv0": bytes(8)})
