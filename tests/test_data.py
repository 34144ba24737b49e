"""ugate.data and ugate.keywords: every loader offline, label conventions, deterministic splits, user data, errors."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from ugate import UgateError, data, keywords
from ugate.shared import frontend as F


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every loader must work with the network gone."""
    def no_network(*a, **k): raise OSError("network disabled in tests")
    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)


def check(ds, shape, k=1):
    assert ds.class_names[0] == "negative" and len(ds.class_names) == k + 1
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (len(y),) + shape
        assert set(np.unique(y)) == set(range(k + 1))      # every split has negatives and each positive class
        assert np.isfinite(x).all()


def same(a, b):
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__ if f[:2] in ("x_", "y_"))


def test_digits_splits_deterministic():
    ds = data.load("digits")
    check(ds, (1, 8, 8))
    assert ds.class_names == ["negative", "0"] and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    n = [len(ds.y_train), len(ds.y_val), len(ds.y_test)]
    assert sum(n) == 1797 and n[0] / sum(n) == pytest.approx(0.6, abs=0.02) and n[1] == pytest.approx(n[2], abs=10)
    assert same(ds, data.load("digits")) and not same(ds, data.load("digits", seed=1))
    assert (ds.y_train > 0).mean() == pytest.approx(0.1, abs=0.01)     # stratified


def test_digits_several_positives_and_limit():
    ds = data.load("digits", positive=["3", "7"], limit=50)
    check(ds, (1, 8, 8), k=2)
    assert ds.class_names == ["negative", "3", "7"]
    assert all(len(y) <= 55 for y in (ds.y_train, ds.y_val, ds.y_test))
    full = data.load("digits", positive=["3", "7"])
    assert (full.y_train == 2).sum() == pytest.approx((full.y_train == 1).sum(), abs=5)
    assert same(full, data.load("digits", positive="3, 7"))


def test_lfw_faces():
    ds = data.load("lfw-faces")
    check(ds, (1, 25, 25))
    assert ds.class_names == ["negative", "face"]
    assert [len(ds.y_train), len(ds.y_val), len(ds.y_test)] == [120, 40, 40] and ds.y_test.mean() == 0.5
    rows = [{r.tobytes() for r in x.reshape(len(x), -1)} for x in (ds.x_train, ds.x_val, ds.x_test)]
    assert sum(map(len, rows)) == 200 and len(set.union(*rows)) == 200      # each image in exactly one split


@pytest.mark.skipif(not data.FASHION_DIR.exists(), reason="needs Debian dataset-fashion-mnist")
def test_fashion_mnist():
    ds = data.load("fashion-mnist", limit=400)
    check(ds, (1, 28, 28))
    assert ds.class_names == ["negative", "bag"] and ds.x_train.max() <= 1 and ds.x_train.min() >= 0
    assert (ds.y_train > 0).mean() == pytest.approx(0.1, abs=0.02) and len(ds.y_test) <= 410
    ds = data.load("fashion-mnist", positive=["Sneaker", "ankle boot"], limit=400)
    check(ds, (1, 28, 28), k=2)
    assert ds.class_names == ["negative", "sneaker", "ankle-boot"]


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("cats", 8), ("dogs", 6), ("owls", 5)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            size = (20, 16) if i else (40, 32)       # one odd size: resized to the common one
            Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), "L").save(tmp_path / cls / f"{i}.png")
    Image.new("RGB", (20, 16), (255, 255, 255)).save(tmp_path / "owls" / "white.bmp")
    (tmp_path / "cats" / "README.txt").write_text("ignored")
    ds = data.load(tmp_path, positive="dogs")
    check(ds, (1, 16, 20))
    assert ds.name == tmp_path.name and ds.class_names == ["negative", "dogs"]
    assert sum(len(y) for y in (ds.y_train, ds.y_val, ds.y_test)) == 20
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert x.min() >= 0 and x.max() == 1


