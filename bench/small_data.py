"""The gate on user-style small folders (issue 11): make them, then `ugate train` each across seeds.

    .venv/bin/python bench/small_data.py [--seeds 0 1 2] [--folders images wavs] [--images N] [--wavs N] [--cache DIR] [--epochs N] [--init images]

Folders are generated once under --cache (default ~/.cache/ugate/small-data), never in git:
- images: 3,000 (--images) Fashion-MNIST *test-split* images as PNG in two class folders, "sneaker"
  (12%, the positive; the bundled runs use "bag") and "other". Fashion-MNIST is the only image set installed
  offline here (Debian has no other image dataset; scikit-learn's digits are 1,797 8x8 images).
  The test split, so that a model trained on the bundled set (its train split) never saw them.
- wavs: 1,200 (--wavs; the mix scaled) one-second 16 kHz WAV clips, "computer" (20%, the positive)
  and "other" (12 other words, some close to it, Asterisk speech crops, noise), synthesized unlike the bundled keywords
  set: espeak-ng voices of other languages reading English (German, French, Spanish, ...), other
  voice variants (klatt, whisper, croak, ...), slower/faster speech, and real speech or hum as the
  background instead of coloured noise.
A folder of another size than the default is cached beside it, named with its size ("wavs-3000").

--init FOLDER...: every model of these folders starts from the bundled model of the same modality (`ugate train
--init`): fashion-mnist ("bag") for images, keywords ("marvin") for WAVs, trained once (seed 0,
default settings) under --out. The measured runs use it for images only (for WAVs the keywords
model made things worse: docs/design.md, "Small data").

Targets per seed: test gate recall >= the promised recall (or the warning printed), gated accuracy
within 0.005 of the baseline, negatives stopped >= 0.96, zeros on positives >= 0.97. Under each run's
row: the calibration positives its threshold rests on (a lone odd one sets how many negatives pass)."""
import argparse
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ugate import data, keywords
from ugate.train import resting_on, train

IMAGE_POSITIVE, IMAGE_POS_FRAC = "sneaker", 0.12
KEYWORD = "computer"
OTHER_WORDS = ("commuter", "compute", "camera", "cucumber", "hello", "weather", "music", "lights", "timer",
               "cancel", "tomorrow", "pepper")
VOICES = ("de", "fr", "es", "it", "nl", "pl", "sv", "pt", "cs", "hu")
VARIANTS = ("", "+klatt", "+klatt2", "+klatt3", "+whisper", "+croak", "+f5", "+m8", "+Andy", "+iven", "+grandma", "+john")
CLIPS = {"keyword": 240, "word": 60, "speech": 150, "noise": 90}    # 240 + 12 * 60 + 150 + 90 = 1,200
SIZES = {"images": 3000, "wavs": 1200}    # the default folders' sizes; other sizes scale CLIPS
SR = keywords.SR


def make_images(folder, n, seed=0):
    from PIL import Image
    _, _, names, (x, c), _ = data._fashion()
    rng = np.random.default_rng(seed)
    pos = names.index(IMAGE_POSITIVE)
    n_pos = round(n * IMAGE_POS_FRAC)
    pick = np.concatenate([rng.choice(np.flatnonzero(c == pos), n_pos, replace=False),
                           rng.choice(np.flatnonzero(c != pos), n - n_pos, replace=False)])
    for i in tqdm(pick, desc="images", unit="img"):
        d = folder / (IMAGE_POSITIVE if c[i] == pos else "other")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[i, 0] * 255).round().astype(np.uint8)).save(d / f"{i:05d}.png")


def _speak(word, rng):
    voice = rng.choice(VOICES) + rng.choice(VARIANTS)
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rng.integers(90, 260)), "-p", str(rng.integers(0, 99)),
                          "--stdout", word], capture_output=True, check=True).stdout
    sox = ["sox", "-R", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(SR), "-"]
    a = np.frombuffer(subprocess.run(sox, input=wav, capture_output=True, check=True).stdout, np.float32)
    loud = np.flatnonzero(np.abs(a) > 0.02 * np.abs(a).max())
    return a[loud[0]:loud[-1] + 1][:SR]


