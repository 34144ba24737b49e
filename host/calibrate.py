"""The gate threshold and the recall it can honestly promise.

A threshold is a low order statistic of calibration positives' gate scores: keeping all but k of n
positives above it promises recall >= target with probability `confidence` when k is at most
`misses_allowed(n, target, confidence)` (a one-sided binomial test, i.e. the Clopper-Pearson bound).
Zero misses need n >= log(1 - confidence) / log(target) positives (99% at 95%: 299); with fewer,
the best promise is the bound at zero misses, (1 - confidence) ** (1 / n), and the user is told.

Small sets have few validation positives, so `train` cross-fits (docs/design.md, "Small data"):
k models, each blind to one fold of train+val, give every positive exactly one out-of-fold score.
Different models' logits are not on one scale, so each score is read as the share of that model's
out-of-fold negatives scoring as high (`negatives_passed`); the threshold in that shared scale maps
back to the deployed model through its own held-out negatives."""
import math

import numpy as np

from ugate import UgateError

CONFIDENCE = 0.9         # bundled (large) sets: validation positives, as before this module
SMALL_CONFIDENCE = 0.95  # cross-fitted small sets: the bound rests on pooled fold models, so ask more


def misses_allowed(n, target_recall, confidence=CONFIDENCE):
    """How many of n calibration positives may fall below the threshold: the largest k with
    P(Binomial(n, 1 - target) <= k) <= 1 - confidence, i.e. seeing only k misses rejects "recall
    below target" at that confidence. Unlike a fixed margin it scales with n: a few hundred
    positives allow almost no misses, many thousands allow nearly n * (1 - target)."""
    from scipy.stats import binom
    k = int(binom.ppf(1 - confidence, n, 1 - target_recall))
    while k >= 0 and binom.cdf(k, n, 1 - target_recall) > 1 - confidence:
        k -= 1
    return max(k, 0)   # too few positives for the bound: keep every one of them open


def positives_needed(target_recall, confidence):
    """The fewest calibration positives that can support `target_recall` at `confidence` (zero misses)."""
    return 1 if target_recall <= 1 - confidence else math.ceil(math.log(1 - confidence) / math.log(target_recall))


def recall_bound(n, misses, confidence):
    """One-sided Clopper-Pearson lower bound on recall after `misses` of n positives were missed."""
    from scipy.stats import beta
    return float(beta.ppf(1 - confidence, n - misses, misses + 1)) if misses < n else 0.0


def recall_upper(n, misses, confidence):
    """One-sided Clopper-Pearson upper bound on recall after `misses` of n positives were missed."""
    from scipy.stats import beta
    return float(beta.ppf(confidence, n - misses + 1, misses)) if misses > 0 else 1.0


def promise(n, target_recall, confidence):
    """(misses allowed, promised recall, warning or None) for n calibration positives."""
    if n >= positives_needed(target_recall, confidence):
        return misses_allowed(n, target_recall, confidence), target_recall, None
    best = recall_bound(n, 0, confidence)
    return 0, best, (f"{n} calibration positives cannot support {100 * target_recall:g}% gate recall at "
                     f"{100 * confidence:g}% confidence (that needs {positives_needed(target_recall, confidence)}); "
                     f"the best recall these data can promise is {100 * best:.2f}%: add positives or lower --target-recall")


def calibrate_threshold(gate_logit_of_positives, target_recall, confidence=CONFIDENCE):
    """The highest threshold (gate open when logit >= threshold) that leaves at most
    misses_allowed(n, target_recall, confidence) of these n positives below it."""
    s = np.sort(np.asarray(gate_logit_of_positives, dtype=np.float64))
    if not len(s):
        raise UgateError("no positive samples to calibrate the gate threshold on; check --positive")
    return float(s[misses_allowed(len(s), target_recall, confidence)])


def negatives_passed(scores, negatives):
    """Each score as the share of `negatives` scoring at least as high: a scale shared by models
    whose logits differ in offset and spread (0: above every negative)."""
    neg = np.sort(np.asarray(negatives, np.float64))
    return (len(neg) - np.searchsorted(neg, np.asarray(scores, np.float64), side="left")) / max(len(neg), 1)


def cross_fit_threshold(folds, deployed_negatives, target_recall, confidence=SMALL_CONFIDENCE):
    """Threshold for the deployed model from out-of-fold scores. `folds`: one (positive scores,
    negative scores) pair per fold model, both out of fold; `deployed_negatives`: the deployed model's
    scores on negatives it never trained on. Returns (threshold, dict of the promise)."""
    u = np.concatenate([negatives_passed(p, n) for p, n in folds])
    if not len(u):
        raise UgateError("no positive samples to calibrate the gate threshold on; check --positive")
    k, promised, warning = promise(len(u), target_recall, confidence)
    u_star = np.sort(u)[::-1][k]               # the (k+1)-th most negative-like positive stays open
    # open exactly where the deployed model passes at most that share of its negatives: above the
    # (m+1)-th highest negative score, m = floor(u* N); all open if u* passes every negative
    neg = np.sort(np.asarray(deployed_negatives, np.float64))[::-1]
    m = math.floor(u_star * len(neg) + 1e-9)
    threshold = float(np.nextafter(neg[m], np.inf)) if m < len(neg) else float(neg[-1] - abs(neg[-1]) - 1)
    return threshold, {"promised_recall": promised, "confidence": confidence, "calibration_positives": len(u),
                       "misses_allowed": k, "warning": warning}