def test_wav_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls, f in (("hum", 200), ("whistle", 3000)):
        (tmp_path / cls).mkdir()
        for i in range(6):
            sr = (8000, 16000, 44100)[i % 3]
            t = np.arange(int(sr * (0.5 + 0.2 * i))) / sr
            a = 8000 * np.sin(2 * np.pi * f * t) + 100 * rng.standard_normal(len(t))
            wavfile.write(tmp_path / cls / f"{i}.wav", sr, a.astype(np.int16))
    ds = data.load(tmp_path, positive=["whistle"])
    check(ds, (1, keywords.N_MELS, keywords.SR // keywords.HOP))
    q = ds.x_train / np.float32(F.SCALE)      # the integer front end's int8 features, as the board computes them
    assert np.array_equal(q, np.rint(q)) and ds.frontend is not None
    assert abs(q.mean()) < 4 and ds.frontend["offset"] != F.OFFSET       # the fitted mapping centres the train split
    # the tone's energy sits in a higher mel band for the positives
    band = lambda x, y, k: x[y == k].mean(axis=(0, 1, 3)).argmax()
    assert band(ds.x_train, ds.y_train, 1) > band(ds.x_train, ds.y_train, 0)


def test_npz(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (60, 12, 10), dtype=np.uint8)
    y = np.repeat([4, 7, 9], 20)
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    ds = data.load(tmp_path / "plain.npz", positive="7")
    check(ds, (1, 12, 10))
    assert ds.class_names == ["negative", "7"] and ds.x_train.max() <= 1
    np.savez(tmp_path / "named.npz", x=np.zeros((30, 2, 4, 4), np.float32), y=np.repeat([0, 1, 2], 10),
             class_names=np.array(["a", "b", "c"]))
    ds = data.load(str(tmp_path / "named.npz"), positive=["c", "b"])
    check(ds, (2, 4, 4), k=2)
    assert ds.class_names == ["negative", "c", "b"]
    assert "named: x (2, 4, 4)" in data.describe(ds) and "positive 66.7%" in data.describe(ds)


def test_features():
    t = np.arange(keywords.SR) / keywords.SR
    f = keywords.features(np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 3000 * t)]))
    assert f.shape == (2, keywords.N_MELS, 32)
    lo, hi = f.mean(axis=2).argmax(axis=1)
    assert lo < keywords.N_MELS // 3 < 2 * keywords.N_MELS // 3 < hi


def errors(tmp_path):
    """(arguments, text the one-line error must contain)"""
    (tmp_path / "one" / "only").mkdir(parents=True)
    for d in ("a", "b"): (tmp_path / "empty" / d).mkdir(parents=True)
    for d in ("a", "b"): (tmp_path / "bad" / d).mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_bytes(b"not a png")
    (tmp_path / "bad" / "b" / "y.png").write_bytes(b"not a png")
    np.savez(tmp_path / "noy.npz", x=np.zeros((3, 4, 4)))
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 4, 4)), y=np.zeros(2, np.int64))
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 4, 4)), y=np.arange(3))
    np.savez(tmp_path / "flat.npz", x=np.zeros((3, 16)), y=np.arange(3))
    return [(("no-such-set",), "unknown dataset 'no-such-set'"),
            (("digits", ["ten"]), "unknown positive class 'ten'; valid: 0, 1, 2"),
            (("keywords", ["sheldon"]), "unknown positive class 'sheldon'; valid: marvin, martin"),
            ((tmp_path / "one", ["only"]), "at least two; found 1"),
            ((tmp_path / "empty", ["a"]), "no image"),
            ((tmp_path / "bad", ["a"]), "cannot read"),
            ((tmp_path / "noy.npz", ["0"]), "needs arrays 'x' and 'y'"),
            ((tmp_path / "short.npz", ["0"]), "x has 3 samples but y has 2"),
            ((tmp_path / "ok.npz",), "name the positive class(es) of"),
            ((tmp_path / "flat.npz", ["1"]), "x must be numbers (N, H, W) or (N, C, H, W)"),
            (("digits", [str(i) for i in range(10)]), "leave at least one negative")]


def test_errors(tmp_path):
    for args, text in errors(tmp_path):
        with pytest.raises(UgateError) as e:
            data.load(*args, cache_dir=tmp_path / "cache")
        assert text in str(e.value) and "\n" not in str(e.value), (args, str(e.value))


