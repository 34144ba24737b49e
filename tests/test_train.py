"""`ugate train` end to end on the tiny digits set, and its one-line errors."""
import json

import numpy as np
import pytest
import torch

from ugate import cli, data, model
from ugate.train import KEYS, predict, system_metrics

torch.set_num_threads(1)    # tiny models: threads only add overhead, badly so on a shared machine


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = cli.main(["train", "--dataset", "digits", "--out", str(out), "--epochs", "1", "--limit", "300", "--seed", "1"])
    assert rc == 0
    return out


def test_writes_the_run_folder(run, capsys):
    m = json.loads((run / "metrics.json").read_text())
    assert set(KEYS) | {"dataset", "split", "seed", "epochs", "wall_s"} <= set(m)
    assert m["dataset"] == "digits" and m["split"] == 2 and m["seed"] == 1 and m["epochs"] == 1
    assert all(0 <= m[k] <= 1 for k in KEYS if k != "threshold")
    for f in ("gate_hist.png", "stop_vs_recall.png"):
        assert (run / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert model.load(run / "baseline.pt")[0].gc is None


def test_model_reloads_with_its_data_and_metrics(run):
    """model.pt alone (threshold + data arguments) reproduces the test metrics: what export relies on."""
    net, ck = model.load(run / "model.pt")
    assert net.gc is not None and isinstance(ck["threshold"], float)
    ds = data.load(**ck["data"])
    logits, gate, act = predict(net, ds.x_test)
    m = system_metrics(ds.y_test, logits.argmax(1).numpy(), gate.numpy(), ck["threshold"], act.numpy())
    saved = json.loads((run / "metrics.json").read_text())
    assert m == pytest.approx({k: saved[k] for k in m})
    # calibrated on validation positives: the target recall holds there
    _, g_val, _ = predict(net, ds.x_val)
    assert (g_val.numpy()[ds.y_val > 0] >= ck["threshold"]).mean() >= 0.99


@pytest.mark.parametrize("args,words", [
    (["--dataset", "no-such-set"], "unknown dataset"),
    (["--dataset", "digits", "--target-recall", "0"], "--target-recall"),
    (["--dataset", "digits", "--target-recall", "1.5"], "--target-recall"),
    (["--dataset", "digits", "--split", "0"], "--split"),
    (["--dataset", "digits", "--split", "3"], "--split"),
    (["--dataset", "digits", "--epochs", "0"], "--epochs"),
    (["--dataset", "digits", "--positive", "eleven"], "positive"),
])
def test_bad_input_is_one_line(args, words, tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ugate train: error:") and words in err
    assert not (tmp_path / "r" / "model.pt").exists()


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="keywords needs Debian espeak-ng and sox")
def test_audio_trains_augmented(tmp_path, monkeypatch):
    """Audio trains augmented (time shift, gain, a negative mixed under it) on the plain path too: the
    bundled keywords set, calibrated on its validation split, records it."""
    from ugate import keywords, train
    monkeypatch.setattr(keywords, "CLIPS_PER_WORD", 1)       # 58 clips, generated into this test's home
    monkeypatch.setenv("HOME", str(tmp_path))
    m = train.train("keywords", tmp_path / "run", epochs=1, quiet=True)
    assert m["augmentation"] and m["calibration"] == "validation split"


def test_small_sets_train_for_the_full_step_budget():
    from ugate.train import BATCH, MAX_EPOCHS, STEPS, default_epochs
    n = 3600                     # a 6,000-image folder's train split: 29 batches an epoch
    assert default_epochs(n) == MAX_EPOCHS                        # bundled and large sets: capped
    assert default_epochs(n, small=True) == round(STEPS / -(-n // BATCH)) > MAX_EPOCHS
    assert default_epochs(48000, small=True) == default_epochs(48000)   # the cap never bound there
    assert default_epochs(n, small=True, audio=True) == MAX_EPOCHS      # small audio sets keep it
