"""`ugate split` bookkeeping on digits: a tiny model per (cut, gate), the table's columns from the
exported blobs, the energy arithmetic and the optimum's rule."""
import json
import shutil

import pytest

from conftest import train_tiny
from ugate import UgateError, cycles, split

pytestmark = pytest.mark.skipif(not shutil.which(cycles.OBJDUMP), reason="apt-get install binutils-xtensa-lx106")


def fake_train(dataset, out, epochs, target_recall, s, seed, positive, limit, quiet, net_opts):
    out.mkdir(parents=True, exist_ok=True)
    train_tiny(out, gate_conv=net_opts["gate_conv"], epochs=2, split=s)
    m = {"split": s, "baseline_accuracy": 0.95}
    (out / "metrics.json").write_text(json.dumps(m))
    return m


def test_split_table_on_digits(tmp_path, monkeypatch):
    monkeypatch.setattr("ugate.train.train", fake_train)
    res = split.split("digits", tmp_path, splits=(1, 2), quiet=True)
    rows = res["rows"]
    assert [(r["split"], r["gate"]) for r in rows] == [(1, "conv"), (1, "noconv"), (2, "conv"), (2, "noconv")]
    for r in rows:
        blob = (tmp_path / f"split{r['split']}-gate{r['gate']}" / "stage1.blob").read_bytes()
        assert r["blob_bytes"] == len(blob)
        assert r["s3_us"] == pytest.approx(r["s3_cycles"] / 240)
        assert r["uj_per_sample"] == pytest.approx(r["s3_us"] * 51.2 * 3.3 / 1000)
        assert r["uj_per_stopped_negative"] == pytest.approx(r["uj_per_sample"] / max(r["negatives_stopped"], 1e-9))
        n_act = 8 * 2 * 2 if r["split"] == 2 else 4 * 4 * 4                          # tiny Net: [4, 8, 8] channels
        assert 0 < r["bytes_per_positive"] <= 5 + n_act or r["gate_recall"] == 0
    assert rows[1]["macs"] < rows[0]["macs"] and rows[3]["macs"] < rows[2]["macs"]   # no gate conv: fewer MACs
    assert rows[1]["macs"] < rows[3]["macs"]                                         # a later cut: more stage-1 MACs
    assert res["accuracy_target"] == pytest.approx(0.94)
    ok = [i for i, r in enumerate(rows) if r["gated_accuracy"] >= 0.94]
    assert res["optimum"] == (min(ok, key=lambda i: rows[i]["uj_per_stopped_negative"]) if ok else None)
    text = (tmp_path / "split.txt").read_text()
    assert len(text.splitlines()) == 2 + 4 + 1 and (res["optimum"] is None or "<- energy optimum" in text)
    assert (tmp_path / "split.png").stat().st_size > 1000
    assert json.loads((tmp_path / "split.json").read_text())["rows"] == json.loads(json.dumps(rows))


def test_split_rejects_bad_choices(tmp_path):
    with pytest.raises(UgateError, match="gate variant 'big'"):
        split.split("digits", tmp_path, gates=("big",))
    with pytest.raises(UgateError, match="--splits 3: a cut goes after block 1 to 2"):
        split.split("digits", tmp_path, splits=(1, 3))
