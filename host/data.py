"""Datasets as gate tasks: label 0 = negative, 1..K = the positive classes the user names.

`load(name_or_path, positive=...)` gives a `Dataset` with deterministic, stratified train/val/test
splits, x float32 (N, C, H, W): images scaled to [0, 1], speech as the integer front end's int8
log-mel features (shared/frontend.py) times its SCALE, so the board computes the very same input; their
int8 mapping (gain, offset) standardizes the train split's log mel power. Built in: fashion-mnist, lfw-faces, digits, keywords; or a
user's folder (one subfolder per class, images or WAV files) or .npz (x, y, optional class_names).
Everything is read from local files: nothing is downloaded."""
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ugate import UgateError

DATASETS = ("fashion-mnist", "lfw-faces", "digits", "keywords")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
IMAGES, WAVS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".gif", ".tif", ".tiff"), (".wav",)
MAX_SIDE = 64     # user images larger than this are shrunk: stage 1 runs on a microcontroller


@dataclass
class Dataset:
    name: str
    class_names: list          # class_names[0] == "negative"
    x_train: np.ndarray        # float32 (N, C, H, W)
    y_train: np.ndarray        # int64 (N,)
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    audio: bool = False        # log-mel features (time along the last axis), not pixels: for augmentation
    frontend: dict = None      # audio: the front end the features come from (the blob carries it)
    sources: tuple = None      # users' data: each split's sample names ("class/file.wav", "x[12]")


def describe(ds):
    n = [len(ds.y_train), len(ds.y_val), len(ds.y_test)]
    pos = sum(int((y > 0).sum()) for y in (ds.y_train, ds.y_val, ds.y_test)) / sum(n)
    return (f"{ds.name}: x {tuple(ds.x_train.shape[1:])}, train/val/test {n[0]}/{n[1]}/{n[2]}, "
            f"classes {', '.join(ds.class_names)}, positive {100 * pos:.1f}%")


# each source loader returns (x, source labels, source class names, official test (x, c) or None, audio)

def _idx(path):
    """An IDX file (the MNIST format): big-endian dims after a 4-byte magic whose last byte is ndim."""
    with gzip.open(path) as f: b = f.read()
    dims = np.frombuffer(b, ">u4", b[3], 4)
    return np.frombuffer(b, np.uint8, offset=4 + 4 * b[3]).reshape(dims)


def _fashion():
    files = [FASHION_DIR / f"{s}-{k}-idx{d}-ubyte.gz" for s in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))]
    if not all(f.exists() for f in files):
        raise UgateError(f"fashion-mnist is not in {FASHION_DIR}: sudo apt-get install dataset-fashion-mnist")
    xtr, ctr, xte, cte = (_idx(f) for f in files)
    img = lambda x: (x[:, None] / np.float32(255)).astype(np.float32)
    return img(xtr), ctr.astype(np.int64), list(FASHION), (img(xte), cte.astype(np.int64)), False


def _lfw():
    from skimage.data import lfw_subset
    x = lfw_subset().astype(np.float32)[:, None]      # 100 faces, then 100 background crops
    return x, np.repeat([1, 0], 100).astype(np.int64), ["background", "face"], None, False


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images / 16).astype(np.float32)[:, None], d.target.astype(np.int64), [str(i) for i in range(10)], None, False


def _keywords(positive, cache_dir):
    from ugate import keywords
    x, c, names = keywords.load(tuple(_match(positive, keywords.WORDS)), cache_dir)
    return x, c, names, None, True


LOADERS = {"fashion-mnist": _fashion, "lfw-faces": _lfw, "digits": _digits}
DEFAULT_POSITIVE = {"fashion-mnist": "bag", "lfw-faces": "face", "digits": "0", "keywords": "marvin"}


