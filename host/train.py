"""Training, one readable stage: the baseline Net, then the gated Net from the baseline's weights
with the joint loss, then the gate threshold calibrated on validation data, then every metric on
the test set. `ugate train --dataset fashion-mnist --out runs/fm` writes the run folder of
docs/design.md ("Run folder")."""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ugate import UgateError, augment, calibrate
from ugate.calibrate import CONFIDENCE, calibrate_threshold, misses_allowed  # noqa: F401 (callers import them here)
from ugate.model import Net, NetConfig, _out_shape, gated_from_baseline, load_matching, save

# Defaults, tuned on fashion-mnist ("bag" positive): a default run takes ~100 s on 2 cores.
STEPS = 2500        # per phase (the baseline, then the gated model): 6 epochs of fashion-mnist
MAX_EPOCHS = 40     # small sets get more epochs, up to this; users' small image sets are not capped
BATCH = 128
LR = 3e-3           # Adam, one-cycle schedule
ALPHA = 1.0         # gate BCE weight
POS_WEIGHT = 5.0    # positives weigh more in the gate BCE: a missed positive is the costly error
RANK = 1.0          # pairwise loss: every negative below every positive in a batch
BETA = 8.0          # sparsity: L1 on the compressed activations (fashion-mnist zeros: 2 -> 96%, 4 -> 97%, 8 -> 97-98%)
TEMP = 2.0          # distillation temperature
# small sets (docs/design.md, "Small data"): stage 2 distilled from the baseline keeps its accuracy under
# twice the sparsity weight; the compression thresholds learn 10x faster (a few hundred batches
# otherwise leave them short of the zeros a bundled run reaches)
SMALL = {"distil": 1.0, "beta": 16.0, "threshold_lr": 10.0}
AUDIO = {"beta": 12.0}   # audio: keywords zeros 0.968-0.974 at 8 (seeds 0-3), 0.970-0.978 at 12 (seeds 0-2), stopped and accuracy alike
HARDEST = 5         # small sets: the calibration positives most like negatives, named in metrics and summary
MAX_FOLDS = 5       # small sets: cross-fitted models (the deployed one is fold 0), CPU grows with it
KEYS = ("baseline_accuracy", "gated_accuracy", "negatives_stopped", "gate_recall", "positive_zeros", "threshold")


def system_metrics(y, pred, gate_logit, threshold, act):
    """The gated system on labelled samples: closed gate predicts 0, open gate stage 2's argmax
    `pred`. `act` are the compressed activations (N, ...); zeros are counted on positives."""
    y, pred, g = np.asarray(y), np.asarray(pred), np.asarray(gate_logit)
    opened, pos = g >= threshold, y > 0
    return {"gated_accuracy": float((np.where(opened, pred, 0) == y).mean()),
            "negatives_stopped": float(1 - opened[~pos].mean()) if (~pos).any() else float("nan"),
            "gate_recall": float(opened[pos].mean()) if pos.any() else float("nan"),
            "positive_zeros": float((np.asarray(act)[pos] == 0).mean()) if pos.any() else float("nan")}


def _batches(n, batch, gen):
    return torch.randperm(n, generator=gen).split(batch)


def _fit(net, x, y, epochs, loss_fn, desc, seed, lr=LR, batch=BATCH, quiet=False, threshold_lr=1.0):
    gen = torch.Generator().manual_seed(seed)
    fast = [p for k, p in net.named_parameters() if k == "gc.threshold"]
    groups = [{"params": [p for k, p in net.named_parameters() if k != "gc.threshold"], "lr": lr}]
    groups += [{"params": fast, "lr": lr * threshold_lr}] if fast else []
    opt = torch.optim.Adam(groups, lr=lr)
    steps = epochs * -(-len(x) // batch)
    # one cycle needs a warm-up and a decay of a step or more each: a small --limit gives few steps
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, [g["lr"] for g in groups], total_steps=steps, pct_start=max(0.2, 2 / steps))
             if steps >= 4 else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
    net.train()
    with tqdm(total=steps, desc=desc, unit="batch", disable=quiet, leave=False) as bar:
        for _ in range(epochs):
            for idx in _batches(len(x), batch, gen):
                loss, parts = loss_fn(net, x[idx], y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()}, refresh=False)
                bar.update()
    return net.eval()


