"""int8 export: fold BatchNorm, calibrate one activation scale a tensor on training data, quantize
stage 1 and the GC layer by the fixed-point rules of ugate.shared.blob, and measure what int8
costs against float with the integer reference (stage 1 + gate) and torch (stage 2).

`ugate export DIR` reads DIR/model.pt and writes DIR/stage1.blob, DIR/stage2.npz, DIR/export.json."""
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ugate import UgateError
from ugate.shared import blob as B

PERCENTILE = 99.999    # activation scale = this percentile of |a| / 127 (of 99.9..100, best gate agreement)
CALIB = 5000            # training samples to calibrate on
MAX_SHIFT = 24
MEAN_BITS = 7           # fractional bits the gate's global pool keeps beyond its input's scale (blob GPOOL j)


def quantize_input(x, scale):
    """float inputs -> int8, q = clamp(round(x / scale)) (round half to even)."""
    return np.clip(np.rint(np.asarray(x, np.float64) / scale), -128, 127).astype(np.int8)


def fold(block):
    """ConvBlock -> (weight (O, C, 3, 3), bias (O,)) float64 with its eval-mode BatchNorm folded in."""
    bn, conv = block.bn, block.conv
    g = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).double()
    w = conv.weight.double() * g[:, None, None, None]
    b = (conv.bias.double() - bn.running_mean.double()) * g + bn.bias.double()
    return w.detach().numpy(), b.detach().numpy()


def quantize_layer(w, b, s_in, s_out, xmax=128):
    """Per output channel: the largest shift n (0..24) with |w_q| <= 127 and no int32 overflow
    possible for inputs |x| <= xmax; w (O, ...) float. Returns (w_q int8, b_q int32, n uint8)."""
    w2 = w.reshape(len(w), -1)
    K = w2.shape[1]
    wq, bq, ns = np.zeros(w2.shape, np.int8), np.zeros(len(w), np.int32), np.zeros(len(w), np.uint8)
    for c in range(len(w)):
        for n in range(MAX_SHIFT, -1, -1):
            s_w = 2.0 ** -n * s_out / s_in                # weight scale: the fraction of s_out/s_in folded in
            q, qb = np.rint(w2[c] / s_w), round(b[c] / (s_in * s_w))
            if n == 0 or (np.abs(q).max() <= 127 and abs(qb) + xmax * 127 * K + ((1 << n) >> 1) < 2 ** 31):
                break
        if abs(qb) + xmax * 127 * K >= 2 ** 31:
            raise UgateError(f"a bias of {b[c]:.3g} cannot be represented in int32 at scale {s_out:.3g}; retrain")
        wq[c], bq[c], ns[c] = np.clip(q, -127, 127), qb, n
    return wq.reshape(w.shape), bq, ns


def mean_multiplier(hw):
    """(m, k): m / 2^k ~ 1 / hw with m < 2^15 and 128 * hw * m + r < 2^31, k as large as allowed."""
    for k in range(30, -1, -1):
        m = round(2 ** k / hw)
        if m < 2 ** 15 and 128 * hw * m + ((1 << k) >> 1) < 2 ** 31:
            return m, k


def _scale(a):
    return max(float(np.percentile(np.abs(a), PERCENTILE)), 1e-8) / 127


@torch.no_grad()
def calibrate(net, x):
    """Activation scales: input, every stage-1 block, the gate conv, the gate's hidden layer."""
    x = torch.as_tensor(x)
    s = {"input": _scale(x.numpy())}
    a = F.pixel_unshuffle(x, 2) if net.cfg.s2d else x
    for i, blk in enumerate(net.stage1):
        a = F.relu(blk.bn(blk.conv(a)))
        s[f"conv{i}"] = _scale(a.numpy())
        a = F.max_pool2d(a, 2) if blk.pool else a
    gc = net.gc
    if gc.gate_conv is not None:
        a = gc.gate_conv(a)
        s["gconv"] = _scale(a.numpy())
    s["gfc1"] = _scale(F.relu(gc.gate_fc1(torch.cat([a.amax((2, 3)), a.mean((2, 3))], 1))).numpy())
    return s