def _folder(path):
    """One subfolder per class, of images (-> grayscale, one common size) or of WAV files (-> log-mel).
    Also each sample's name, "class/file", so a user can find the ones the gate threshold rests on."""
    classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise UgateError(f"{path} needs one subfolder per class, at least two; found {len(classes)}")
    files = [(f, i) for i, d in enumerate(classes) for f in sorted(d.iterdir())
             if f.suffix.lower() in IMAGES + WAVS and not f.name.startswith(".")]
    empty = sorted(set(range(len(classes))) - {i for _, i in files})
    if empty: raise UgateError(f"{classes[empty[0]]} has no image ({', '.join(IMAGES)}) or WAV files")
    kinds = {f.suffix.lower() in WAVS for f, _ in files}
    if len(kinds) > 1: raise UgateError(f"{path} mixes images and WAV files; use one kind")
    c = np.array([i for _, i in files], np.int64)
    names = [d.name for d in classes]
    src = np.array([f"{f.parent.name}/{f.name}" for f, _ in files])
    if kinds == {True}:
        from ugate import keywords
        audio = np.stack([keywords.fit(_read(keywords.read_wav, f)) for f, _ in files])
        return keywords.logs(audio)[:, None], c, names, None, True, src
    from PIL import Image
    imgs = [_read(lambda f: Image.open(f).convert("L"), f) for f, _ in files]
    sizes, counts = np.unique([im.size for im in imgs], axis=0, return_counts=True)
    w, h = sizes[counts.argmax()]                  # the most common size, shrunk to fit MAX_SIDE
    s = min(1.0, MAX_SIDE / max(w, h))
    w, h = max(1, round(w * s)), max(1, round(h * s))
    x = np.stack([np.asarray(im if im.size == (w, h) else im.resize((w, h), Image.BILINEAR)) for im in imgs])
    return (x / np.float32(255)).astype(np.float32)[:, None], c, names, None, False, src


def _read(reader, f):
    try:
        return reader(f)
    except Exception as e:     # any decoder's complaint about the file is the user's to fix
        raise UgateError(f"cannot read {f}: {e}") from None