def task_loss(net, x, y):
    loss = F.cross_entropy(net(x)[0], y)
    return loss, {"task": loss.item()}


def joint_loss(net, x, y, alpha=ALPHA, beta=BETA, pos_weight=POS_WEIGHT, rank=RANK, distil=0.0, teacher=None):
    """task + alpha * (gate BCE + rank * pairwise ranking) + beta * L1(compressed activations);
    with a teacher, task also has distil * KL(teacher || net) at temperature TEMP."""
    logits, gate, z = net(x)
    task = F.cross_entropy(logits, y)
    if distil and teacher is not None:
        # few labels: the baseline's soft decisions hold stage 2 to its accuracy under the sparsity term
        with torch.no_grad():
            soft = F.log_softmax(teacher(x)[0] / TEMP, 1)
        task = task + distil * TEMP ** 2 * F.kl_div(F.log_softmax(logits / TEMP, 1), soft, log_target=True, reduction="batchmean")
    pos = (y > 0).float()
    bce = F.binary_cross_entropy_with_logits(gate, pos, pos_weight=torch.tensor(pos_weight))
    p, n = gate[y > 0], gate[y == 0]
    # softplus(neg - pos) over all pairs: the gate ranks negatives below positives, which is
    # what a high threshold at high recall needs, not just the right side of 0
    pair = F.softplus(n[None, :] - p[:, None]).mean() if len(p) and len(n) else gate.sum() * 0
    # through the backbone too: thresholds alone (backbone detached) reached 88% zeros, this 96%
    sparse = z.abs().mean()
    loss = task + alpha * (bce + rank * pair) + beta * sparse
    return loss, {"task": task.item(), "gate": bce.item(), "zeros": (z == 0).float().mean().item()}


@torch.no_grad()
def predict(net, x, batch=1024):
    """Class logits, gate logits (or None) and compressed activations (or None), batched."""
    net.eval()
    outs = [net(torch.as_tensor(x[i:i + batch])) for i in range(0, len(x), batch)]
    cat = lambda k: torch.cat([o[k] for o in outs]) if outs[0][k] is not None else None
    return cat(0), cat(1), cat(2)


def _augmented(loss_fn, aug, seed):
    if aug is None:
        return loss_fn
    gen = torch.Generator().manual_seed(seed + 1000)
    return lambda net, x, y: loss_fn(net, aug(x, y, gen), y)


def _fit_pair(cfg, x, y, epochs, seed, quiet, loss_opts, aug=None, tag="", init=None):
    """The baseline, then the gated model from its weights (the joint loss, distilled from the
    baseline if loss_opts asks): (baseline, gated). `init`: (baseline, gated) states to start from."""
    loss_opts = dict(loss_opts)
    threshold_lr = loss_opts.pop("threshold_lr", 1.0)
    base = Net(cfg)
    if init:
        load_matching(base, init[0])
    base = _fit(base, x, y, epochs, _augmented(task_loss, aug, seed), f"baseline{tag}", seed, quiet=quiet)
    gated = gated_from_baseline(base)
    if init:       # the gate and compression from the start model; stage 1 and 2 are the baseline's
        load_matching(gated, {k: v for k, v in init[1].items() if k.startswith("gc.")})
    gated = _fit(gated, x, y, epochs, _augmented(lambda n, x, y: joint_loss(n, x, y, teacher=base, **loss_opts), aug, seed + 1),
                 f"gated{tag}", seed + 1, quiet=quiet, threshold_lr=threshold_lr)
    return base, gated


def _folds(y, k, rng):
    """Indices of y in k stratified parts."""
    parts = [[] for _ in range(k)]
    for c in np.unique(y):
        for j, p in enumerate(np.array_split(rng.permutation(np.flatnonzero(y == c)), k)):
            parts[j].append(p)
    return [np.sort(np.concatenate(p)) for p in parts]