def build(net, scales, threshold, fe=None):
    """The blob (bytes) of stage 1 + the GC layer at these activation scales; fe: the audio front end
    the input comes from (ugate.frontend.params()), carried in the blob."""
    gc = net.gc
    bufs, ops = [("input", *net.cfg.in_shape, B.I8)], []

    def add(op, src, name, shape, phase, relu=0, stride=1, k=0, j=0, m=0, w=b"", b=b"", n=b"", kind=B.I8):
        bufs.append((name, *shape, kind))
        ops.append((op, src, len(bufs) - 1, phase, relu, stride, k, j, m, w, b, n))
        return len(bufs) - 1

    def q(wf, bf, s_in, s_out, xmax=128):
        wq, bq, n = quantize_layer(wf, bf, s_in, s_out, xmax)
        return dict(w=wq.tobytes(), b=bq.astype("<i4").tobytes(), n=n.tobytes())

    def block(src, name, blk, s_in, phase):
        _, _, h, w, _ = bufs[src]
        st = blk.conv.stride[0]
        dst = add(B.CONV, src, name, (blk.conv.out_channels, -(-h // st), -(-w // st)), phase, 1, st,
                  **q(*fold(blk), s_in, scales[name]))
        if blk.pool:
            _, c, h, w, _ = bufs[dst]
            dst = add(B.MAXPOOL, dst, name.replace("conv", "pool"), (c, h // 2, w // 2), phase)
        return dst, scales[name]

    src, s = 0, scales["input"]
    if net.cfg.s2d:
        c, h, w = net.cfg.in_shape
        src = add(B.S2D, src, "s2d", (4 * c, h // 2, w // 2), B.STAGE1)
    for i, blk in enumerate(net.stage1):
        src, s = block(src, f"conv{i}", blk, s, B.STAGE1)
    s1, s_act = src, s
    if gc.gate_conv is not None:
        src, s = block(src, "gconv", gc.gate_conv, s, B.GATE)
    _, c, h, w, _ = bufs[src]
    m, k = mean_multiplier(h * w)
    j = min(MEAN_BITS, k)
    src = add(B.GPOOL, src, "gpool", (2 * c, 1, 1), B.GATE, k=k, j=j, m=m, kind=B.I16)
    lin = lambda l: (l.weight.detach().double().numpy(), l.bias.detach().double().numpy())
    src = add(B.DENSE, src, "gfc1", (gc.gate_fc1.out_features, 1, 1), B.GATE, 1,
              **q(*lin(gc.gate_fc1), s / 2 ** j, scales["gfc1"], 2 ** 15))
    w2, b2 = lin(gc.gate_fc2)
    s_w = max(np.abs(w2).max(), 1e-12) / 127        # one output, no shift: a per-tensor weight scale
    s_logit = scales["gfc1"] * s_w
    add(B.LOGIT, src, "logit", (1, 1, 1), B.GATE, w=np.rint(w2 / s_w).astype(np.int8).tobytes(),
        b=np.array([round(b2[0] / s_logit)], "<i4").tobytes(), kind=B.I32)
    t = np.clip(np.rint(np.maximum(gc.threshold.detach().double().numpy(), 0) / s_act), 0, 127).astype(np.int8)
    add(B.COMPRESS, s1, "act", bufs[s1][1:4], B.PH_COMPRESS, w=t.tobytes())
    thr = min(max(math.ceil(threshold / s_logit), -2 ** 31), 2 ** 31 - 1)
    return B.pack(bufs, ops, scales["input"], s_act, s_logit, thr, fe)


@torch.no_grad()
def evaluate(net, raw, ds, threshold, quiet=True):
    """Float vs int8 on the test set: the metrics of ugate.train.system_metrics for each, and the
    fraction of samples whose gate decision differs."""
    from ugate import reference
    from ugate.train import predict, system_metrics
    model = B.parse(raw)
    logits, gate, z = predict(net, ds.x_test)
    fl = system_metrics(ds.y_test, logits.argmax(1).numpy(), gate.numpy(), threshold, z.numpy())
    r = reference.run(raw, quantize_input(ds.x_test, model["in_scale"]), progress=not quiet)
    act = torch.as_tensor(r["act"].astype(np.float32) * model["act_scale"])
    pred = torch.cat([net.stage2(act[i:i + 1024]).argmax(1) for i in range(0, len(act), 1024)]).numpy()
    q = system_metrics(ds.y_test, pred, r["logit"], model["thr"], r["act"])
    return {"float": fl, "int8": q, "gate_disagreement": float(((gate.numpy() >= threshold) != r["open"]).mean())}


def export(run_dir, dataset=None, quiet=False):
    """Quantize DIR/model.pt; write stage1.blob, stage2.npz, export.json; return export.json's dict.
    `dataset`: a ugate.data.Dataset to use instead of reloading the checkpoint's."""
    run = Path(run_dir)
    if not (run / "model.pt").is_file():
        raise UgateError(f"{run / 'model.pt'} not found: train first (ugate train --out {run})")
    from ugate.model import load
    net, ck = load(run / "model.pt")
    if net.gc is None or "threshold" not in ck:
        raise UgateError(f"{run / 'model.pt'} has no GC layer or no gate threshold: export needs the gated model")
    if dataset is None:
        from ugate import data
        dataset = data.load(**ck["data"])
    threshold = float(ck["threshold"])
    x = dataset.x_train[np.linspace(0, len(dataset.x_train) - 1, min(CALIB, len(dataset.x_train))).astype(int)]
    scales = calibrate(net, x)
    fe = getattr(dataset, "frontend", None)   # audio: the input is the front end's int8 output, its scale fixed
    if fe:
        from ugate.shared import frontend
        scales["input"] = frontend.SCALE
    raw = build(net, scales, threshold, fe)
    (run / "stage1.blob").write_bytes(raw)
    model = B.parse(raw)
    from ugate import npu, reference
    npu.save_stage2(net, model["act_scale"], run / "stage2.npz", blob_hash=model["hash"].hex(),
                    model_sha256=_sha256(run / "model.pt"))
    m = {**evaluate(net, raw, dataset, threshold, quiet), "threshold": threshold, "thr_q": model["thr"],
         "in_scale": model["in_scale"], "act_scale": model["act_scale"], "logit_scale": model["logit_scale"],
         "scales": scales, "blob_bytes": len(raw), "blob_hash": model["hash"].hex(),
         "stage1_macs": reference.macs(raw), "n_test": len(dataset.y_test)}
    (run / "export.json").write_text(json.dumps(m, indent=1) + "\n")
    return m


def _sha256(path):
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_run_folder(run_dir):
    """A run folder's parts belong together: model.pt is the checkpoint stage2.npz was exported from,
    stage1.blob is the blob exported with it (header model hash), and the blob's content still matches
    that hash. Returns the blob's parsed header; otherwise one line naming the stale file."""
    from ugate import reference
    run = Path(run_dir)
    redo = f"re-run `ugate export {run}`"
    raw, meta = reference.load(run / "stage1.blob")
    if model_hash(raw) != meta["hash"]:
        raise UgateError(f"{run / 'stage1.blob'} was changed after export (its content does not match its model hash "
                         f"{meta['hash'].hex()}): {redo}")
    try:
        with np.load(run / "stage2.npz", allow_pickle=False) as z:
            bound = {k: str(z[k]) for k in ("blob_hash", "model_sha256") if k in z.files}
    except FileNotFoundError:
        raise UgateError(f"no {run / 'stage2.npz'}: {redo}") from None
    except Exception as e:
        raise UgateError(f"{run / 'stage2.npz'}: not a stage-2 file ({type(e).__name__}): {redo}") from None
    if len(bound) < 2:
        raise UgateError(f"{run / 'stage2.npz'} does not name the model it was exported from (an older export): {redo}")
    if (run / "model.pt").is_file() and _sha256(run / "model.pt") != bound["model_sha256"]:
        raise UgateError(f"{run / 'model.pt'} is not the checkpoint stage1.blob and stage2.npz were exported from "
                         f"(retrained or copied since?): they are stale; {redo}")
    if meta["hash"].hex() != bound["blob_hash"]:
        raise UgateError(f"{run / 'stage1.blob'} (model {meta['hash'].hex()}) is not the blob exported with stage2.npz "
                         f"(model {bound['blob_hash']}): a stale or foreign blob; {redo}")
    return meta


def model_hash(raw):
    """The model hash a blob's header should carry (shared/blob.py: sha256 of the blob with that
    field zeroed, trailer excluded, first 8 bytes)."""
    import hashlib
    return hashlib.sha256(raw[:12] + bytes(8) + raw[20:-4]).digest()[:8]


def table(m):
    rows = [f"{'':20} {'float':>9} {'int8':>9}"]
    rows += [f"{k:20} {100 * m['float'][k]:8.2f}% {100 * m['int8'][k]:8.2f}%" for k in m["int8"]]
    rows += [f"{'gate disagreement':20} {'':>9} {100 * m['gate_disagreement']:8.2f}%",
             f"blob {m['blob_bytes']} bytes, hash {m['blob_hash']}, {m['stage1_macs']} MACs a sample"]
    return "\n".join(rows)


def add_arguments(p):
    p.add_argument("dir", help="run folder with model.pt (from ugate train)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    m = export(args.dir, quiet=args.quiet)
    print(table(m))
    print(f"wrote {Path(args.dir) / 'stage1.blob'}, stage2.npz, export.json")