def _npz(path):
    """x, y (and class_names) of an .npz; each sample's name is "x[i]"."""
    import zipfile
    if not zipfile.is_zipfile(path):   # numpy would try it as a pickle and say so
        raise UgateError(f"{path} is not an .npz file (numpy's zip of arrays, from np.savez): corrupt or another format")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise UgateError(f"{path} needs arrays 'x' and 'y' (found {', '.join(z.files) or 'none'})")
            x, y = z["x"], z["y"]
            names = [str(s) for s in z["class_names"]] if "class_names" in z else None
    except (OSError, ValueError) as e:
        raise UgateError(f"cannot read {path} as .npz: {e}") from None
    if len(x) != len(y): raise UgateError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    if x.ndim == 3: x = x[:, None]
    if x.ndim != 4 or x.dtype.kind not in "biuf":
        raise UgateError(f"{path}: x must be numbers (N, H, W) or (N, C, H, W), not {x.dtype} {x.shape}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise UgateError(f"{path}: y must be integer labels (N,), not {y.dtype} {y.shape}")
    bad = ~np.isfinite(x).reshape(len(x), -1).all(1) if x.dtype.kind == "f" else np.zeros(len(x), bool)
    if bad.any():   # NaN would poison every weight it touches; a sensor glitch is worth a word, not a stop
        import warnings
        warnings.warn(f"{path}: {int(bad.sum())} of {len(x)} samples have NaN or infinite values (first: sample "
                      f"{int(np.flatnonzero(bad)[0])}); they are set to 0", stacklevel=3)
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if names is None:                  # label values name the classes
        values, c = np.unique(y, return_inverse=True)
        names = [str(v) for v in values]
    elif y.min() < 0 or y.max() >= len(names):
        raise UgateError(f"{path}: labels must index class_names (0..{len(names) - 1})")
    else:
        c = y
    x = x / np.float32(255) if x.dtype == np.uint8 else x
    return x.astype(np.float32), c.astype(np.int64), names, None, False, np.array([f"x[{i}]" for i in range(len(x))])


def _norm(s): return str(s).strip().lower().replace("_", "-").replace(" ", "-")


def _match(positive, names):
    """Positive class names (a list, or one string, comma-separated; case- and -/_/space-insensitive)
    -> the canonical names."""
    positive = str(positive).split(",") if isinstance(positive, (str, int)) else list(positive)
    by = {_norm(n): n for n in names}
    bad = [p for p in positive if _norm(p) not in by]
    if bad: raise UgateError(f"unknown positive class {str(bad[0])!r}; valid: {', '.join(map(str, names))}")
    if not positive: raise UgateError("name at least one positive class")
    out = list(dict.fromkeys(by[_norm(p)] for p in positive))
    if len(out) == len(names): raise UgateError("every class is positive: leave at least one negative")
    return out


def _split(c, frac, rng):
    """Stratified split of indices by source label: (rest, part) with about `frac` of each class in part,
    at least one of each class with two or more samples on each side."""
    rest, part = [], []
    for k in np.unique(c):
        i = rng.permutation(np.flatnonzero(c == k))
        n = min(max(round(len(i) * frac), 1), len(i) - 1) if len(i) > 1 else 0
        part.append(i[:n]); rest.append(i[n:])
    return rng.permutation(np.concatenate(rest)), rng.permutation(np.concatenate(part))


def _limit(y, n, rng):
    """Indices of a stratified subsample of about n, every class present."""
    if len(y) <= n: return np.arange(len(y))
    keep = [rng.choice(np.flatnonzero(y == k), min(max(round(n * (y == k).mean()), 1), int((y == k).sum())), replace=False)
            for k in np.unique(y)]
    return np.sort(np.concatenate(keep))


def load(name_or_path, positive=None, seed=0, limit=None, cache_dir=None):
    """A Dataset for the gate task "is it one of `positive`?". name_or_path is one of DATASETS, a folder
    or an .npz. Splits are stratified and depend only on the data and `seed`; `limit` caps each split
    at about that many samples (stratified, positives kept); `cache_dir` holds generated sets (keywords)."""
    name, path, src = str(name_or_path), Path(name_or_path).expanduser(), None
    if name in DATASETS:
        positive = positive or DEFAULT_POSITIVE[name]
        x, c, names, test, audio = _keywords(positive, cache_dir) if name == "keywords" else LOADERS[name]()
    elif path.is_dir() or (path.is_file() and path.suffix == ".npz"):
        x, c, names, test, audio, src = _folder(path) if path.is_dir() else _npz(path)
        name = path.stem
        if not positive: raise UgateError(f"name the positive class(es) of {path}; classes: {', '.join(names)}")
    else:
        raise UgateError(f"unknown dataset {name!r}: one of {', '.join(DATASETS)}, "
                         "a folder of class subfolders or an .npz file")
    pos = _match(positive, names)
    lut = np.zeros(len(names), np.int64)
    lut[[names.index(p) for p in pos]] = np.arange(1, len(pos) + 1)
    rng = np.random.default_rng(seed)
    ids = np.arange(len(c))                            # each sample's place in the source, through the splits
    if test is None:                                   # carve a test split: 60/20/20
        rest, te = _split(c, 0.2, rng)
        test, x, c, ids, vfrac = (x[te], c[te], ids[te]), x[rest], c[rest], ids[rest], 0.25
    else:   # official test split: val is 20% of train, since the gate threshold is calibrated on its positives
        test, vfrac = (*test, np.arange(len(test[1]))), 0.2
    tr, va = _split(c, vfrac, rng)
    splits = [(x[tr], lut[c[tr]], ids[tr]), (x[va], lut[c[va]], ids[va]), (test[0], lut[test[1]], test[2])]
    if limit:
        splits = [(x[i], y[i], s[i]) for x, y, s in splits for i in [_limit(y, limit, rng)]]
    fe = None
    if audio:               # the front end's log stage -> int8 by a mapping fitted on the train split (in the blob)
        from ugate import frontend, keywords
        fe = frontend.fit(splits[0][0], keywords.fe())
        splits = [(frontend.to_int8(x, fe).astype(np.float32) * np.float32(frontend.F.SCALE), y, s) for x, y, s in splits]
    return Dataset(name, ["negative"] + pos, *(a for x, y, _ in splits for a in (x, y)), audio=bool(audio), frontend=fe,
                   sources=None if src is None else tuple(src[s] for _, _, s in splits))