def _speech_crop(rng):
    a = keywords.read_wav(keywords.speech_files()[rng.integers(len(keywords.speech_files()))])
    return keywords.fit(a[rng.integers(max(1, len(a) - SR + 1)):])


def _background(rng):
    """Real speech (babble) or mains hum with a little hiss, unit RMS."""
    if rng.random() < 0.6:
        b = _speech_crop(rng)
    else:
        t = np.arange(SR) / SR
        f = rng.choice([50.0, 60.0])
        b = sum(np.sin(2 * np.pi * f * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3)) + 0.1 * rng.standard_normal(SR)
    return b / (np.sqrt(np.mean(b ** 2)) + 1e-9)


def _clip(job):
    kind, word, i = job
    rng = np.random.default_rng([7, i])
    if kind == "noise":
        x = _background(rng) * rng.uniform(0.003, 0.2)
    else:
        a = _speech_crop(rng) if kind == "speech" else _speak(word, rng)
        x = np.zeros(SR)
        at = rng.integers(SR - len(a) + 1)
        x[at:at + len(a)] = a * rng.uniform(0.1, 0.9) / (np.abs(a).max() + 1e-9)
        rms = np.sqrt(np.mean(x[at:at + len(a)] ** 2)) + 1e-9
        x += _background(rng) * rms * 10 ** (-rng.uniform(0, 20) / 20)       # SNR 0..20 dB
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def make_wavs(folder, n):
    from scipy.io import wavfile
    clips = {k: round(c * n / SIZES["wavs"]) for k, c in CLIPS.items()}
    jobs = ([("keyword", KEYWORD, i) for i in range(clips["keyword"])]
            + [("word", w, 0) for w in OTHER_WORDS for _ in range(clips["word"])]
            + [("speech", "", 0)] * clips["speech"] + [("noise", "", 0)] * clips["noise"])
    jobs = [(k, w, i) for i, (k, w, _) in enumerate(jobs)]
    with multiprocessing.Pool(min(2, os.cpu_count() or 1)) as pool:
        for (kind, _, i), clip in zip(jobs, tqdm(pool.imap(_clip, jobs, chunksize=8), total=len(jobs), desc="wavs", unit="clip")):
            d = folder / (KEYWORD if kind == "keyword" else "other")
            d.mkdir(parents=True, exist_ok=True)
            wavfile.write(d / f"{i:05d}.wav", SR, clip)


# name: (maker, positive, cache folder, the bundled set of the same modality)
FOLDERS = {"images": (make_images, IMAGE_POSITIVE, "images-test", "fashion-mnist"),
           "wavs": (make_wavs, KEYWORD, "wavs", "keywords")}


def folder(name, cache, n):
    path = Path(cache) / (FOLDERS[name][2] + ("" if n == SIZES[name] else f"-{n}"))
    if not (path / ".complete").exists():
        FOLDERS[name][0](path, n)
        (path / ".complete").touch()
    return path


def targets(m):
    promise = m["promise_held"] or bool(m.get("warning"))
    acc = m["gated_accuracy"] >= m["baseline_accuracy"] - 0.005
    return {"promise": promise, "accuracy": acc, "stopped": m["negatives_stopped"] >= 0.96, "zeros": m["positive_zeros"] >= 0.97}


def bias(runs):
    """Per run, the median share of negatives scoring above a held-out positive (each model against its
    own held-out negatives): the deployed model on val, each fold model on its fold, the deployed model on
    test. Test positives harder than the out-of-fold ones would make the promise optimistic."""
    for r in runs:
        d = np.load(Path(r) / "out_of_fold.npz")
        med = [np.median(d["share"][d["fold"] == j]) for j in range(d["fold"].max() + 1)]
        yield f"{Path(r).name}: deployed on val {med[0]:.4f} | fold models " + " ".join(f"{m:.4f}" for m in med[1:]) + f" | deployed on test {np.median(d['test']):.4f}"


