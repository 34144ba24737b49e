"""int8 export on a tiny gated model trained on sklearn digits in a few seconds (conftest's
`train_tiny`, `tiny_model`)."""
import json

import numpy as np
import pytest

from conftest import train_tiny
from ugate import UgateError, export, reference
from ugate.model import Net, NetConfig, save
from ugate.shared import blob as B


def test_export_writes_run_files(tmp_path):
    ds = train_tiny(tmp_path, gate_conv=5, epochs=6)
    m = export.export(tmp_path, dataset=ds, quiet=True)
    assert {p.name for p in tmp_path.iterdir()} >= {"model.pt", "stage1.blob", "stage2.npz", "export.json"}
    assert json.loads((tmp_path / "export.json").read_text()) == json.loads(json.dumps(m))
    for k in ("gated_accuracy", "negatives_stopped", "gate_recall", "positive_zeros"):
        assert 0 <= m["int8"][k] <= 1 and 0 <= m["float"][k] <= 1
    assert m["int8"]["gated_accuracy"] >= m["float"]["gated_accuracy"] - 0.02
    assert m["gate_disagreement"] <= 0.02
    raw, model = reference.load(tmp_path / "stage1.blob")
    assert [op[0] for op in model["ops"]] == [B.CONV, B.MAXPOOL, B.CONV, B.MAXPOOL, B.CONV, B.GPOOL, B.DENSE,
                                               B.LOGIT, B.COMPRESS]
    gp = model["ops"][5]
    assert gp[7] == export.MEAN_BITS and model["bufs"][gp[2]][4] == B.I16    # the finer global pool
    z = np.load(tmp_path / "stage2.npz")
    assert z["act_scale"] == pytest.approx(model["act_scale"]) and tuple(z["act_shape"]) == (8, 2, 2)
    assert json.loads(str(z["config"]))["gate_conv"] == 5 and "stage2.0.conv.weight" in z
    assert "gate disagreement" in export.table(m)


def test_int8_close_to_float(tiny_model):
    raw, ds, m = tiny_model
    assert m["int8"]["gated_accuracy"] >= m["float"]["gated_accuracy"] - 0.01
    assert m["gate_disagreement"] <= 0.02   # a seconds-trained model on ~400 samples: 8 flips at most
    r = reference.run(raw, export.quantize_input(ds.x_test, m["in_scale"]))
    assert r["act"].dtype == np.int8 and r["act"].min() >= 0 and 0.05 < r["open"].mean() < 0.95


def test_quantize_layer_rules():
    rng = np.random.default_rng(1)
    w, b = rng.normal(0, 0.3, (6, 2, 3, 3)), rng.normal(0, 0.5, 6)
    s_in, s_out = 0.02, 0.05
    w[5], b[5] = 0, 300 * s_out            # a dead channel with a large bias
    wq, bq, n = export.quantize_layer(w, b, s_in, s_out)
    assert np.abs(wq).max() <= 127 and n.max() <= 24 and n[5] == 22   # the bias bound caps n
    for c in range(5):
        s_w = 2.0 ** -int(n[c]) * s_out / s_in
        assert np.abs(np.rint(w[c] / s_w)).max() <= 127 < np.abs(np.rint(w[c] / (s_w / 2))).max()   # largest n
        assert bq[c] == round(b[c] / (s_in * s_w))
    assert (np.abs(bq.astype(np.int64)) + 128 * 127 * 18 + ((1 << n.astype(np.int64)) >> 1) < 2 ** 31).all()
    wq16, bq16, n16 = export.quantize_layer(w, b, s_in / 128, s_out, 2 ** 15)   # an I16 input at s_in / 2^7
    assert (n16[:5] == n[:5] + 7).all() and (wq16[:5] == wq[:5]).all()   # same weights, 7 more bits of shift
    assert (np.abs(bq16.astype(np.int64)) + 2 ** 15 * 127 * 18 + ((1 << n16.astype(np.int64)) >> 1) < 2 ** 31).all()


def test_mean_multiplier():
    for hw in (1, 4, 49, 196, 784, 1600, 4096):
        m, k = export.mean_multiplier(hw)
        assert m < 2 ** 15 and 128 * hw * m + ((1 << k) >> 1) < 2 ** 31
        assert abs(m / 2 ** k * hw - 1) < 1e-3


def test_quantize_input():
    q = export.quantize_input([[-1.0, 0.0, 0.004, 0.006, 1.0, 5.0]], 0.01)
    assert q.dtype == np.int8 and q.tolist() == [[-100, 0, 0, 1, 100, 127]]


def test_export_errors(tmp_path):
    with pytest.raises(UgateError, match="model.pt not found"):
        export.export(tmp_path)
    save(Net(NetConfig(in_shape=(1, 8, 8), n_classes=2)), tmp_path / "model.pt")
    with pytest.raises(UgateError, match="no GC layer"):
        export.export(tmp_path)
