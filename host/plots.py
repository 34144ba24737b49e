"""Plots of the gate: score histograms and the stop/recall trade-off as the threshold moves.
matplotlib with the Agg backend: files only, no display needed."""
import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def stop_recall_curve(pos, neg):
    """(thresholds, recall on positives, fraction of negatives stopped), gate open when logit >= t,
    for t at every distinct score."""
    pos, neg = np.sort(np.asarray(pos, np.float64)), np.sort(np.asarray(neg, np.float64))
    t = np.unique(np.concatenate([pos, neg]))
    recall = 1 - np.searchsorted(pos, t, side="left") / max(len(pos), 1)
    stopped = np.searchsorted(neg, t, side="left") / max(len(neg), 1)
    return t, recall, stopped


def gate_hist(pos, neg, threshold, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(min(np.min(pos), np.min(neg)), max(np.max(pos), np.max(neg)), 60)
    ax.hist(neg, bins, alpha=0.6, label=f"negatives ({len(neg)})", color="tab:blue")
    ax.hist(pos, bins, alpha=0.6, label=f"positives ({len(pos)})", color="tab:orange")
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.2f}")
    ax.set(xlabel="gate logit", ylabel="samples (log)", yscale="log", title="Gate scores on the test set")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def stop_vs_recall(pos, neg, threshold, path):
    plt = _plt()
    _, recall, stopped = stop_recall_curve(pos, neg)
    r0, s0 = np.mean(np.asarray(pos) >= threshold), np.mean(np.asarray(neg) < threshold)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(100 * recall, 100 * stopped)
    ax.plot(100 * r0, 100 * s0, "ro", label=f"operating point: recall {100 * r0:.1f} %, stopped {100 * s0:.1f} %")
    ax.set(xlabel="gate recall on positives (%)", ylabel="negatives stopped (%)", xlim=(90, 100.5),
           title="Negatives stopped vs recall (test set)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def recall_vs_threshold(cal_pos, test_pos, threshold, promised, confidence, path):
    """Gate recall as the threshold moves: on the calibration positives with its Clopper-Pearson band
    at `confidence` (how firm the promise is), and on the test split."""
    from scipy.stats import beta
    plt = _plt()
    cal, test = np.sort(np.asarray(cal_pos, np.float64)), np.sort(np.asarray(test_pos, np.float64))
    t = np.linspace(min(cal[0], test[0]) - 0.5, max(np.quantile(cal, 0.5), threshold) + 0.5, 400)
    n, hit = len(cal), len(cal) - np.searchsorted(cal, t, side="left")
    a = 1 - confidence
    lo = np.where(hit > 0, beta.ppf(a, np.maximum(hit, 1), n - hit + 1), 0.0)   # one-sided, as promised
    hi = np.where(hit < n, beta.ppf(1 - a, hit + 1, np.maximum(n - hit, 1)), 1.0)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.fill_between(t, 100 * lo, 100 * hi, alpha=0.25, color="tab:orange", label=f"{100 * confidence:g}% band ({n} calibration positives)")
    ax.plot(t, 100 * hit / n, color="tab:orange", label="calibration (out-of-fold) recall")
    ax.plot(t, 100 * (1 - np.searchsorted(test, t, side="left") / len(test)), color="tab:green", label=f"test recall ({len(test)} positives)")
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.2f}")
    ax.axhline(100 * promised, color="r", ls=":", label=f"promised {100 * promised:.1f}%")
    ax.set(xlabel="gate threshold (logit)", ylabel="gate recall on positives (%)", ylim=(max(0, 100 * promised - 15), 100.5),
           title="Recall vs threshold, with the promise's confidence band")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