def cross_fit(ds, cfg, epochs, seed, quiet, loss_opts, aug, net, init=None):
    """Out-of-fold gate scores [(positives, negatives)] covering every train+val sample once: fold 0
    is val, scored by `net` (trained on train: the deployed model); train is cut into the other folds,
    each scored by a pair trained on train+val without it. Also the positives' names in that order
    (ds.sources), or None."""
    k = min(MAX_FOLDS, max(2, round((len(ds.y_train) + len(ds.y_val)) / len(ds.y_val))))
    x_all, y_all = torch.as_tensor(np.concatenate([ds.x_train, ds.x_val])), torch.as_tensor(np.concatenate([ds.y_train, ds.y_val]))
    scored = [(ds.y_val, predict(net, ds.x_val)[1].numpy(), np.flatnonzero(ds.y_val > 0) + len(ds.y_train))]
    for j, part in enumerate(_folds(ds.y_train, k - 1, np.random.default_rng([seed, 11])), 1):
        keep = np.setdiff1d(np.arange(len(y_all)), part)
        _, g = _fit_pair(cfg, x_all[keep], y_all[keep], epochs, seed + 10 * j, quiet, loss_opts, aug, f" fold {j + 1}/{k}", init)
        scored.append((ds.y_train[part], predict(g, ds.x_train[part])[1].numpy(), part[ds.y_train[part] > 0]))
    names = None if ds.sources is None else np.concatenate(ds.sources[:2])[np.concatenate([i for *_, i in scored])]
    return [(g[y > 0], g[y == 0]) for y, g, _ in scored], names


def start_from(run, cfg):
    """(baseline, gated) weights of the run folder `run` (--init), checked to fit stage 1 of `cfg`."""
    run = Path(run)
    if not ((run / "baseline.pt").exists() and (run / "model.pt").exists()):
        raise UgateError(f"--init {run}: no baseline.pt and model.pt there; give a run folder `ugate train` wrote")
    states = tuple(torch.load(run / f, map_location="cpu", weights_only=False)["state"] for f in ("baseline.pt", "model.pt"))
    fresh = Net(cfg, gated=True).state_dict()
    if any(k not in states[1] or states[1][k].shape != v.shape for k, v in fresh.items() if k.startswith(("stage1.", "gc."))):
        raise UgateError(f"--init {run}: its stage 1 and gate do not fit these inputs ({cfg.in_shape}) and --split; "
                         "start from a model of the same kind of input")
    return states