def test_missing_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_DIR", tmp_path / "nothing")
    with pytest.raises(UgateError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion-mnist")
    monkeypatch.setattr(keywords.shutil, "which", lambda name: None)
    with pytest.raises(UgateError, match="apt-get install espeak-ng sox"):
        data.load("keywords", cache_dir=tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(keywords, "SPEECH_GLOB", str(tmp_path / "none" / "*.wav"))
    keywords.speech_files.cache_clear()
    try:
        if shutil.which("espeak-ng") and shutil.which("sox"):
            with pytest.raises(UgateError, match="apt-get install asterisk-core-sounds-en-wav"):
                data.load("keywords", cache_dir=tmp_path)
    finally:
        keywords.speech_files.cache_clear()
    assert not list(tmp_path.glob("keywords-*"))


needs_tts = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox") and keywords.speech_files()),
                               reason="keywords needs Debian espeak-ng, sox and asterisk-core-sounds-en-wav")


@needs_tts
def test_keywords_small(tmp_path, monkeypatch):
    monkeypatch.setattr(keywords, "CLIPS_PER_WORD", 2)      # 116 clips instead of 14,500
    ds = data.load("keywords", cache_dir=tmp_path / "a")
    check(ds, (1, keywords.N_MELS, keywords.SR // keywords.HOP))
    assert ds.class_names == ["negative", "marvin"]
    n = sum(len(y) for y in (ds.y_train, ds.y_val, ds.y_test))
    assert n == 2 * (len(keywords.WORDS) - 1 + keywords.POSITIVE_X + keywords.SPEECH_X + keywords.NOISE_X)
    q = ds.x_train / np.float32(F.SCALE)                   # the board's int8 features, exactly
    assert np.array_equal(q, np.rint(q)) and q.min() >= -128 and q.max() <= 127 and ds.frontend["n"] == F.N
    # the int8 mapping the blob carries standardizes the train split (the board emits the same bytes)
    assert abs(ds.x_train.mean()) < 0.1 and 0.8 < ds.x_train.std() < 1.25
    folder, = (tmp_path / "a").iterdir()                    # one complete folder, no temporary left
    assert folder.name.startswith("keywords-") and (folder / "params.json").exists()
    stamp = (folder / "features.npz").stat().st_mtime_ns
    assert same(ds, data.load("keywords", cache_dir=tmp_path / "a"))          # read back, not regenerated
    assert (folder / "features.npz").stat().st_mtime_ns == stamp
    x1, c1, _ = keywords.load(("marvin",), tmp_path / "a")
    x2, c2, _ = keywords.load(("marvin",), tmp_path / "b")   # generated again from the seed: same clips
    assert np.array_equal(x1, x2) and np.array_equal(c1, c2)


@needs_tts
def test_keywords_crash_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(keywords, "CLIPS_PER_WORD", 1)
    def crash(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(keywords.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        data.load("keywords", positive="sheila", cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())          # the half-written set was removed, never taken as complete
    monkeypatch.undo()
    monkeypatch.setattr(keywords, "CLIPS_PER_WORD", 1)
    ds = data.load("keywords", positive="sheila", cache_dir=tmp_path)
    assert ds.class_names == ["negative", "sheila"] and (ds.y_train == 1).sum() >= 1


@needs_tts
def test_keywords_same_on_any_cpu(tmp_path):
    """A clip is the same whichever matmul kernel OpenBLAS picks for the CPU: each machine generates its
    own cache, and the same seed must give the same set everywhere."""
    code = ("import sys, numpy as np; from ugate import keywords as k; "
            "np.save(sys.argv[1], np.stack([k._clip((c, 0, i)) for i, c in enumerate((0, 1, 9, 27, 28))]))")
    out = []
    for core in ("Prescott", "Haswell"):
        env = dict(os.environ, OPENBLAS_CORETYPE=core)
        subprocess.run([sys.executable, "-c", code, str(tmp_path / core)], env=env, check=True)
        out.append(np.load(tmp_path / f"{core}.npy"))
    assert np.array_equal(out[0], out[1])