def positions(path, positive, seed):
    """One pair trained on train without fold 1 scores three held-out sets, fold 1, val and test, each
    against its own negatives (median share): a set unlike the others is the data, not the models."""
    import torch
    from ugate import augment, calibrate, train as T
    from ugate.model import NetConfig
    torch.manual_seed(seed)
    ds = data.load(path, positive=positive, seed=seed)
    cfg = NetConfig(tuple(ds.x_train.shape[1:]), len(ds.class_names))
    part = T._folds(ds.y_train, 3, np.random.default_rng([seed, 11]))[0]
    keep = np.setdiff1d(np.arange(len(ds.y_train)), part)
    _, net = T._fit_pair(cfg, torch.as_tensor(ds.x_train[keep]), torch.as_tensor(ds.y_train[keep]),
                         T.default_epochs(len(ds.y_train), True, ds.audio), seed, True, dict(T.SMALL), augment.for_data(ds.audio))
    for name, x, y in (("fold 1", ds.x_train[part], ds.y_train[part]), ("val", ds.x_val, ds.y_val), ("test", ds.x_test, ds.y_test)):
        g = T.predict(net, x)[1].numpy()
        yield f"seed {seed}, {name}: median share {np.median(calibrate.negatives_passed(g[y > 0], g[y == 0])):.4f}"


def main(argv=None):
    import torch
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folders", nargs="+", default=list(FOLDERS), choices=list(FOLDERS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    for name in FOLDERS:
        p.add_argument(f"--{name}", type=int, default=SIZES[name], help=f"size of the {name} folder (default %(default)s)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "ugate" / "small-data"))
    p.add_argument("--out", default="runs/small-data", help="parent of the run folders")
    p.add_argument("--epochs", type=int, help="epochs per phase (default: the trainer's)")
    p.add_argument("--positions", action="store_true", help="instead: one model's held-out sets compared (positions())")
    p.add_argument("--init", nargs="+", default=[], choices=list(FOLDERS), help="folders whose models start from the bundled model of the same modality")
    args = p.parse_args(argv)
    if not 0 < args.images <= 1000 / IMAGE_POS_FRAC:    # the fashion-mnist test split holds 1,000 sneakers
        p.error(f"--images {args.images}: between 1 and {int(1000 / IMAGE_POS_FRAC)}")
    if args.wavs < 1:
        p.error(f"--wavs {args.wavs}: at least 1")
    torch.set_num_threads(1)    # several runs side by side on a shared machine: 2-thread teams wait on each other
    cols = ("promised_recall", "test_recall", "negatives_stopped", "positive_zeros", "baseline_accuracy", "gated_accuracy")
    if args.positions:
        for name in args.folders:
            for seed in args.seeds:
                for line in positions(folder(name, args.cache, getattr(args, name)), FOLDERS[name][1], seed):
                    print(f"{name}: {line}", flush=True)
        return
    print(f"{'folder':<8}{'seed':>5}{'cal.pos':>8}" + "".join(f"{c[:16]:>18}" for c in cols) + "  warned  targets missed")
    for name in args.folders:
        path, bundled = folder(name, args.cache, getattr(args, name)), FOLDERS[name][3]
        init = Path(args.out) / f"pretrained-{bundled}" if name in args.init else None
        if init and not (init / "model.pt").exists():
            train(bundled, init, quiet=True)
        runs = [f"{args.out}/{name}-{seed}" for seed in args.seeds]
        for seed, run in zip(args.seeds, runs):
            m = train(path, run, epochs=args.epochs, seed=seed, positive=FOLDERS[name][1],
                      quiet=True, init=init)
            missed = [k for k, ok in targets(m).items() if not ok]
            print(f"{name:<8}{seed:>5}{m['calibration_positives']:>8}" + "".join(f"{m[c]:>18.4f}" for c in cols)
                  + f"  {'yes' if m.get('warning') else 'no':>6}  {', '.join(missed) or 'none'}", flush=True)
            print(f"    threshold rests on (share of negatives as high) {resting_on(m)}", flush=True)
        for line in bias(runs):
            print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
