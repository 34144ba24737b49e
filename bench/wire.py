"""Bytes per positive on the wire (the whole ACTIVATIONS frame: COBS, header, vector seq, sparse
payload, CRC, delimiter) against dense int8 activations and against the empirical entropy bound:
n * H(p) for the zero/nonzero pattern plus nnz * H(values) for the nonzero values, both estimated
over all the samples measured (per sample, in bytes).

    python bench/wire.py                      # synthetic, 784 activations (16x7x7) at 90..99% zeros
    python bench/wire.py --run runs/fm        # also the compressed activations of a model's test positives

Synthetic nonzero values are |N(0, 24)| rounded into 1..127, like post-ReLU int8 activations.
"""
import argparse

import numpy as np

from ugate.shared import sparse, wire


def entropy_bound_bytes(q):
    """Mean bytes per sample for int8 activations q (N, n): n*H(p) + nnz*H(values), pooled over N."""
    nz = q != 0
    p = nz.mean()
    h = 0.0 if p in (0, 1) else -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    _, c = np.unique(q[nz], return_counts=True)
    f = c / max(c.sum(), 1)
    hv = -(f * np.log2(f)).sum()
    return (q.shape[1] * h + nz.sum(1).mean() * hv) / 8


def measure(q):
    """-> dict of mean payload and wire bytes per sample, the bound, and the modes used."""
    n = q.shape[1]
    out = bytearray(sparse.size(n))
    pay = wire_b = 0
    modes = {}
    for a in q:
        a = a.astype(np.int8).tobytes()
        m = sparse.encode(a, n, out)
        assert sparse.decode(out[:m]) == a
        modes[out[0] & 3] = modes.get(out[0] & 3, 0) + 1
        _, L = wire.encode_frame(wire.ACTIVATIONS, 0x1234, wire.wr_activations(0x1234, out[:m]))
        pay, wire_b = pay + m, wire_b + L
    return {"zeros": 1 - (q != 0).mean(), "payload": pay / len(q), "wire": wire_b / len(q),
            "bound": entropy_bound_bytes(q), "n": n, "modes": modes}


def report(name, r):
    names = {sparse.DENSE: "dense", sparse.BITMAP: "bitmap", sparse.DELTA: "delta", sparse.RICE: "rice"}
    modes = " ".join(f"{names[k]}:{v}" for k, v in sorted(r["modes"].items()))
    print(f"{name:<22} {100 * r['zeros']:5.1f}% {r['n']:5d} {r['payload']:8.1f} {r['wire']:7.1f} {r['bound']:7.1f} "
          f"{r['n'] / r['wire']:8.1f}x {r['wire'] / r['bound']:8.2f}x {r['payload'] / r['bound']:8.2f}x  {modes}")


def synthetic(zeros, n=784, count=500, seed=0):
    rng = np.random.default_rng(seed)
    v = np.clip(np.rint(np.abs(rng.normal(0, 24, (count, n)))), 1, 127)
    return np.where(rng.random((count, n)) < zeros, 0, v).astype(np.int8)


def real(run, limit=2000):
    """int8 compressed activations of the test positives whose gate opens, at a stage-1 output
    scale calibrated like ugate.export (99.99th percentile of |a| / 127 on training data)."""
    import torch
    from ugate import data, model
    net, ck = model.load(f"{run}/model.pt")
    ds = data.load(**ck["data"])
    with torch.no_grad():
        a = net.stage1(torch.as_tensor(ds.x_train[:limit])).numpy()
        scale = np.percentile(np.abs(a), 99.99) / 127
        x = torch.as_tensor(ds.x_test[ds.y_test > 0][:limit])
        _, gate, z = net(x)
        z = z[gate >= ck.get("threshold", 0.0)].flatten(1).numpy()
    return np.clip(np.rint(z / scale), -128, 127).astype(np.int8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a run folder with model.pt (ugate train --out DIR)")
    ap.add_argument("--count", type=int, default=500, help="synthetic samples per sparsity")
    args = ap.parse_args()
    print(f"{'activations':<22} {'zeros':>6} {'n':>5} {'payload':>8} {'wire':>7} {'bound':>7} "
          f"{'dense/wire':>9} {'wire/bound':>9} {'pay/bound':>9}  modes")
    for z in (0.90, 0.95, 0.97, 0.99):
        report(f"synthetic {100 * z:.0f}%", measure(synthetic(z, count=args.count)))
    if args.run:
        q = real(args.run)
        report(f"{args.run} positives", measure(q))


if __name__ == "__main__":
    main()