def default_epochs(n_train, small=False, audio=False):
    """About STEPS batches a phase, at most MAX_EPOCHS unless a users' `small` set of images: those are
    augmented, so more passes keep teaching (6,000 images stopped 0.85-0.94 of negatives capped,
    0.93-0.94 uncapped; docs/design.md, "Small data"). Small audio sets keep the cap: 8x the time
    raised zeros but moved the gate's hardest positive either way."""
    epochs = round(STEPS / -(-n_train // BATCH))
    return max(1, epochs if small and not audio else min(MAX_EPOCHS, epochs))


def train(dataset, out_dir, epochs=None, target_recall=0.99, split=2, seed=0, positive=None, limit=None,
          confidence=CONFIDENCE, quiet=False, net_opts=None, init=None, **loss_opts):
    """Train, calibrate and evaluate on `dataset` (a name or path for ugate.data.load); write the
    run folder `out_dir`; return the metrics dict. `epochs` per phase; None: default_epochs.
    `init`: a run folder whose weights every model here starts from (stage 1 and the gate must fit)."""
    from ugate import data, plots
    if not 0 < target_recall <= 1:
        raise UgateError(f"--target-recall {target_recall} must be in (0, 1]")
    net_opts = net_opts or {}
    n_blocks = len(NetConfig((1, 1, 1), 2, **net_opts).channels)
    if not 1 <= split < n_blocks:
        raise UgateError(f"--split {split} must be from 1 to {n_blocks - 1}: stage 1 is that many of the {n_blocks} conv blocks")
    t0 = time.time()
    torch.manual_seed(seed)
    load_args = {"name_or_path": str(dataset), "positive": positive, "seed": seed, "limit": limit}
    ds = data.load(**load_args)
    c, h, w = ds.x_train.shape[1:]
    # users' small sets (too few validation positives for the target): augmentation and cross-fitted
    # calibration (docs/design.md, "Small data"); large ones and the bundled sets keep the plain path
    small = (ds.name not in data.DATASETS
             and int((ds.y_val > 0).sum()) < calibrate.positives_needed(target_recall, confidence))
    # one channel: space to depth, so the first conv has 4 channels (two MACs a multiply on the chip);
    # its block skips the pool, so every later shape is as without it. Not on small sets, where the gate
    # is short of data and S2D cost it most (1,200 WAVs: stopped 0.43 / 0.48 without, 0.21 / 0.15 with),
    # unless the --init run has it
    s2d = not small
    if init and (Path(init) / "model.pt").exists():     # as the start model, so its weights fit
        s2d = bool(torch.load(Path(init) / "model.pt", weights_only=False)["config"].get("s2d"))
    if "s2d" not in net_opts and s2d and c == 1 and h % 2 == w % 2 == 0 and min(h, w) >= 16:
        net_opts = {**net_opts, "s2d": True, "pools": [False] + NetConfig((1, 1, 1), 2, **net_opts).pools[1:]}
    cfg = NetConfig((c, h, w), len(ds.class_names), split=split, **net_opts)
    if min(_out_shape(cfg, n_blocks)[1:]) < 1:
        raise UgateError(f"inputs of {cfg.in_shape[1]}x{cfg.in_shape[2]} are too small for {n_blocks} pooling blocks")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr = torch.as_tensor(ds.x_train), torch.as_tensor(ds.y_train)
    start = start_from(init, cfg) if init else None
    epochs = epochs or default_epochs(len(xtr), small, ds.audio)

    # audio always: a word shifted in time, louder or softer, over another clip is the same word (keywords:
    # the quietest positives rose from far below the rest; docs/design.md, "Always-on audio")
    aug = augment.for_data(ds.audio) if small or ds.audio else None
    loss_opts = {**(SMALL if small else AUDIO if ds.audio else {}), **loss_opts}
    base, net = _fit_pair(cfg, xtr, ytr, epochs, seed, quiet, loss_opts, aug, init=start)
    save(base, out / "baseline.pt")

    g_val = predict(net, ds.x_val)[1].numpy()
    if small:
        folds, names = cross_fit(ds, cfg, epochs, seed, quiet, loss_opts, aug, net, start)
        neg0 = g_val[ds.y_val == 0]
        threshold, cal = calibrate.cross_fit_threshold(folds, neg0, target_recall)
        # every out-of-fold positive on the deployed model's scale, for the plot only
        shares = [calibrate.negatives_passed(p, n) for p, n in folds]
        u = np.concatenate(shares)
        cal_pos = np.quantile(neg0, np.clip(1 - u, 0, 1))
        cal["calibration"] = f"cross-fit, {len(folds)} folds of train+val"
        if names is not None:   # the threshold rests on these: a mislabeled or odd one costs negatives stopped
            cal["hardest_positives"] = [[str(names[i]), float(u[i])] for i in np.argsort(-u, kind="stable")[:HARDEST]]
    else:
        cal_pos = g_val[ds.y_val > 0]
        threshold = calibrate_threshold(cal_pos, target_recall, confidence)
        k, promised, warning = calibrate.promise(len(cal_pos), target_recall, confidence)
        cal = {"promised_recall": promised, "confidence": confidence, "calibration_positives": len(cal_pos),
               "misses_allowed": k, "warning": warning, "calibration": "validation split"}
    logits, gate, act = predict(net, ds.x_test)
    base_pred = predict(base, ds.x_test)[0].argmax(1).numpy()
    m = {"dataset": ds.name, "split": split, "seed": seed, "epochs": epochs, "init": init and str(init), "target_recall": target_recall,
         "baseline_accuracy": float((base_pred == ds.y_test).mean()),
         **system_metrics(ds.y_test, logits.argmax(1).numpy(), gate.numpy(), threshold, act.numpy()),
         "threshold": threshold, "n_test": len(ds.y_test), "n_test_positives": int((ds.y_test > 0).sum())}
    save(net, out / "model.pt", threshold=threshold, data=load_args, class_names=ds.class_names)
    g, y = gate.numpy(), ds.y_test
    if small:   # what the promise rests on, and the test positives on the same scale (bench/small_data.py)
        np.savez(out / "out_of_fold.npz", share=np.concatenate(shares), fold=np.repeat(np.arange(len(shares)), [len(u) for u in shares]),
                 test=calibrate.negatives_passed(g[y > 0], neg0))
    plots.gate_hist(g[y > 0], g[y == 0], threshold, out / "gate_hist.png")
    plots.stop_vs_recall(g[y > 0], g[y == 0], threshold, out / "stop_vs_recall.png")
    plots.recall_vs_threshold(cal_pos, g[y > 0], threshold, cal["promised_recall"], cal["confidence"], out / "recall_vs_threshold.png")
    m.update(cal, augmentation=aug is not None, test_recall=m["gate_recall"],
             target_met=bool(m["gate_recall"] >= target_recall), promise_held=bool(m["gate_recall"] >= cal["promised_recall"]))
    m["wall_s"] = round(time.time() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(m, indent=1) + "\n")
    return m


def table(m):
    pct = lambda k: f"{100 * m[k]:6.2f} %"
    rows = [("baseline accuracy", pct("baseline_accuracy")), ("gated accuracy", pct("gated_accuracy")),
            ("negatives stopped", pct("negatives_stopped")), ("gate recall", pct("gate_recall")),
            ("zeros on positives", pct("positive_zeros")), ("gate threshold", f"{m['threshold']:8.3f}"),
            ("wall time", f"{m['wall_s']:6.1f} s")]
    return "\n".join(f"  {k:<20}{v}" for k, v in rows)


def summary(m):
    """The promise and the test split's verdict on it, in words."""
    yield (f"  promised gate recall {100 * m['promised_recall']:.2f}% at {100 * m['confidence']:g}% confidence, "
           f"from {m['calibration_positives']} calibration positives ({m['calibration']})")
    if not m["promise_held"]:
        n, hit = m["n_test_positives"], round(m["test_recall"] * m["n_test_positives"])
        upper = calibrate.recall_upper(n, n - hit, m["confidence"])
        yield (f"  MISSED: the test split's gate recall {100 * m['test_recall']:.1f}% ({hit} of {n} positives) is below "
               f"the promised {100 * m['promised_recall']:.2f}%; " + (
                   f"so few test positives leave it {100 * upper:.1f}% at most ({100 * m['confidence']:g}% confidence), "
                   "so this alone does not break the promise" if upper >= m["promised_recall"] else
                   f"even its {100 * m['confidence']:g}% upper bound, {100 * upper:.1f}%, is: the promise failed on these data"))
    elif not m["target_met"]:
        yield (f"  the test split's gate recall {100 * m['test_recall']:.1f}% is below the requested "
               f"{100 * m['target_recall']:.1f}%, as the promise warned")
    else:
        yield f"  the test split's gate recall {100 * m['test_recall']:.1f}% meets the target"
    if m.get("hardest_positives"):
        yield ("  the threshold rests on the positives most like negatives (check their labels; the share of negatives "
               "scoring as high): " + resting_on(m))


def resting_on(m):
    """The calibration positives a small set's threshold rests on (the misses allowed, the one at the
    threshold and the next), with the share of negatives scoring as high."""
    return ", ".join(f"{name} {100 * share:.1f}%" for name, share in m["hardest_positives"][:m["misses_allowed"] + 2])


def add_arguments(p):
    p.add_argument("--dataset", required=True, help="fashion-mnist, lfw-faces, digits, keywords, a folder or an .npz")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--epochs", type=int, help=f"epochs per phase (default: about {STEPS} batches, at most {MAX_EPOCHS} epochs "
                   "but for users' small image sets)")
    p.add_argument("--target-recall", type=float, default=0.99, help="gate recall on positives to keep (default 0.99)")
    p.add_argument("--split", type=int, default=2, help="GC layer after this many conv blocks (default 2)")
    p.add_argument("--positive", nargs="+", help="positive class name(s); the rest are negative")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="cap each split at about N samples (quick runs)")
    p.add_argument("--init", metavar="RUN", help="start every model from this run folder's weights (a model trained on "
                   "inputs of the same kind, e.g. a fashion-mnist run for a folder of photos; docs/design.md, Small data)")


def main(args):
    if args.epochs is not None and args.epochs < 1:
        raise UgateError(f"--epochs {args.epochs} must be at least 1")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    m = train(args.dataset, args.out, args.epochs, args.target_recall, args.split, args.seed, args.positive, args.limit,
              init=args.init)
    print(f"{m['dataset']}: GC layer after block {m['split']}, {m['n_test']} test samples "
          f"({m['n_test_positives']} positive) -> {args.out}")
    print(table(m))
    for line in summary(m):
        print(line)
    if m.get("warning"):
        print(f"ugate train: warning: {m['warning']}", file=sys.stderr)
